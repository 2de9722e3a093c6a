// Package trigger turns one cloud-builds message into decisions: dismiss
// it, or deploy the image the build pushed to each target it is for.
//
// Most messages on the topic are builds still queued or running, or builds of
// other images. Those are dismissed from the message's attributes alone,
// before the Build is decoded and without any network call. Only a SUCCESS
// build that pushed a target's repository with a digest, and satisfies that
// target's when rules, reaches the target's cluster.
//
// With confirmation on (VERIFY_BUILD, package provenance), such a message is
// only a hint: before any cluster call the build is read back from Cloud
// Build, once per message, and every decision is made again on Cloud Build's
// copy. A build it does not confirm is refused for each target concerned.
package trigger

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"cloud.google.com/go/cloudbuild/apiv1/v2/cloudbuildpb"

	"github.com/onnewimage/onnewimage/internal/buildevent"
	"github.com/onnewimage/onnewimage/internal/cluster"
	"github.com/onnewimage/onnewimage/internal/config"
	"github.com/onnewimage/onnewimage/internal/image"
	"github.com/onnewimage/onnewimage/internal/kube"
	"github.com/onnewimage/onnewimage/internal/provenance"
	"github.com/onnewimage/onnewimage/internal/result"
	"github.com/onnewimage/onnewimage/internal/rollout"
	"github.com/onnewimage/onnewimage/internal/target"
)

// Connector hands out the target cluster's clientset and is told of errors
// that may mean the connection is broken.
type Connector interface {
	Clientset(ctx context.Context) (kube.Interface, error)
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

// Report is what an event led to for one target, or for the whole message
// when it is dismissed before any target is concerned: one log line's worth.
type Report struct {
	MessageID string
	BuildID   string
	Status    string
	// Image is the image deployed, or that would have been.
	Image string
	// Previous is the image the target ran before, when the outcome is not
	// Failed.
	Previous string
	// TargetName is the target's name; "" when the report is the message's.
	TargetName string
	// Target is what the target's strategy deploys to, prefixed with its
	// name when the targets come from a file (see Handler); "" when the
	// report is the message's.
	Target  string
	Outcome rollout.Outcome
	Reason  string
	// Err is the failure, when the Outcome is Failed; Retryable(Err) tells
	// whether a redelivery can help.
	Err    error
	DryRun bool
	// Confirmed means the build was confirmed with the Cloud Build API and
	// the decision made on the API's copy; false with VERIFY_BUILD=false.
	Confirmed bool
	// Patch is the patch sent, in a dry run.
	Patch string
	// Result is the message published to RESULT_TOPIC for this target's
	// outcome, or that failed to be; nil when none is published (no
	// RESULT_TOPIC, the message's report, a build the target's rules keep
	// out). See Handler.
	Result *result.Message
	// ResultErr is why Result could not be published. It never changes the
	// Outcome nor the Handler's error.
	ResultErr error
}

// fail makes r the report of err.
func (r *Report) fail(err error) {
	r.Outcome, r.Reason, r.Err = rollout.Failed, explain(err), err
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

// Handler decides and applies events for the configured targets.
//
// A build goes to every target whose image it pushed and whose when rules
// it satisfies, to each concurrently and independently: each target's work
// has its own deadline (its Budget), and a target failing neither delays
// nor undoes another. Each target yields its own Report. A message
// concerning no target (not a SUCCESS, too old, malformed, no target's
// image pushed) yields one Report without a target.
//
// Connections are made once per cluster (target.Cluster.Key) and shared by
// the targets on it, on the first event that needs them.
//
// Rollback acts on the one target it is given the name of, through the same
// shared connection to its cluster.
//
// With RESULT_TOPIC (or Options.Results), each target's outcome of a build
// whose image it deploys and that its rules let in is published as a
// result message once the target is done, before its Report is made
// (which carries the message, and the publish error if any). Reports of the
// message as a whole, and of targets whose rules keep the build out,
// publish nothing. A publish error never changes an outcome nor asks for a
// redelivery; a redelivery publishes what it decided (skipped, as already
// running).
type Handler struct {
	cfg config.Config
	// named prefixes each report's Target with the target's name: the
	// targets come from a file.
	named   bool
	connect func(target.Cluster) Connector
	now     func() time.Time
	results Publisher
	// verify confirms builds with Cloud Build; nil with VERIFY_BUILD=false.
	verify *provenance.Verifier

	mu    sync.Mutex
	conns map[string]Connector // By target.Cluster.Key.
}

// Options adjust a Handler.
type Options struct {
	// Connector replaces the connectors built from the configuration: every
	// target's cluster is reached through it.
	Connector Connector
	// Connect replaces the connector built for a cluster; it is called once
	// per cluster Key.
	Connect func(target.Cluster) Connector
	// Cluster adjusts the connectors built from the configuration.
	Cluster cluster.Options
	// Now replaces time.Now.
	Now func() time.Time
	// Results replaces the publisher of RESULT_TOPIC: when set, results
	// are published to it whatever the configuration says.
	Results Publisher
	// Builds replaces the Cloud Build API client that confirms builds.
	Builds provenance.Builds
}

// New returns a Handler for cfg. It connects to nothing: each cluster's
// connection is made on the first event that needs it.
func New(cfg config.Config, opts Options) *Handler {
	h := &Handler{cfg: cfg, named: cfg.TargetsFile != "", connect: opts.Connect, now: opts.Now, conns: map[string]Connector{}}
	switch {
	case opts.Connector != nil:
		h.connect = func(target.Cluster) Connector { return opts.Connector }
	case h.connect == nil:
		copts := opts.Cluster
		if copts.EmulatorHost == "" {
			copts.EmulatorHost = cfg.ContainerEmulatorHost
		}
		h.connect = func(c target.Cluster) Connector {
			if c.GKE() {
				return cluster.NewGKE(c.ResourceName(), c.Endpoint, copts)
			}
			return cluster.NewKubeconfig(c.Kubeconfig, copts)
		}
	}
	if h.now == nil {
		h.now = time.Now
	}
	h.results = opts.Results
	if h.results == nil && cfg.ResultTopic != "" {
		h.results = result.NewPublisher(cfg.ResultTopic, result.Options{})
	}
	if cfg.VerifyBuild {
		h.verify = provenance.New(cfg.BuildProjects, provenance.Options{EmulatorHost: cfg.CloudBuildEmulatorHost, Builds: opts.Builds})
	}
	return h
}

// connector returns the one connector of cluster c, made on first use.
func (h *Handler) connector(c target.Cluster) Connector {
	h.mu.Lock()
	defer h.mu.Unlock()
	conn, ok := h.conns[c.Key()]
	if !ok {
		conn = h.connect(c)
		h.conns[c.Key()] = conn
	}
	return conn
}

// Handle decides what ev means and acts on it, and returns its reports in
// the order of the configured targets (see Dispatch).
func (h *Handler) Handle(ctx context.Context, ev Event) ([]Report, error) {
	var (
		mu   sync.Mutex
		reps []Report
	)
	err := h.Dispatch(ctx, ev, func(rep Report) {
		mu.Lock()
		defer mu.Unlock()
		reps = append(reps, rep)
	})
	order := map[string]int{}
	for i, t := range h.cfg.Targets {
		order[t.Name] = i
	}
	slices.SortStableFunc(reps, func(a, b Report) int { return order[a.TargetName] - order[b.TargetName] })
	return reps, err
}

// Dispatch decides what ev means and acts on it, calling report once per
// target concerned as soon as that target is done (concurrently, from
// several goroutines), or once for the message when no target is. It
// returns when every target is done. Its error joins the retryable
// failures: non-nil means a redelivery can help, and on it the targets
// already done skip the release (already running, or already recorded),
// so only the failed ones try again. A failure no redelivery can help is
// only reported. When one target fails so and another retryably, each
// redelivery fails the first again, with the same error, until the second
// is done or MAX_EVENT_AGE drops the message: repeated ERROR lines, never a
// write, which is simpler and safer than remembering per message which
// target failed how.
func (h *Handler) Dispatch(ctx context.Context, ev Event, report func(Report)) error {
	rep := Report{DryRun: h.cfg.DryRun, MessageID: ev.ID}
	skip := func(format string, args ...any) error {
		rep.Outcome, rep.Reason = rollout.Skipped, fmt.Sprintf(format, args...)
		report(rep)
		return nil
	}
	fail := func(err error) error {
		rep.fail(err)
		report(rep)
		if Retryable(err) {
			return err
		}
		return nil
	}

	// Most messages are builds queued or running: their ID and attributes
	// dismiss them before the rest is decoded or checked. What can deploy
	// is decoded whole, with every check.
	msg, ok := buildevent.Peek(ev.Data)
	if !ok || msg.Status() == "" || msg.Status() == cloudbuildpb.Build_SUCCESS.String() {
		var err error
		if msg, err = buildevent.DecodeMessage(ev.Data); err != nil {
			return fail(err)
		}
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

	// The targets concerned: those whose image the build pushed.
	picks, unmatched := h.pick(build)
	if len(picks) == 0 {
		return skip("%s (pushed: %s)", strings.Join(unmatched, "; "), pushed(build))
	}
	if published.IsZero() {
		return fail(fmt.Errorf("%w: neither message.publishTime nor the CloudEvent time is set, so MAX_EVENT_AGE cannot bound its redeliveries", ErrNoPublishTime))
	}
	if err := orderable(build, published); err != nil {
		return fail(err)
	}

	// From here on, with confirmation on, the message is only a hint: the
	// decisions are made again on Cloud Build's copy of the build.
	var refused []Report
	if h.verify != nil && slices.ContainsFunc(picks, func(p pick) bool { ok, _ := p.t.When.Match(build); return p.err == nil && ok }) {
		confirmed, err := h.verify.Confirm(ctx, build)
		if err != nil {
			return h.unconfirmed(ctx, picks, rep, build, err, report)
		}
		if err := orderable(confirmed, published); err != nil {
			return fail(err)
		}
		rep.Confirmed, rep.Status = true, confirmed.GetStatus().String()
		picks, refused = h.reconcile(ctx, picks, confirmed, rep)
		build = confirmed
		if len(picks) == 0 && len(refused) == 0 {
			_, unmatched := h.pick(build)
			return skip("%s (cloud build's copy pushed: %s)", strings.Join(unmatched, "; "), pushed(build))
		}
	}
	for _, r := range refused {
		report(r)
	}

	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		retryable []error
	)
	for _, p := range picks {
		rep := rep
		rep.TargetName, rep.Target = p.t.Name, h.describe(p.t)
		if p.err != nil {
			rep.Outcome, rep.Reason = rollout.Skipped, fmt.Sprintf("%v (pushed: %s)", p.err, pushed(build))
			if ok, _ := p.t.When.Match(build); ok { // A result only for the builds its rules let in.
				h.publish(ctx, &rep, p.t, build)
			}
			report(rep)
			continue
		}
		rep.Image = p.ref.String()
		if ok, why := p.t.When.Match(build); !ok {
			rep.Outcome, rep.Reason = rollout.Skipped, why
			report(rep)
			continue
		}
		release := rollout.Release{
			BuildID:    build.GetId(),
			CreateTime: build.GetCreateTime().AsTime(),
			Commit:     buildevent.Commit(build),
			Image:      p.ref,
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			rep := h.deploy(ctx, p.t, release, rep)
			h.publish(ctx, &rep, p.t, build)
			report(rep)
			if Retryable(rep.Err) {
				mu.Lock()
				retryable = append(retryable, fmt.Errorf("target %s: %w", p.t.Name, rep.Err))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errors.Join(retryable...)
}

// pick is a target concerned by a build: one whose image it pushed.
type pick struct {
	t   target.Target
	ref image.Reference
	err error // Why the pushed image cannot be deployed.
}

// pick returns the targets concerned by build, in the configured order, and
// why each image match failed for the others.
func (h *Handler) pick(build *cloudbuildpb.Build) (picks []pick, unmatched []string) {
	for _, t := range h.cfg.Targets {
		ref, err := image.Select(t.Image, build.GetResults().GetImages())
		if errors.Is(err, image.ErrNoMatch) {
			if msg := err.Error(); !slices.Contains(unmatched, msg) {
				unmatched = append(unmatched, msg)
			}
			continue
		}
		picks = append(picks, pick{t, ref, err})
	}
	return picks, unmatched
}

// orderable fails when build cannot be ordered against the deployed one: no
// createTime, or one more than MaxClockSkew after published.
func orderable(build *cloudbuildpb.Build, published time.Time) error {
	if build.GetCreateTime() == nil {
		return fmt.Errorf("%w: build %s has no createTime", ErrUnorderable, build.GetId())
	}
	if created := build.GetCreateTime().AsTime(); created.Sub(published) > MaxClockSkew {
		// Else a build claiming 2099 would make every real build look stale.
		return fmt.Errorf("%w: build %s was created at %s, %s after its event was published (%s); more than %s ahead is refused",
			ErrFutureBuild, build.GetId(), created.Format(time.RFC3339Nano), created.Sub(published), published.Format(time.RFC3339Nano), MaxClockSkew)
	}
	return nil
}

// unconfirmed reports, for every target concerned, that the build could not
// be confirmed: refused, or failed (retried when a redelivery can help).
func (h *Handler) unconfirmed(ctx context.Context, picks []pick, rep Report, claimed *cloudbuildpb.Build, err error, report func(Report)) error {
	for _, p := range picks {
		report(h.refusal(ctx, p, rep, claimed, err))
	}
	if Retryable(err) {
		return err
	}
	return nil
}

// refusal is rep completed for p's target with err: refused when err wraps
// provenance.ErrRefused, else failed. Its result is published when the
// target's rules let build in, as for any other outcome.
func (h *Handler) refusal(ctx context.Context, p pick, rep Report, build *cloudbuildpb.Build, err error) Report {
	rep.TargetName, rep.Target = p.t.Name, h.describe(p.t)
	if p.err == nil {
		rep.Image = p.ref.String()
	}
	if errors.Is(err, provenance.ErrRefused) {
		rep.Outcome, rep.Reason, rep.Err = rollout.Refused, err.Error(), err
	} else {
		rep.fail(err)
	}
	if ok, _ := p.t.When.Match(build); ok {
		h.publish(ctx, &rep, p.t, build)
	}
	return rep
}

// reconcile makes the decisions again on confirmed, Cloud Build's copy of
// the build the message claimed: it returns the targets confirmed concerns,
// and a refusal for each target whose image the message claims with a
// digest that confirmed did not push.
func (h *Handler) reconcile(ctx context.Context, claimed []pick, confirmed *cloudbuildpb.Build, rep Report) (picks []pick, refused []Report) {
	all, _ := h.pick(confirmed)
	byName := map[string]pick{}
	for _, p := range all {
		byName[p.t.Name] = p
	}
	out := map[string]bool{}
	for _, c := range claimed {
		if c.err != nil {
			continue
		}
		if p, ok := byName[c.t.Name]; ok && p.err == nil && p.ref.Repository == c.ref.Repository && p.ref.Digest == c.ref.Digest {
			continue
		}
		err := fmt.Errorf("%w: cloud build's copy of build %s pushed no %s@%s (it pushed: %s)",
			provenance.ErrRefused, confirmed.GetId(), c.ref.Repository, c.ref.Digest, pushedDigests(confirmed))
		refused = append(refused, h.refusal(ctx, c, rep, confirmed, err))
		out[c.t.Name] = true
	}
	for _, p := range all {
		if !out[p.t.Name] {
			picks = append(picks, p)
		}
	}
	return picks, refused
}

// deploy takes release to t and completes rep with the outcome.
func (h *Handler) deploy(ctx context.Context, t target.Target, release rollout.Release, rep Report) Report {
	// Bound the target's cluster work, so that a hung connection fails this
	// target (and Pub/Sub retries it) instead of holding the instance until
	// the platform's timeout, whatever the other targets do.
	ctx, cancel := context.WithTimeout(ctx, t.Budget())
	defer cancel()
	conn := h.connector(t.Cluster)
	client, err := conn.Clientset(ctx)
	if err != nil {
		rep.fail(err)
		return rep
	}
	var res rollout.Result
	switch t.Strategy {
	case target.BlueGreen:
		res, err = rollout.BlueGreen(ctx, client, blueGreenTarget(t), release, blueGreenOptions(t, h.cfg.DryRun))
	case target.Canary:
		res, err = rollout.Canary(ctx, client, canaryOn(client, t), release, canaryOptions(t, h.cfg.DryRun))
	default:
		res, err = rollout.Rolling(ctx, client, rollingTarget(t), release, rollout.Options{DryRun: h.cfg.DryRun, Gates: gates(t)})
	}
	conn.Forget(err)
	if err != nil { // The Result means nothing with an error.
		rep.fail(err)
		return rep
	}
	rep.Outcome, rep.Reason, rep.Previous = res.Outcome, res.Reason, res.Previous
	if h.cfg.DryRun {
		rep.Patch = string(res.Patch)
	}
	return rep
}

// describe names what t's strategy deploys to, after t's name when the
// targets come from a file: "web-prod: web/web-{blue,green}:web via
// service/web".
func (h *Handler) describe(t target.Target) string {
	var s string
	switch t.Strategy {
	case target.BlueGreen:
		s = blueGreenTarget(t).String()
	case target.Canary:
		s = canaryTarget(t).String()
	default:
		s = rollingTarget(t).String()
	}
	if h.named {
		s = t.Name + ": " + s
	}
	return s
}

// Rollback takes the target named name (with one target, "" names it) back
// to the release before the live one: a blue-green target's router goes back
// to the colour traffic left at the last switch (see rollout.Rollback); a
// rolling target's Deployment goes back to its previous revision, as
// `kubectl rollout undo` does (see rollout.Undo); a canary target's canary
// in progress is aborted (see rollout.AbortCanary), or without one its
// stable Deployment goes back as a rolling one does. Either way the build
// taken out is not deployed again by a redelivery. A name that picks no target is
// an error wrapping config.ErrNoTarget, and nothing is done.
func (h *Handler) Rollback(ctx context.Context, name string) (rollout.Result, error) {
	t, err := h.cfg.Target(name)
	if err != nil {
		return rollout.Result{}, err
	}
	conn := h.connector(t.Cluster)
	client, err := conn.Clientset(ctx)
	if err != nil {
		return rollout.Result{}, err
	}
	var res rollout.Result
	switch t.Strategy {
	case target.BlueGreen:
		res, err = rollout.Rollback(ctx, client, blueGreenTarget(t), blueGreenOptions(t, h.cfg.DryRun))
	case target.Canary:
		// A canary in progress is aborted; without one, the stable
		// Deployment goes back as a rolling one does.
		res, err = rollout.AbortCanary(ctx, client, canaryOn(client, t), rollout.Options{DryRun: h.cfg.DryRun})
		if errors.Is(err, rollout.ErrNoCanary) {
			res, err = rollout.Undo(ctx, client, rollingTarget(t), rollout.Options{DryRun: h.cfg.DryRun})
		}
	default:
		res, err = rollout.Undo(ctx, client, rollingTarget(t), rollout.Options{DryRun: h.cfg.DryRun})
	}
	conn.Forget(err)
	return res, err
}

func rollingTarget(t target.Target) rollout.Target {
	return rollout.Target{Namespace: t.Namespace, Deployment: t.Deployment, Container: t.Container}
}

func blueGreenTarget(t target.Target) rollout.BlueGreenTarget {
	bg := rollout.BlueGreenTarget{Namespace: t.Namespace, Deployment: t.Deployment, Container: t.Container,
		RouterKind: rollout.ServiceRouter, Router: t.Service}
	if t.Ingress != "" {
		bg.RouterKind, bg.Router = rollout.IngressRouter, t.Ingress
	}
	return bg
}

// gates are t's release gates.
func gates(t target.Target) rollout.Gates {
	return rollout.Gates{Namespace: t.Namespace, Names: t.Gates, Container: t.Container, Repository: t.Image, Timeout: t.GateTimeout}
}

func blueGreenOptions(t target.Target, dryRun bool) rollout.BlueGreenOptions {
	return rollout.BlueGreenOptions{Timeout: t.RolloutTimeout, ScaleDownOld: t.ScaleDownOld, ScaleDownDelay: t.ScaleDownDelay,
		DryRun: dryRun, ClaimExpiry: t.Budget(), Gates: gates(t)}
}

func canaryTarget(t target.Target) rollout.CanaryTarget {
	return rollout.CanaryTarget{Namespace: t.Namespace, Deployment: t.Deployment, Container: t.Container, HTTPRoute: t.HTTPRoute}
}

func canaryOptions(t target.Target, dryRun bool) rollout.CanaryOptions {
	return rollout.CanaryOptions{Steps: t.CanarySteps, Pause: t.CanaryPause, Timeout: t.RolloutTimeout,
		ClaimExpiry: t.Budget(), DryRun: dryRun, Gates: gates(t)}
}

// pushed lists a build's pushed image names, for a skip reason: five at
// most, then how many more, so that the log line stays short.
func pushed(b *cloudbuildpb.Build) string {
	return list(b, func(img *cloudbuildpb.BuiltImage) string { return img.GetName() })
}

// pushedDigests is pushed with each name's digest.
func pushedDigests(b *cloudbuildpb.Build) string {
	return list(b, func(img *cloudbuildpb.BuiltImage) string { return img.GetName() + "@" + img.GetDigest() })
}

func list(b *cloudbuildpb.Build, show func(*cloudbuildpb.BuiltImage) string) string {
	const max = 5
	images := b.GetResults().GetImages()
	var names []string
	for _, img := range images[:min(len(images), max)] {
		names = append(names, show(img))
	}
	switch {
	case len(images) == 0:
		return "none"
	case len(images) > max:
		return fmt.Sprintf("%s and %d more", strings.Join(names, ", "), len(images)-max)
	}
	return strings.Join(names, ", ")
}
