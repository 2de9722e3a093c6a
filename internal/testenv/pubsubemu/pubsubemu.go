// Package pubsubemu runs the Pub/Sub emulator that ships with the Google Cloud
// CLI as a child process and drives it from Go, so tests can publish a Cloud
// Build message and have it reach a local HTTP function over the real push
// path.
//
// Start runs the emulator's own launcher (the program that `gcloud beta
// emulators pubsub start` executes), not gcloud itself: the launcher execs
// java, so the JVM is the direct child and carries the parent-death signal.
// Under gcloud the JVM is a grandchild and outlives a killed test binary.
package pubsubemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"
)

// DefaultProject is the project ID used when Options.Project is empty.
const DefaultProject = "demo"

// ErrNotInstalled reports that the gcloud CLI or its Pub/Sub emulator
// component cannot be found on this machine.
var ErrNotInstalled = errors.New("pubsub emulator not installed")

const (
	// startTimeout bounds one startup attempt when ctx has no earlier deadline.
	startTimeout = 60 * time.Second
	// startAttempts is how often Start picks a new port after losing a race for one.
	startAttempts = 3
	// pollInterval is how often Start checks whether the emulator answers.
	pollInterval = 50 * time.Millisecond
	// launcherPath is where the emulator's launcher lives below the SDK root.
	launcherPath = "platform/pubsub-emulator/bin/cloud-pubsub-emulator"
	// logTailBytes is how much of the emulator's log an error quotes.
	logTailBytes = 2048
)

// Options configures Start.
type Options struct {
	// Project is the project ID that resource names are built from.
	// It defaults to DefaultProject.
	Project string
	// Log receives progress lines, such as how long startup took.
	// Nil discards them.
	Log io.Writer
}

// Emulator is a running Pub/Sub emulator. Its methods are safe for
// concurrent use.
type Emulator struct {
	// Host is the emulator's host:port on loopback, the value for
	// PUBSUB_EMULATOR_HOST.
	Host string
	// Project is the project ID that topic and subscription names use.
	Project string

	cmd     *exec.Cmd
	dir     string
	logPath string
	exited  chan struct{} // closed once cmd.Wait returns
	admin   *pubsub.Client

	stopOnce sync.Once
	stopErr  error
}

// Start starts the emulator on a free loopback port and returns once it
// serves requests. The emulator runs until Stop is called or the calling
// process dies; ctx bounds startup only. Start wraps ErrNotInstalled when
// gcloud or the emulator component is missing.
func Start(ctx context.Context, opts Options) (*Emulator, error) {
	if opts.Project == "" {
		opts.Project = DefaultProject
	}
	logw := opts.Log
	if logw == nil {
		logw = io.Discard
	}
	launcher, err := findLauncher(ctx)
	if err != nil {
		return nil, err
	}
	begin := time.Now()
	for attempt := 1; ; attempt++ {
		e, err := start(ctx, launcher, opts.Project)
		if errors.Is(err, errPortTaken) && attempt < startAttempts {
			fmt.Fprintf(logw, "pubsubemu: %v; retrying on another port\n", err)
			continue
		}
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(logw, "pubsubemu: emulator for project %q ready at %s in %s (log %s)\n",
			e.Project, e.Host, time.Since(begin).Round(time.Millisecond), e.logPath)
		return e, nil
	}
}

// errPortTaken reports that another process bound the chosen port first.
var errPortTaken = errors.New("emulator port taken")

// start makes one attempt at starting the emulator.
func start(ctx context.Context, launcher, project string) (_ *Emulator, err error) {
	port, err := pickPort()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "pubsubemu-")
	if err != nil {
		return nil, fmt.Errorf("creating emulator temp dir: %w", err)
	}
	logPath := filepath.Join(dir, "emulator.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("creating emulator log: %w", err)
	}
	defer logFile.Close() // the child holds its own descriptor

	host := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	cmd := exec.Command(launcher, "--host=127.0.0.1", "--port="+strconv.Itoa(port))
	cmd.Dir = dir
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	// Its own process group lets Stop kill the launcher and the JVM together;
	// Pdeathsig kills it if this process dies first. Pdeathsig follows the OS
	// thread that forked, which in Go lives as long as the process unless a
	// goroutine exits while locked to it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("starting %s: %w", launcher, err)
	}
	e := &Emulator{
		Host:    host,
		Project: project,
		cmd:     cmd,
		dir:     dir,
		logPath: logPath,
		exited:  make(chan struct{}),
	}
	go func() {
		cmd.Wait()
		close(e.exited)
	}()
	defer func() {
		if err == nil {
			return
		}
		tail := e.logTail()
		e.Stop()
		// A lost race for the port needs no stack trace.
		if !errors.Is(err, errPortTaken) {
			err = fmt.Errorf("%w\nemulator log tail:\n%s", err, tail)
		}
	}()

	if err := e.waitReady(ctx, port); err != nil {
		return nil, err
	}
	// The admin client lives as long as the emulator, not as long as ctx.
	e.admin, err = e.Client(context.WithoutCancel(ctx))
	if err != nil {
		return nil, err
	}
	return e, nil
}

// waitReady polls until the emulator logs that it listens on port and
// answers HTTP there. Both are needed: a JVM that fails to bind keeps
// running, and whatever else holds the port may answer too.
func (e *Emulator) waitReady(ctx context.Context, port int) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	listening := []byte("Server started, listening on " + strconv.Itoa(port))
	httpc := &http.Client{Timeout: time.Second}
	ticker := time.NewTicker(pollInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for emulator at %s: %w", e.Host, ctx.Err())
		case <-e.exited:
			return fmt.Errorf("emulator at %s exited during startup: %v", e.Host, e.cmd.ProcessState)
		case <-ticker.C:
		}
		log, err := os.ReadFile(e.logPath)
		if err != nil {
			return fmt.Errorf("reading emulator log: %w", err)
		}
		if bytes.Contains(log, []byte("BindException")) {
			return fmt.Errorf("%w: %s is bound by another process", errPortTaken, e.Host)
		}
		if !bytes.Contains(log, listening) {
			continue
		}
		if answers(ctx, httpc, "http://"+e.Host+"/") {
			return nil
		}
	}
}

// answers reports whether url returns 200 OK.
func answers(ctx context.Context, c *http.Client, url string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := c.Do(req)
	if err != nil {
		return false
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// findLauncher returns the path of the emulator's launcher. It resolves the
// gcloud on PATH to its SDK root and asks gcloud itself only when the layout
// is not the usual one.
func findLauncher(ctx context.Context) (string, error) {
	gcloud, err := exec.LookPath("gcloud")
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrNotInstalled, err)
	}
	if real, err := filepath.EvalSymlinks(gcloud); err == nil {
		launcher := filepath.Join(filepath.Dir(filepath.Dir(real)), launcherPath)
		if isExecutable(launcher) {
			return launcher, nil
		}
	}
	out, err := exec.CommandContext(ctx, gcloud, "info", "--format=value(installation.sdk_root)").Output()
	if err != nil {
		return "", fmt.Errorf("asking gcloud for its SDK root: %w", err)
	}
	launcher := filepath.Join(strings.TrimSpace(string(out)), launcherPath)
	if !isExecutable(launcher) {
		return "", fmt.Errorf("%w: no %s (install the gcloud component pubsub-emulator)", ErrNotInstalled, launcher)
	}
	return launcher, nil
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// pickPort chooses the emulator's port; tests replace it.
var pickPort = freePort

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// logTail returns the end of the emulator's log.
func (e *Emulator) logTail() string {
	b, err := os.ReadFile(e.logPath)
	if err != nil {
		return fmt.Sprintf("(reading %s: %v)", e.logPath, err)
	}
	if len(b) == 0 {
		return "(empty)"
	}
	if len(b) > logTailBytes {
		b = b[len(b)-logTailBytes:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return string(b)
}

// Stop kills the emulator's process group, waits for it to exit and removes
// its temporary directory. Calling Stop again returns the first result.
func (e *Emulator) Stop() error {
	e.stopOnce.Do(func() {
		var errs []error
		if e.admin != nil {
			// The emulator is about to die; a failing close tells nothing.
			e.admin.Close()
		}
		pgid := e.cmd.Process.Pid
		if err := syscall.Kill(-pgid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("killing emulator process group %d: %w", pgid, err))
		}
		select {
		case <-e.exited:
		case <-time.After(10 * time.Second):
			errs = append(errs, fmt.Errorf("emulator process %d did not exit after SIGKILL", pgid))
		}
		if err := os.RemoveAll(e.dir); err != nil {
			errs = append(errs, fmt.Errorf("removing emulator dir: %w", err))
		}
		e.stopErr = errors.Join(errs...)
	})
	return e.stopErr
}

// Client returns a new client of the emulator. It is configured by explicit
// options, so it does not depend on PUBSUB_EMULATOR_HOST. The caller closes it.
func (e *Emulator) Client(ctx context.Context) (*pubsub.Client, error) {
	c, err := pubsub.NewClient(ctx, e.Project,
		option.WithEndpoint(e.Host),
		option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())),
		option.WithTelemetryDisabled(),
	)
	if err != nil {
		return nil, fmt.Errorf("creating pubsub client for emulator at %s: %w", e.Host, err)
	}
	return c, nil
}

// TopicName returns the full resource name of topicID in the emulator's project.
func (e *Emulator) TopicName(topicID string) string {
	return "projects/" + e.Project + "/topics/" + topicID
}

// SubscriptionName returns the full resource name of subID in the emulator's project.
func (e *Emulator) SubscriptionName(subID string) string {
	return "projects/" + e.Project + "/subscriptions/" + subID
}

// CreateTopic creates the topic topicID.
func (e *Emulator) CreateTopic(ctx context.Context, topicID string) error {
	name := e.TopicName(topicID)
	if _, err := e.admin.TopicAdminClient.CreateTopic(ctx, &pubsubpb.Topic{Name: name}); err != nil {
		return fmt.Errorf("creating topic %s: %w", name, err)
	}
	return nil
}

// PushSubscription describes a push subscription for CreatePushSubscription.
type PushSubscription struct {
	// ID is the subscription ID.
	ID string
	// Topic is the ID of the topic it subscribes to.
	Topic string
	// Endpoint is the URL that messages are POSTed to.
	Endpoint string
	// AckDeadline is how long the emulator waits for an answer to a push;
	// zero means the emulator's default (10 s).
	AckDeadline time.Duration
	// MinBackoff and MaxBackoff set the subscription's retry policy, the
	// delay before a message whose push failed (a non-2xx answer) is sent
	// again. Both zero leave the emulator's default: a redelivery about
	// every second. The emulator honours a policy loosely: the first
	// redelivery still comes after about a second, later ones after
	// MinBackoff to MaxBackoff plus up to about a second.
	MinBackoff, MaxBackoff time.Duration
}

// CreatePushSubscription creates a push subscription that POSTs messages in
// the wrapped format ({"message": ..., "subscription": ...}) to s.Endpoint.
func (e *Emulator) CreatePushSubscription(ctx context.Context, s PushSubscription) error {
	sub := &pubsubpb.Subscription{
		Name:               e.SubscriptionName(s.ID),
		Topic:              e.TopicName(s.Topic),
		PushConfig:         &pubsubpb.PushConfig{PushEndpoint: s.Endpoint},
		AckDeadlineSeconds: int32(s.AckDeadline / time.Second),
	}
	if s.MinBackoff != 0 || s.MaxBackoff != 0 {
		sub.RetryPolicy = &pubsubpb.RetryPolicy{
			MinimumBackoff: durationpb.New(s.MinBackoff),
			MaximumBackoff: durationpb.New(s.MaxBackoff),
		}
	}
	if _, err := e.admin.SubscriptionAdminClient.CreateSubscription(ctx, sub); err != nil {
		return fmt.Errorf("creating push subscription %s: %w", sub.Name, err)
	}
	return nil
}

// Publish publishes one message to topicID and returns the ID the emulator
// gave it.
func (e *Emulator) Publish(ctx context.Context, topicID string, data []byte, attrs map[string]string) (string, error) {
	name := e.TopicName(topicID)
	resp, err := e.admin.TopicAdminClient.Publish(ctx, &pubsubpb.PublishRequest{
		Topic:    name,
		Messages: []*pubsubpb.PubsubMessage{{Data: data, Attributes: attrs}},
	})
	if err != nil {
		return "", fmt.Errorf("publishing to %s: %w", name, err)
	}
	if len(resp.MessageIds) != 1 {
		return "", fmt.Errorf("publishing to %s: got %d message IDs, want 1", name, len(resp.MessageIds))
	}
	return resp.MessageIds[0], nil
}

// CreatePullSubscription creates the pull subscription subID on topicID.
// (The emulator of gcloud 528 ignores a subscription's message filter: it
// delivers every message.)
func (e *Emulator) CreatePullSubscription(ctx context.Context, subID, topicID string) error {
	sub := &pubsubpb.Subscription{Name: e.SubscriptionName(subID), Topic: e.TopicName(topicID)}
	if _, err := e.admin.SubscriptionAdminClient.CreateSubscription(ctx, sub); err != nil {
		return fmt.Errorf("creating pull subscription %s: %w", sub.Name, err)
	}
	return nil
}
