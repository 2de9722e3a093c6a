// Package sandbox assembles a local stand-in for the whole pipeline, on
// loopback: a real Kubernetes control plane with RBAC (localcluster), the
// Container API and Google's token service (gkefake), the Pub/Sub emulator
// with a cloud-builds topic and a push subscription (pubsubemu), and the
// function itself, run as users run it locally (cmd/local, the functions
// framework). The function's production code path runs unchanged: it
// confirms each build with the Cloud Build API stand-in (gkefake), calls
// GetCluster, gets a token through Application Default Credentials, verifies
// the apiserver's TLS, and acts with only the rights k8s/rbac.yaml grants.
//
// cmd/sandbox shows it to people; the end-to-end tests use it to prove the
// function deploys.
package sandbox

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"cloud.google.com/go/cloudbuild/apiv1/v2/cloudbuildpb"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"

	"github.com/onnewimage/onnewimage/internal/buildevent"
	"github.com/onnewimage/onnewimage/internal/rollout"
	"github.com/onnewimage/onnewimage/internal/testenv/faultproxy"
	"github.com/onnewimage/onnewimage/internal/testenv/gkefake"
	"github.com/onnewimage/onnewimage/internal/testenv/localcluster"
	"github.com/onnewimage/onnewimage/internal/testenv/pubsubemu"
)

// The sandbox's fixed names: a GKE cluster, the function's Google service
// account (the user k8s/rbac.yaml binds), the topic, and the sample app.
const (
	Project        = "demo-project"
	Location       = "us-central1"
	ClusterID      = "sandbox"
	ServiceAccount = "onnewimage@demo-project.iam.gserviceaccount.com"
	Topic          = "cloud-builds"
	Subscription   = "onnewimage-push"
	Image          = "us-docker.pkg.dev/demo-project/apps/web"
	Namespace      = "default"
	Deployment     = "web"
)

// DefaultManifests are the files Start applies: the sample app and the
// function's RBAC, as a user would.
var DefaultManifests = []string{"k8s/deployment.yaml", "k8s/service.yaml", "k8s/rbac.yaml"}

// Options configure Start.
type Options struct {
	// Log receives progress lines. Nil discards them.
	Log io.Writer
	// Manifests are applied (server-side apply, as the admin) after the
	// cluster starts, paths relative to the repository root.
	// Nil means DefaultManifests.
	Manifests []string
	// FunctionEnv adds to or overrides the function's environment.
	FunctionEnv map[string]string
	// FaultProxy puts a fault-injecting proxy (Sandbox.Proxy) between the
	// function and the apiserver: the Container API stand-in answers the
	// proxy's address as every endpoint of the cluster.
	FaultProxy bool
	// ResultTopic, when set, is a topic Start creates on the emulator, to
	// which the function publishes its results (RESULT_TOPIC; see
	// Subscribe).
	ResultTopic string
}

// Sandbox is the running stand-in. Stop it when done.
type Sandbox struct {
	// Root is the repository root.
	Root string
	// Cluster is the local control plane.
	Cluster *localcluster.Cluster
	// Admin is a cluster-admin client.
	Admin kubernetes.Interface
	// ContainerAPI and Tokens play GKE's Google-side services.
	ContainerAPI *gkefake.ContainerServer
	Tokens       *gkefake.TokenServer
	// CloudBuild plays the Cloud Build API the function confirms builds
	// with: Publish registers each build with it first.
	CloudBuild *gkefake.CloudBuildServer
	// PubSub is the emulator holding the cloud-builds topic.
	PubSub *pubsubemu.Emulator
	// Function is the running function.
	Function *Function
	// Proxy stands between the function and the apiserver, with
	// Options.FaultProxy; nil without.
	Proxy *faultproxy.Proxy

	log         io.Writer
	token       string
	spareToken  string // the one RevokeToken hands out next
	dir         string
	keyFile     string
	functionBin string
	port        string

	stopOnce sync.Once
	stopErr  error
}

// Start starts everything and returns once a message published to
// cloud-builds would reach the function. On error, what was started is
// stopped again.
func Start(ctx context.Context, opts Options) (_ *Sandbox, err error) {
	s := &Sandbox{log: opts.Log}
	if s.log == nil {
		s.log = io.Discard
	}
	defer func() {
		if err != nil {
			s.Stop()
		}
	}()
	if s.Root, err = repoRoot(); err != nil {
		return nil, err
	}
	if s.dir, err = os.MkdirTemp("", "onnewimage-sandbox-"); err != nil {
		return nil, err
	}
	s.token = "sandbox-" + randomHex(16)
	s.spareToken = "sandbox-" + randomHex(16)
	token, spare := s.token, s.spareToken

	// The control plane and the Pub/Sub emulator start side by side; the
	// function binary builds meanwhile.
	var wg sync.WaitGroup
	var clusterErr, pubsubErr, buildErr error
	wg.Add(3)
	go func() {
		defer wg.Done()
		s.Cluster, clusterErr = localcluster.Start(ctx, localcluster.Options{Log: s.log, Tokens: map[string]string{token: ServiceAccount, spare: ServiceAccount}})
	}()
	go func() {
		defer wg.Done()
		s.PubSub, pubsubErr = pubsubemu.Start(ctx, pubsubemu.Options{Project: Project, Log: s.log})
	}()
	go func() {
		defer wg.Done()
		buildErr = s.buildFunction(ctx)
	}()
	wg.Wait()
	if err := errors.Join(clusterErr, pubsubErr, buildErr); err != nil {
		return nil, err
	}
	if s.Admin, err = kubernetes.NewForConfig(s.Cluster.AdminConfig()); err != nil {
		return nil, err
	}

	begin := time.Now()
	if opts.FaultProxy {
		if err := s.startProxy(); err != nil {
			return nil, err
		}
	}
	if s.ContainerAPI, err = gkefake.StartContainerServer(); err != nil {
		return nil, err
	}
	s.ContainerAPI.SetClusterEndpoints(ClusterName(), s.Endpoints(), s.Cluster.CAData)
	if s.Tokens, err = gkefake.StartTokenServer(); err != nil {
		return nil, err
	}
	if s.CloudBuild, err = gkefake.StartCloudBuildServer(); err != nil {
		return nil, err
	}
	s.keyFile = filepath.Join(s.dir, "function-key.json")
	if err := s.Tokens.WriteServiceAccountKey(s.keyFile, ServiceAccount, token); err != nil {
		return nil, err
	}
	s.logf("sandbox: container api on %s, token service on %s, cloud build api on %s (%s)", s.ContainerAPI.Addr, s.Tokens.URL, s.CloudBuild.Addr, time.Since(begin).Round(time.Millisecond))

	manifests := opts.Manifests
	if manifests == nil {
		manifests = DefaultManifests
	}
	begin = time.Now()
	if err := s.Apply(ctx, manifests...); err != nil {
		return nil, err
	}
	s.logf("sandbox: applied %s (%s)", strings.Join(manifests, ", "), time.Since(begin).Round(time.Millisecond))

	if s.port, err = freePort(); err != nil {
		return nil, err
	}
	if opts.ResultTopic != "" {
		if err := s.PubSub.CreateTopic(ctx, opts.ResultTopic); err != nil {
			return nil, err
		}
		opts.FunctionEnv = resultEnv(opts.FunctionEnv, s.PubSub, opts.ResultTopic)
	}
	if err := s.StartFunction(ctx, opts.FunctionEnv); err != nil {
		return nil, err
	}
	begin = time.Now()
	if err := s.PubSub.CreateTopic(ctx, Topic); err != nil {
		return nil, err
	}
	if err := s.PubSub.CreatePushSubscription(ctx, pubsubemu.PushSubscription{
		ID:    Subscription,
		Topic: Topic,
		// The path names the topic, as Pub/Sub push endpoints of a
		// 1st-gen function do; the framework serves every path.
		Endpoint:    s.Function.URL + "projects/" + Project + "/topics/" + Topic,
		AckDeadline: 10 * time.Minute,
		MinBackoff:  time.Second,
		MaxBackoff:  5 * time.Second,
	}); err != nil {
		return nil, err
	}
	s.logf("sandbox: topic %s pushes to the function (%s)", Topic, time.Since(begin).Round(time.Millisecond))
	return s, nil
}

// FunctionIdentity returns a client configuration that authenticates as the
// function does (its service account's token), to check what it may do.
func (s *Sandbox) FunctionIdentity() *rest.Config { return s.Cluster.TokenConfig(s.token) }

// Endpoints are the local cluster's control-plane endpoints as the Container
// API stand-in answers them: all three reach the one apiserver, the public and
// private ones by IP, the DNS-based one by the name localhost (its serving
// certificate holds both).
func (s *Sandbox) Endpoints() gkefake.Endpoints {
	host := strings.TrimPrefix(s.Cluster.Host, "https://")
	if s.Proxy != nil {
		host = s.Proxy.Addr
	}
	_, port, _ := net.SplitHostPort(host)
	return gkefake.Endpoints{Public: host, Private: host, DNS: net.JoinHostPort("localhost", port)}
}

// ClusterName is the sandbox cluster's Container API name.
func ClusterName() string {
	return "projects/" + Project + "/locations/" + Location + "/clusters/" + ClusterID
}

// FunctionEnv is the environment the function runs with: the configuration
// a user would give it for this cluster, plus the emulator settings and
// cmd/local's loopback address.
func (s *Sandbox) FunctionEnv(extra map[string]string) []string {
	env := map[string]string{
		"PROJECT":                        Project,
		"LOCATION":                       Location,
		"CLUSTER":                        ClusterID,
		"NAMESPACE":                      Namespace,
		"DEPLOYMENT":                     Deployment,
		"CONTAINER":                      "web",
		"IMAGE":                          Image,
		"CONTAINER_EMULATOR_HOST":        s.ContainerAPI.Addr,
		"CLOUDBUILD_EMULATOR_HOST":       s.CloudBuild.Addr,
		"BUILD_PROJECTS":                 Project,
		"GOOGLE_APPLICATION_CREDENTIALS": s.keyFile,
		"PORT":                           s.port,
		"HOST":                           "127.0.0.1", // Whatever HOST or LOCAL_ONLY
		"LOCAL_ONLY":                     "true",      // the caller has exported.
	}
	for k, v := range extra {
		env[k] = v
	}
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if _, ours := env[k]; !ours && !strings.HasPrefix(k, "KUBECONFIG") && k != "PUBSUB_EMULATOR_HOST" {
			out = append(out, kv)
		}
	}
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	return out
}

// StartFunction (re)starts the function with extra configuration, on the
// port the push subscription points at.
func (s *Sandbox) StartFunction(ctx context.Context, extra map[string]string) error {
	if s.Function != nil {
		s.Function.Stop()
	}
	begin := time.Now()
	f, err := startFunction(ctx, s.functionBin, s.FunctionEnv(extra), "127.0.0.1:"+s.port, filepath.Join(s.dir, "function.log"))
	if err != nil {
		return err
	}
	s.Function = f
	s.logf("sandbox: function onNewImage serving on %s (%s)", f.URL, time.Since(begin).Round(time.Millisecond))
	return nil
}

func (s *Sandbox) buildFunction(ctx context.Context) error {
	begin := time.Now()
	bin, fresh, err := program(ctx, s.Root, "local")
	if err != nil {
		return err
	}
	s.functionBin = bin
	if fresh {
		s.logf("sandbox: built the function (cmd/local) in %s", time.Since(begin).Round(time.Millisecond))
	}
	return nil
}

// Run runs the program ./cmd/NAME (built once per process) with the
// function's environment plus extra, as a user runs the project's commands
// against the same configuration, and returns its combined output.
func (s *Sandbox) Run(ctx context.Context, name string, extra map[string]string, args ...string) ([]byte, error) {
	bin, _, err := program(ctx, s.Root, name)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = s.Root
	cmd.Env = s.FunctionEnv(extra)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("./cmd/%s %s: %w\n%s", name, strings.Join(args, " "), err, out)
	}
	return out, nil
}

// programs holds the ./cmd programs built by this process. Every sandbox in
// a process shares them: go build's cache makes a rebuild cheap, but not
// its link step (about ten seconds a program here).
var programs struct {
	mu    sync.Mutex
	dir   string
	built map[string]string
}

// program returns the path of ./cmd/name, built on first use in this
// process; fresh says this call built it.
func program(ctx context.Context, root, name string) (bin string, fresh bool, err error) {
	programs.mu.Lock()
	defer programs.mu.Unlock()
	if bin, ok := programs.built[name]; ok {
		return bin, false, nil
	}
	if programs.dir == "" {
		if programs.dir, err = os.MkdirTemp("", "onnewimage-programs-"); err != nil {
			return "", false, err
		}
		programs.built = map[string]string{}
	}
	bin = filepath.Join(programs.dir, name)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/"+name)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", false, fmt.Errorf("building cmd/%s: %w\n%s", name, err, out)
	}
	programs.built[name] = bin
	return bin, true, nil
}

// RemovePrograms deletes the programs this process built. Call it once no
// sandbox of the process runs any more (from TestMain, or on exit).
func RemovePrograms() {
	programs.mu.Lock()
	defer programs.mu.Unlock()
	if programs.dir != "" {
		os.RemoveAll(programs.dir)
	}
	programs.dir, programs.built = "", nil
}

// Apply applies the manifests at paths (relative to Root) as the cluster
// admin, with server-side apply.
func (s *Sandbox) Apply(ctx context.Context, paths ...string) error {
	cfg := s.Cluster.AdminConfig()
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	disc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return err
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disc))
	for _, p := range paths {
		f, err := os.Open(filepath.Join(s.Root, p))
		if err != nil {
			return err
		}
		dec := utilyaml.NewYAMLOrJSONDecoder(f, 4096)
		for {
			var obj unstructured.Unstructured
			if err := dec.Decode(&obj.Object); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				f.Close()
				return fmt.Errorf("reading %s: %w", p, err)
			}
			if len(obj.Object) == 0 {
				continue
			}
			gvk := obj.GroupVersionKind()
			m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
			if err != nil {
				f.Close()
				return fmt.Errorf("%s: %s: %w", p, gvk, err)
			}
			if _, err := dyn.Resource(m.Resource).Namespace(obj.GetNamespace()).Apply(ctx, obj.GetName(), &obj,
				metav1.ApplyOptions{FieldManager: "sandbox", Force: true}); err != nil {
				f.Close()
				return fmt.Errorf("applying %s %s from %s: %w", gvk.Kind, obj.GetName(), p, err)
			}
		}
		f.Close()
	}
	return nil
}

// WaitFor watches the Deployment name until cond holds, and returns it.
func (s *Sandbox) WaitFor(ctx context.Context, name string, cond func(*appsv1.Deployment) bool) (*appsv1.Deployment, error) {
	return s.WaitForIn(ctx, Namespace, name, cond)
}

// WaitForIn watches the Deployment namespace/name until cond holds, and
// returns it.
func (s *Sandbox) WaitForIn(ctx context.Context, namespace, name string, cond func(*appsv1.Deployment) bool) (*appsv1.Deployment, error) {
	lw := cache.NewListWatchFromClient(s.Admin.AppsV1().RESTClient(), "deployments", namespace, fields.OneTermEqualSelector("metadata.name", name))
	var last *appsv1.Deployment
	_, err := watchtools.UntilWithSync(ctx, lw, &appsv1.Deployment{}, nil,
		func(ev watch.Event) (bool, error) {
			d, ok := ev.Object.(*appsv1.Deployment)
			if !ok {
				return false, nil
			}
			last = d
			return cond(d), nil
		})
	if err != nil {
		return last, fmt.Errorf("waiting for deployment %s: %w", name, err)
	}
	return last, nil
}

// WaitRolledOut watches the Deployment name until rollout.Status says it is
// rolled out and cond (when not nil) holds, and returns it. It fails at once
// when Status does (a progress deadline), and otherwise says, on timeout,
// what Status last said.
func (s *Sandbox) WaitRolledOut(ctx context.Context, name string, cond func(*appsv1.Deployment) bool) (*appsv1.Deployment, error) {
	return s.WaitRolledOutIn(ctx, Namespace, name, cond)
}

// WaitRolledOutIn is WaitRolledOut for the Deployment namespace/name.
func (s *Sandbox) WaitRolledOutIn(ctx context.Context, namespace, name string, cond func(*appsv1.Deployment) bool) (*appsv1.Deployment, error) {
	var status string
	var statusErr error
	d, err := s.WaitForIn(ctx, namespace, name, func(d *appsv1.Deployment) bool {
		var done bool
		status, done, statusErr = rollout.Status(d)
		return statusErr != nil || done && (cond == nil || cond(d))
	})
	switch {
	case statusErr != nil:
		return d, fmt.Errorf("waiting for deployment %s: %w", name, statusErr)
	case err != nil:
		return d, fmt.Errorf("%w (%s)", err, status)
	}
	return d, nil
}

// Publish publishes b to cloud-builds as Cloud Build does: it stores the
// build first (with the Cloud Build API stand-in: a QUEUED or WORKING copy
// never replaces a finished one), then publishes the Build as protobuf JSON,
// with buildId and status attributes.
func (s *Sandbox) Publish(ctx context.Context, b *cloudbuildpb.Build) (string, error) {
	s.CloudBuild.Register(b)
	return Publish(ctx, s.PubSub, b)
}

// PublishForged publishes b as Publish does, but as someone other than
// Cloud Build would: the Cloud Build API stand-in is not told of it, and
// answers for b's ID whatever it already holds, or NotFound.
func (s *Sandbox) PublishForged(ctx context.Context, b *cloudbuildpb.Build) (string, error) {
	return Publish(ctx, s.PubSub, b)
}

// Publish publishes b to the emulator's cloud-builds topic, and to nothing
// else: the Cloud Build API stand-in does not learn of b.
func Publish(ctx context.Context, e *pubsubemu.Emulator, b *cloudbuildpb.Build) (string, error) {
	data, attrs, err := Message(b)
	if err != nil {
		return "", err
	}
	return e.Publish(ctx, Topic, data, attrs)
}

// Message returns b's message on cloud-builds as Cloud Build publishes it:
// the Build as protobuf JSON, with buildId and status attributes.
func Message(b *cloudbuildpb.Build) (data []byte, attrs map[string]string, err error) {
	data, err = protojson.Marshal(b)
	if err != nil {
		return nil, nil, err
	}
	return data, map[string]string{"buildId": b.GetId(), "status": b.GetStatus().String()}, nil
}

// LoadBuild reads a build fixture, relative to the repository root.
func LoadBuild(path string) (*cloudbuildpb.Build, error) {
	root, err := repoRoot()
	if err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(filepath.Join(root, path))
	if err != nil {
		return nil, err
	}
	return buildevent.DecodeBuild(raw)
}

// WithStatus returns a copy of b with another status, as the QUEUED and
// WORKING messages of the same build carry.
func WithStatus(b *cloudbuildpb.Build, status cloudbuildpb.Build_Status) *cloudbuildpb.Build {
	c := protoClone(b)
	c.Status = status
	if status != cloudbuildpb.Build_SUCCESS {
		c.Results = nil
	}
	return c
}

// FreshBuild returns a new SUCCESS build of the sample app, created now,
// with a new ID, commit and digest: what the next push to main produces.
func FreshBuild(template *cloudbuildpb.Build) *cloudbuildpb.Build {
	b := protoClone(template)
	commit := randomHex(20)
	digest := "sha256:" + randomHex(32)
	b.Id = fmt.Sprintf("%s-%s-4%s-8%s-%s", randomHex(4), randomHex(2), randomHex(2)[1:], randomHex(2)[1:], randomHex(6))
	b.CreateTime = timestamppb.Now()
	b.Substitutions["COMMIT_SHA"], b.Substitutions["SHORT_SHA"] = commit, commit[:7]
	if rs := b.GetSourceProvenance().GetResolvedRepoSource(); rs != nil {
		rs.Revision = &cloudbuildpb.RepoSource_CommitSha{CommitSha: commit}
	}
	for _, img := range b.GetResults().GetImages() {
		img.Digest = digest
		if strings.HasSuffix(img.Name, ":latest") {
			continue
		}
		img.Name = Image + ":" + commit[:7]
	}
	return b
}

// FromRef returns a copy of b as Cloud Build publishes it when built from
// branch, or from tag when branch is "": BRANCH_NAME or TAG_NAME in its
// substitutions (the other removed) and in source.repoSource.
func FromRef(b *cloudbuildpb.Build, branch, tag string) *cloudbuildpb.Build {
	c := protoClone(b)
	if c.Substitutions == nil {
		c.Substitutions = map[string]string{}
	}
	delete(c.Substitutions, "BRANCH_NAME")
	delete(c.Substitutions, "TAG_NAME")
	rs := c.GetSource().GetRepoSource()
	if rs != nil {
		rs.Revision = nil
	}
	switch {
	case branch != "":
		c.Substitutions["BRANCH_NAME"] = branch
		if rs != nil {
			rs.Revision = &cloudbuildpb.RepoSource_BranchName{BranchName: branch}
		}
	case tag != "":
		c.Substitutions["TAG_NAME"] = tag
		if rs != nil {
			rs.Revision = &cloudbuildpb.RepoSource_TagName{TagName: tag}
		}
	}
	return c
}

// Stop stops the function, the emulator, the stand-ins and the cluster, and
// removes the sandbox's files. It is idempotent.
func (s *Sandbox) Stop() error {
	s.stopOnce.Do(func() {
		var errs []error
		if s.Function != nil {
			s.Function.Stop()
		}
		if s.PubSub != nil {
			errs = append(errs, s.PubSub.Stop())
		}
		if s.ContainerAPI != nil {
			s.ContainerAPI.Stop()
		}
		if s.Proxy != nil {
			s.Proxy.Stop()
		}
		if s.Tokens != nil {
			s.Tokens.Stop()
		}
		if s.CloudBuild != nil {
			s.CloudBuild.Stop()
		}
		if s.Cluster != nil {
			errs = append(errs, s.Cluster.Stop())
		}
		if s.dir != "" {
			errs = append(errs, os.RemoveAll(s.dir))
		}
		s.stopErr = errors.Join(errs...)
	})
	return s.stopErr
}

func (s *Sandbox) logf(format string, args ...any) { fmt.Fprintf(s.log, format+"\n", args...) }

// Function is the function running as a child process.
type Function struct {
	// URL is where it serves, ending in '/'.
	URL string

	cmd  *exec.Cmd
	done chan struct{}

	mu      sync.Mutex
	lines   []map[string]any
	changed chan struct{} // closed and replaced on every new line
}

func startFunction(ctx context.Context, bin string, env []string, addr, logPath string) (*Function, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin)
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Stderr = logFile
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		logFile.Close()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting the function: %w", err)
	}
	f := &Function{URL: "http://" + addr + "/", cmd: cmd, done: make(chan struct{}), changed: make(chan struct{})}
	go func() {
		defer close(f.done)
		defer logFile.Close()
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			fmt.Fprintln(logFile, sc.Text())
			var line map[string]any
			if json.Unmarshal(sc.Bytes(), &line) != nil {
				continue // The framework's own plain-text lines.
			}
			f.mu.Lock()
			f.lines = append(f.lines, line)
			close(f.changed)
			f.changed = make(chan struct{})
			f.mu.Unlock()
		}
		cmd.Wait()
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return f, nil
		}
		select {
		case <-f.done:
			return nil, fmt.Errorf("the function exited at start; see %s", logPath)
		case <-ctx.Done():
			f.Stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			f.Stop()
			return nil, fmt.Errorf("the function did not listen on %s: %w", addr, err)
		}
	}
}

// Logs returns the structured log lines the function has written so far.
func (f *Function) Logs() []map[string]any {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]map[string]any(nil), f.lines...)
}

// WaitLog waits for a log line, after the first `after` lines, for which
// match holds, and returns it.
func (f *Function) WaitLog(ctx context.Context, after int, match func(map[string]any) bool) (map[string]any, error) {
	for {
		f.mu.Lock()
		lines, changed := f.lines, f.changed
		f.mu.Unlock()
		for _, l := range lines[min(after, len(lines)):] {
			if match(l) {
				return l, nil
			}
		}
		select {
		case <-changed:
		case <-f.done:
			return nil, errors.New("the function exited")
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for a log line: %w (seen: %v)", ctx.Err(), lines)
		}
	}
}

// Stop kills the function and waits for it.
func (f *Function) Stop() {
	if f.cmd.Process != nil {
		syscall.Kill(-f.cmd.Process.Pid, syscall.SIGKILL)
	}
	<-f.done
}

// repoRoot finds the repository root from this source file's location.
func repoRoot() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("cannot locate the sandbox package's source")
	}
	root := filepath.Join(filepath.Dir(file), "..", "..", "..")
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		return "", fmt.Errorf("repository root not found beside %s: %w", file, err)
	}
	return filepath.Clean(root), nil
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	_, port, err := net.SplitHostPort(l.Addr().String())
	return port, err
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func protoClone(b *cloudbuildpb.Build) *cloudbuildpb.Build {
	return proto.Clone(b).(*cloudbuildpb.Build)
}
