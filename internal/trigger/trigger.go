// Package trigger turns one cloud-builds message into a decision: dismiss
// it, or deploy the image the build pushed.
//
// Most messages on the topic are builds still queued or running, or builds of
// other images. Those are dismissed from the message's attributes alone,
// before the Build is decoded and without any network call. Only a SUCCESS
// build that pushed the configured repository with a digest reaches the
// cluster.
package trigger

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"cloud.google.com/go/cloudbuild/apiv1/v2/cloudbuildpb"
	"k8s.io/client-go/kubernetes"

	"github.com/onnewimage/onnewimage/internal/buildevent"
	"github.com/onnewimage/onnewimage/internal/cluster"
	"github.com/onnewimage/onnewimage/internal/config"
	"github.com/onnewimage/onnewimage/internal/image"
	"github.com/onnewimage/onnewimage/internal/rollout"
	"github.com/onnewimage/onnewimage/internal/target"
)

// Connector hands out the target cluster's clientset and is told of errors
// that may mean the connection is broken.
type Connector interface {
	Clientset(ctx context.Context) (kubernetes.Interface, error)
	Forget(err error)
}

// Event is a CloudEvent carrying a Pub/Sub message, as the function receives it.
type Event struct {
	// ID and Time are the CloudEvent's; they stand in for the message ID and
	// publish time when the message lacks them.
	ID   string
	Time time.Time
	// Data is the CloudEvent data: {"message": {...}, "subscription": "..."}.
	Data []byte
}

// Report is what an event led to: one log line's worth.
type Report struct {
	MessageID string
	BuildID   string
	Status    string
	// Image is the image deployed, or that would have been.
	Image string
	// Previous is the image the target ran before, when the outcome is not
	// Failed.
	Previous string
	Target   string
	Outcome  rollout.Outcome
	Reason   string
	DryRun   bool
	// Patch is the patch sent, in a dry run.
	Patch string
}

// ErrUnorderable is wrapped when a build has no createTime: it cannot be
// ordered against the deployed build, so it is never deployed.
var ErrUnorderable = errors.New("build cannot be ordered")

// ErrNoPublishTime is wrapped when an event to deploy carries neither
// message.publishTime nor a CloudEvent time: MAX_EVENT_AGE could not bound
// its redeliveries, so it is never deployed.
var ErrNoPublishTime = errors.New("event has no publish time")

// ErrFutureBuild is wrapped when a build's createTime is more than
// MaxClockSkew after its event was published: no real build is created after
// Cloud Build announces it, and deploying one would make every real build
// after it look stale.
var ErrFutureBuild = errors.New("build created in the future")

// MaxClockSkew is how far a build's createTime may run ahead of its event's
// publish time.
const MaxClockSkew = time.Minute

// Handler decides and applies events for one configured target.
//
// It serves a configuration of exactly one target (the single-target
// variables, or a targets file listing one). Serving several targets is not
// built yet: with another number of targets every event fails, permanently,
// saying so, rather than deploying to some of them.
type Handler struct {
	cfg config.Config
	// t is the one target served; its zero value when cfg has not exactly one.
	t    target.Target
	conn Connector
	now  func() time.Time
	// opts are the options New was given.
	opts Options
}

// Options adjust a Handler.
type Options struct {
	// Connector replaces the connector built from the configuration.
	Connector Connector
	// Cluster adjusts the connector built from the configuration.
	Cluster cluster.Options
	// Now replaces time.Now.
	Now func() time.Time
}

// New returns a Handler for cfg. It connects to nothing: the cluster
// connection is made on the first event that needs it.
func New(cfg config.Config, opts Options) *Handler {
	h := &Handler{cfg: cfg, conn: opts.Connector, now: opts.Now, opts: opts}
	if len(cfg.Targets) == 1 {
		h.t = cfg.Targets[0]
	}
	if h.conn == nil {
		copts := opts.Cluster
		if copts.EmulatorHost == "" {
			copts.EmulatorHost = cfg.ContainerEmulatorHost
		}
		if h.t.Cluster.GKE() {
			h.conn = cluster.NewGKE(h.t.Cluster.ResourceName(), h.t.Cluster.Endpoint, copts)
		} else {
			h.conn = cluster.NewKubeconfig(h.t.Cluster.Kubeconfig, copts)
		}
	}
	if h.now == nil {
		h.now = time.Now
	}
	return h
}

// Handle decides what ev means and acts on it. The error is non-nil only
// for a failed outcome; Retryable tells whether redelivery can help.
func (h *Handler) Handle(ctx context.Context, ev Event) (Report, error) {
	rep := Report{Target: h.target().String(), DryRun: h.cfg.DryRun, MessageID: ev.ID}
	skip := func(format string, args ...any) (Report, error) {
		rep.Outcome, rep.Reason = rollout.Skipped, fmt.Sprintf(format, args...)
		return rep, nil
	}
	fail := func(err error) (Report, error) {
		rep.Outcome, rep.Reason = rollout.Failed, explain(err)
		return rep, err
	}

	if err := h.one(); err != nil {
		return fail(err)
	}
	msg, err := buildevent.DecodeMessage(ev.Data)
	if err != nil {
		return fail(err)
	}
	if msg.ID != "" {
		rep.MessageID = msg.ID
	}
	rep.BuildID, rep.Status = msg.BuildID(), msg.Status()
	if rep.Status != "" && rep.Status != cloudbuildpb.Build_SUCCESS.String() {
		return skip("build status is %s, not SUCCESS", rep.Status)
	}
	published := msg.PublishTime
	if published.IsZero() {
		published = ev.Time
	}
	if age := h.now().Sub(published); !published.IsZero() && age > h.cfg.MaxEventAge {
		return skip("event published %s ago, older than MAX_EVENT_AGE=%s", age.Round(time.Second), h.cfg.MaxEventAge)
	}

	build, err := buildevent.DecodeBuild(msg.Data)
	if err != nil {
		return fail(err)
	}
	if err := msg.Check(build); err != nil {
		// Deployed only when the attribute and the build both say SUCCESS.
		return fail(err)
	}
	rep.BuildID, rep.Status = build.GetId(), build.GetStatus().String()
	if build.GetStatus() != cloudbuildpb.Build_SUCCESS {
		return skip("build status is %s, not SUCCESS", rep.Status)
	}
	ref, err := image.Select(h.t.Image, build.GetResults().GetImages())
	if err != nil {
		return skip("%v (pushed: %s)", err, pushed(build))
	}
	rep.Image = ref.String()
	if ok, why := h.t.When.Match(build); !ok {
		return skip("%s", why)
	}
	if published.IsZero() {
		return fail(fmt.Errorf("%w: neither message.publishTime nor the CloudEvent time is set, so MAX_EVENT_AGE cannot bound its redeliveries", ErrNoPublishTime))
	}
	if build.GetCreateTime() == nil {
		return fail(fmt.Errorf("%w: build %s has no createTime", ErrUnorderable, build.GetId()))
	}
	if created := build.GetCreateTime().AsTime(); created.Sub(published) > MaxClockSkew {
		// Else a build claiming 2099 would make every real build look stale.
		return fail(fmt.Errorf("%w: build %s was created at %s, %s after its event was published (%s); more than %s ahead is refused",
			ErrFutureBuild, build.GetId(), created.Format(time.RFC3339Nano), created.Sub(published), published.Format(time.RFC3339Nano), MaxClockSkew))
	}
	release := rollout.Release{
		BuildID:    build.GetId(),
		CreateTime: build.GetCreateTime().AsTime(),
		Commit:     buildevent.Commit(build),
		Image:      ref,
	}

	// Bound the cluster work, so that a hung connection fails this delivery
	// (and Pub/Sub retries it) instead of holding the instance until the
	// platform's timeout.
	ctx, cancel := context.WithTimeout(ctx, h.t.Budget())
	defer cancel()
	client, err := h.conn.Clientset(ctx)
	if err != nil {
		return fail(err)
	}
	var res rollout.Result
	switch h.t.Strategy {
	case target.BlueGreen:
		res, err = rollout.BlueGreen(ctx, client, h.blueGreenTarget(), release, h.blueGreenOptions())
	default:
		res, err = rollout.Rolling(ctx, client, h.rollingTarget(), release, rollout.Options{DryRun: h.cfg.DryRun})
	}
	h.conn.Forget(err)
	if err != nil {
		return fail(err) // The Result means nothing with an error.
	}
	rep.Outcome, rep.Reason, rep.Previous = res.Outcome, res.Reason, res.Previous
	if h.cfg.DryRun {
		rep.Patch = string(res.Patch)
	}
	return rep, nil
}

// Rollback takes the target named name (with one target, "" names it) back
// to the release before the live one: a blue-green target's router goes back
// to the colour traffic left at the last switch (see rollout.Rollback); a
// rolling target's Deployment goes back to its previous revision, as
// `kubectl rollout undo` does (see rollout.Undo). Either way the build taken
// out is not deployed again by a redelivery. A name that picks no target is
// an error wrapping config.ErrNoTarget, and nothing is done.
func (h *Handler) Rollback(ctx context.Context, name string) (rollout.Result, error) {
	t, err := h.cfg.Target(name)
	if err != nil {
		return rollout.Result{}, err
	}
	if len(h.cfg.Targets) > 1 {
		// A Handler for the one target named, connected to its cluster.
		cfg := h.cfg
		cfg.Targets = []target.Target{t}
		h = New(cfg, h.opts)
	}
	client, err := h.conn.Clientset(ctx)
	if err != nil {
		return rollout.Result{}, err
	}
	var res rollout.Result
	if h.t.Strategy == target.BlueGreen {
		res, err = rollout.Rollback(ctx, client, h.blueGreenTarget(), h.blueGreenOptions())
	} else {
		res, err = rollout.Undo(ctx, client, h.rollingTarget(), rollout.Options{DryRun: h.cfg.DryRun})
	}
	h.conn.Forget(err)
	return res, err
}

// one reports the configuration's number of targets as an error when it is
// not the one target a Handler serves.
func (h *Handler) one() error {
	if n := len(h.cfg.Targets); n != 1 {
		return fmt.Errorf("%w: %s lists %d targets; this version deploys to exactly one (serving several is not built yet)",
			config.ErrInvalid, h.cfg.TargetsFile, n)
	}
	return nil
}

// target is what the configured strategy deploys to; its String is the
// report's target.
func (h *Handler) target() fmt.Stringer {
	if h.t.Strategy == target.BlueGreen {
		return h.blueGreenTarget()
	}
	return h.rollingTarget()
}

func (h *Handler) rollingTarget() rollout.Target {
	return rollout.Target{Namespace: h.t.Namespace, Deployment: h.t.Deployment, Container: h.t.Container}
}

func (h *Handler) blueGreenTarget() rollout.BlueGreenTarget {
	t := rollout.BlueGreenTarget{Namespace: h.t.Namespace, Deployment: h.t.Deployment, Container: h.t.Container,
		RouterKind: rollout.ServiceRouter, Router: h.t.Service}
	if h.t.Ingress != "" {
		t.RouterKind, t.Router = rollout.IngressRouter, h.t.Ingress
	}
	return t
}

func (h *Handler) blueGreenOptions() rollout.BlueGreenOptions {
	return rollout.BlueGreenOptions{Timeout: h.t.RolloutTimeout, ScaleDownOld: h.t.ScaleDownOld, ScaleDownDelay: h.t.ScaleDownDelay,
		DryRun: h.cfg.DryRun, ClaimExpiry: h.t.Budget()}
}

// pushed lists a build's pushed image names, for a skip reason: five at
// most, then how many more, so that the log line stays short.
func pushed(b *cloudbuildpb.Build) string {
	const max = 5
	images := b.GetResults().GetImages()
	var names []string
	for _, img := range images[:min(len(images), max)] {
		names = append(names, img.GetName())
	}
	switch {
	case len(images) == 0:
		return "none"
	case len(images) > max:
		return fmt.Sprintf("%s and %d more", strings.Join(names, ", "), len(images)-max)
	}
	return strings.Join(names, ", ")
}
