package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"

	"github.com/onnewimage/onnewimage/internal/kube"
)

// Colour is one of the two Deployments of a blue-green target.
type Colour string

// The two colours.
const (
	Blue  Colour = "blue"
	Green Colour = "green"
)

// Other is the colour that c is not.
func (c Colour) Other() Colour {
	if c == Blue {
		return Green
	}
	return Blue
}

// ColourLabel is the pod label that tells the colours apart, and the key of
// a Service router's selector that the switch changes.
const ColourLabel = "version"

// RouterKind is the kind of object that sends traffic to the live colour.
type RouterKind string

// The router kinds.
const (
	// ServiceRouter is a Service whose selector's ColourLabel is switched.
	ServiceRouter RouterKind = "service"
	// IngressRouter is a networking.k8s.io/v1 Ingress whose backends are
	// switched between the colour Services DEPLOYMENT-blue-svc and
	// DEPLOYMENT-green-svc: the default backend and every rule path whose
	// backend is a colour Service. Backends naming other Services are left
	// alone.
	IngressRouter RouterKind = "ingress"
)

// Annotation keys the blue-green strategy writes on the router, besides
// AnnotationBuildID, AnnotationBuildCreateTime, AnnotationImage and
// AnnotationCommit, which there record the live release.
const (
	// AnnotationPreviousColour holds the colour traffic left at the last
	// switch: where Rollback goes back to.
	AnnotationPreviousColour = "onnewimage.dev/previous-colour"
	// AnnotationDeploying holds the build last deployed to the idle colour
	// and not (yet) switched to, as "BUILD to COLOUR at TIME" (RFC 3339,
	// when the claim was made; earlier versions wrote no time). Writing
	// it is the claim that makes concurrent invocations conflict; the switch
	// removes it, and a release that failed to become available (or an
	// invocation that died) leaves it behind. A claim older than
	// BlueGreenOptions.ClaimExpiry has expired: Rollback takes over.
	AnnotationDeploying = "onnewimage.dev/deploying"
	// AnnotationClaim, on a colour's Deployment, holds the router's
	// resourceVersion right after the claim of the release last deployed to
	// it. It changes with every claim, so every claim changes the Deployment
	// too, and a patch of it decided before the claim conflicts.
	AnnotationClaim = "onnewimage.dev/claim"
	// AnnotationRolledBackBuildID holds the build Rollback took out of
	// traffic. Neither it nor an older build is switched to again; a newer
	// build is.
	AnnotationRolledBackBuildID = "onnewimage.dev/rolled-back-build-id"
	// AnnotationRolledBackCreateTime holds the createTime (RFC 3339) of the
	// build Rollback took out of traffic.
	AnnotationRolledBackCreateTime = "onnewimage.dev/rolled-back-build-create-time"
	// AnnotationRejectedBuildID holds the newest build a release gate
	// rejected. Neither it nor an older build is deployed again; a newer
	// build is.
	AnnotationRejectedBuildID = "onnewimage.dev/rejected-build-id"
	// AnnotationRejectedCreateTime holds the createTime (RFC 3339) of the
	// build a release gate rejected.
	AnnotationRejectedCreateTime = "onnewimage.dev/rejected-build-create-time"
)

var (
	// ErrRouterUnknown is wrapped when the router sends traffic to neither
	// colour, or to both: only an operator can fix that.
	ErrRouterUnknown = errors.New("router points at no single colour")
	// ErrProgressDeadline is wrapped when the idle colour reports
	// ProgressDeadlineExceeded: the release is broken, and delivering it
	// again cannot help. Traffic stays where it was.
	ErrProgressDeadline = errors.New("release exceeded its progress deadline")
	// ErrRolloutTimeout is wrapped when the idle colour did not become
	// available within the rollout timeout. Traffic stays where it was. A
	// slow rollout may finish by the time the event is delivered again, and
	// the retry then switches without patching again.
	ErrRolloutTimeout = errors.New("release not available in time")
	// ErrNoPrevious is wrapped when Rollback finds no previous release on
	// the idle colour: it holds a newer build than the live one, or a
	// release has claimed it (AnnotationDeploying) and may be deploying.
	ErrNoPrevious = errors.New("no previous release to roll back to")
)

// errChanged says that what a decision was based on changed while it was
// carried out (the idle colour was taken by another release, the watch
// expired): read again and decide again.
var errChanged = errors.New("changed while waiting")

// BlueGreenTarget is a blue-green pair of Deployments and the router in
// front of them.
type BlueGreenTarget struct {
	Namespace string
	// Deployment is the pair's base name: the colours are Deployment-blue
	// and Deployment-green.
	Deployment string
	// Container is the container whose image is deployed.
	Container string
	// RouterKind and Router name the router, in Namespace.
	RouterKind RouterKind
	Router     string
}

// DeploymentFor is the name of colour c's Deployment.
func (t BlueGreenTarget) DeploymentFor(c Colour) string { return t.Deployment + "-" + string(c) }

// ServiceFor is the name of colour c's Service, the backend an Ingress
// router switches to.
func (t BlueGreenTarget) ServiceFor(c Colour) string { return t.DeploymentFor(c) + "-svc" }

// String formats the target as namespace/deployment-{blue,green}:container
// via kind/router.
func (t BlueGreenTarget) String() string {
	return fmt.Sprintf("%s/%s-{blue,green}:%s via %s/%s", t.Namespace, t.Deployment, t.Container, t.RouterKind, t.Router)
}

// BlueGreenOptions adjust how a release is applied, or rolled back.
type BlueGreenOptions struct {
	// Timeout bounds the wait for the idle colour to become available; zero
	// leaves only ctx to bound it.
	Timeout time.Duration
	// ScaleDownOld scales the colour traffic left to 0 after a switch, once
	// ScaleDownDelay has passed.
	ScaleDownOld bool
	// ScaleDownDelay is how long the colour traffic left keeps running after
	// the switch, for the requests still in flight to it while the router
	// change reaches every proxy and load balancer. The wait ends early when
	// ctx does, and the colour is then left running.
	ScaleDownDelay time.Duration
	// DryRun has the API server validate each write without persisting it;
	// nothing is waited for.
	DryRun bool
	// ClaimExpiry is the age past which a claim (AnnotationDeploying) is
	// taken as left behind by an invocation that died: the longest one event
	// may take. Zero: claims never expire.
	ClaimExpiry time.Duration
	// Gates run, each to completion, once the idle colour is rolled out and
	// before the switch, told the idle colour's Service. A gate that fails
	// rejects the build (ErrGateFailed): nothing is switched, and the router
	// records it (AnnotationRejectedBuildID). They do not run in a dry run.
	Gates Gates

	// after replaces time.After in tests.
	after func(time.Duration) <-chan time.Time
}

// BlueGreen deploys r to the idle colour of t, waits until that colour is
// fully rolled out, then switches the router to it. A release that is
// already live, or not newer than the live (or rolled-back) one, changes
// nothing; one that the idle colour already runs (an earlier attempt timed
// out) is not patched again but waited for and switched to.
//
// A release that does not become available is never switched to: the
// error wraps ErrRolloutTimeout or ErrProgressDeadline. With
// o.ScaleDownOld, the colour traffic left is scaled down o.ScaleDownDelay
// after the switch, unless it is live or claimed again by then (see
// scaleDown).
func BlueGreen(ctx context.Context, client kube.Interface, t BlueGreenTarget, r Release, o BlueGreenOptions) (Result, error) {
	waitCtx, cancel := waitContext(ctx, o.Timeout)
	defer cancel()
	var res Result
	err := retry.OnError(conflictBackoff, rereadable, func() error {
		var err error
		res, err = blueGreenOnce(ctx, waitCtx, client, t, r, o)
		return err
	})
	if err != nil {
		return Result{}, err
	}
	return res, nil
}

// rereadable reports whether err means "read again and decide again".
func rereadable(err error) bool { return apierrors.IsConflict(err) || errors.Is(err, errChanged) }

// errTimeout is the cause of a wait context that ran out.
var errTimeout = errors.New("rollout timeout")

func waitContext(ctx context.Context, timeout time.Duration) (context.Context, context.CancelFunc) {
	if timeout <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeoutCause(ctx, timeout, errTimeout)
}

func blueGreenOnce(ctx, waitCtx context.Context, client kube.Interface, t BlueGreenTarget, r Release, o BlueGreenOptions) (Result, error) {
	s, err := readBlueGreen(ctx, client, t)
	if err != nil {
		return Result{}, err
	}
	res := Result{Outcome: Skipped, Previous: s.liveContainer.Image}
	deploy, reason := s.judge(r)
	if reason != "" {
		res.Reason = reason
		return res, nil
	}

	// Claim the idle colour on the router, then patch it: always the release
	// annotations and the claim, so that a patch of the idle colour another
	// invocation decided before this claim conflicts; the image unless the
	// idle colour already runs r (no new rollout then); the replica count if
	// it was scaled down.
	takeOver := ""
	if c, ok := s.claim(); ok && c.by != r.BuildID && c.expired(o.ClaimExpiry) {
		takeOver = "; " + s.takeOver(c, o)
	}
	routerVersion := s.router.meta().GetResourceVersion()
	if !o.DryRun {
		claim := map[string]any{"metadata": map[string]any{
			"resourceVersion": routerVersion,
			"annotations":     map[string]any{AnnotationDeploying: newClaim(r.BuildID, s.idleColour)},
		}}
		if routerVersion, err = s.router.patch(ctx, claim, o); err != nil {
			return Result{}, err
		}
	}
	annotations := releaseAnnotations(r)
	annotations[AnnotationClaim] = routerVersion
	idlePatch := map[string]any{"metadata": map[string]any{"annotations": annotations}}
	spec := map[string]any{}
	if deploy {
		spec["template"] = map[string]any{"spec": containerPatch(s.idleList, t.Container, r.Image.String())}
	}
	if replicas(s.idle) == 0 {
		spec["replicas"] = s.wantReplicas()
	}
	if len(spec) > 0 {
		idlePatch["spec"] = spec
	}
	idle, p, err := patchDeployment(ctx, client, s.idle, idlePatch, o)
	sent := [][]byte{p}
	if err != nil {
		return Result{}, err
	}

	sw := s.switchPatch(routerVersion, map[string]any{
		AnnotationBuildID:              r.BuildID,
		AnnotationBuildCreateTime:      r.CreateTime.UTC().Format(time.RFC3339Nano),
		AnnotationImage:                r.Image.String(),
		AnnotationCommit:               nilIfEmpty(r.Commit),
		AnnotationRolledBackBuildID:    nil,
		AnnotationRolledBackCreateTime: nil,
	})
	if o.DryRun {
		return s.dryRun(ctx, sw, sent, o)
	}

	idle, err = waitRolledOut(waitCtx, client, idle, t.Container, r.Image.String(), o.Timeout)
	if err != nil {
		return Result{}, err
	}
	if err := o.Gates.run(ctx, client, r, t.ServiceFor(s.idleColour)); errors.Is(err, ErrGateFailed) {
		return Result{}, rejectBlueGreen(ctx, client, t, r, o, err)
	} else if err != nil {
		return Result{}, err
	}
	if _, err := s.router.patch(ctx, sw, o); err != nil {
		return Result{}, err
	}
	res.Outcome, res.Patch = Deployed, mustJSON(sw)
	status, _, _ := Status(idle)
	res.Reason = fmt.Sprintf("switched %s from %s to %s after %s%s", s.router, s.liveColour, s.idleColour, status, o.Gates.summary())
	res.Reason += takeOver + s.scaleDown(ctx, client, o)
	return res, nil
}

// Rollback switches t's router back to the other colour, the one traffic
// left at the last switch. It claims that colour on the router and patches
// it, as a release does (scaling it up to the live colour's replica count
// if it was scaled down), and it must be fully rolled out before traffic
// moves. With o.ScaleDownOld, the colour it left is scaled down
// o.ScaleDownDelay later. The router records the release it
// left in AnnotationRolledBackBuildID, so that redelivering that build does
// not switch to it again.
//
// Rollback switches at most once: when the router changed since it was
// read, the error wraps Conflict and nothing was switched. It refuses, with
// ErrNoPrevious, when the other colour holds a build newer than the live
// one (a release not yet, or never, switched to).
func Rollback(ctx context.Context, client kube.Interface, t BlueGreenTarget, o BlueGreenOptions) (Result, error) {
	s, err := readBlueGreen(ctx, client, t)
	if err != nil {
		return Result{}, err
	}
	res := Result{Outcome: Skipped, Previous: s.liveContainer.Image}
	live, back, rolledBack := s.liveRec, s.idleRec, s.rolledBack
	if back.ok && live.ok && back.id != rolledBack.id && back.release().newerThan(live.id, live.at) {
		return Result{}, fmt.Errorf("%w: %s holds build %s, newer than the live build %s: it is a release not switched to, not the previous one",
			ErrNoPrevious, s.idle.Name, back.id, live.id)
	}
	// A release that claimed the idle colour may not have patched it yet;
	// this switch would not stop that patch. A claim older than the longest
	// an event may take was left by an invocation that died.
	takeOver := ""
	if c, ok := s.claim(); ok && c.to == s.idleColour && c.by != rollbackClaim && c.by != back.id {
		if !c.expired(o.ClaimExpiry) {
			expires := ""
			if !c.at.IsZero() && o.ClaimExpiry > 0 {
				expires = fmt.Sprintf(" (it expires at %s)", c.at.Add(o.ClaimExpiry).UTC().Format(time.RFC3339))
			}
			return Result{}, fmt.Errorf("%w: %s records %s=%q: a release may be on its way to %s; try again%s, or remove the annotation if that deploy is gone",
				ErrNoPrevious, s.router, AnnotationDeploying, c.raw, s.idle.Name, expires)
		}
		takeOver = "; " + s.takeOver(c, o)
	}

	// Claim the colour on the router, then patch it: always the claim
	// (AnnotationClaim, a new value, so that a scale-down of it decided
	// before conflicts; see scaleDown), and the replica count if it was
	// scaled down.
	routerVersion := s.router.meta().GetResourceVersion()
	if !o.DryRun {
		claim := map[string]any{"metadata": map[string]any{
			"resourceVersion": routerVersion,
			"annotations":     map[string]any{AnnotationDeploying: newClaim(rollbackClaim, s.idleColour)},
		}}
		if routerVersion, err = s.router.patch(ctx, claim, o); err != nil {
			return Result{}, rollbackConflict(s, err)
		}
	}
	idlePatch := map[string]any{"metadata": map[string]any{"annotations": map[string]any{AnnotationClaim: routerVersion}}}
	if replicas(s.idle) == 0 {
		idlePatch["spec"] = map[string]any{"replicas": s.wantReplicas()}
	}
	idle, p, err := patchDeployment(ctx, client, s.idle, idlePatch, o)
	sent := [][]byte{p}
	if err != nil {
		return Result{}, rollbackConflict(s, err)
	}

	annotations := map[string]any{
		AnnotationBuildID:              nilIfEmpty(back.id),
		AnnotationBuildCreateTime:      nilIfEmpty(idle.Annotations[AnnotationBuildCreateTime]),
		AnnotationImage:                s.idleContainer.Image,
		AnnotationCommit:               nilIfEmpty(idle.Annotations[AnnotationCommit]),
		AnnotationRolledBackBuildID:    nilIfEmpty(live.id),
		AnnotationRolledBackCreateTime: nil,
	}
	if live.ok {
		annotations[AnnotationRolledBackCreateTime] = live.at.UTC().Format(time.RFC3339Nano)
	}
	sw := s.switchPatch(routerVersion, annotations)
	if o.DryRun {
		return s.dryRun(ctx, sw, sent, o)
	}

	waitCtx, cancel := waitContext(ctx, o.Timeout)
	defer cancel()
	idle, err = waitRolledOut(waitCtx, client, idle, t.Container, s.idleContainer.Image, o.Timeout)
	if errors.Is(err, errChanged) {
		err = fmt.Errorf("%w: nothing was switched; run rollback again if still needed", err)
	}
	if err != nil {
		return Result{}, err
	}
	if _, err := s.router.patch(ctx, sw, o); err != nil {
		return Result{}, rollbackConflict(s, err)
	}
	res.Outcome, res.Patch = Deployed, mustJSON(sw)
	status, _, _ := Status(idle)
	res.Reason = fmt.Sprintf("rolled back %s from %s to %s after %s; it runs %s",
		s.router, s.liveColour, s.idleColour, status, s.idleContainer.Image)
	if back.id != "" {
		res.Reason += " (build " + back.id + ")"
	}
	res.Reason += takeOver + s.scaleDown(ctx, client, o)
	return res, nil
}

// rollbackClaim is who Rollback's claim names, as "rollback to COLOUR at
// TIME".
const rollbackClaim = "rollback"

// claim is a claim on the router (AnnotationDeploying) as read.
type claim struct {
	// by is the build, or rollbackClaim, that made it.
	by string
	to Colour
	// at is when it was made; zero when the claim does not say (written by
	// an older version, or unreadable), and then it never expires.
	at  time.Time
	raw string
}

// newClaim is the value of AnnotationDeploying for a claim made now.
func newClaim(by string, to Colour) string {
	return by + " to " + string(to) + " at " + time.Now().UTC().Format(time.RFC3339)
}

// claim reads the router's claim, if any.
func (s *blueGreenState) claim() (claim, bool) {
	return claimOf(s.router)
}

// claimOf reads rt's claim, if any.
func claimOf(rt router) (claim, bool) {
	raw := rt.meta().GetAnnotations()[AnnotationDeploying]
	rest, at, timed := strings.Cut(raw, " at ")
	by, to, ok := strings.Cut(rest, " to ")
	if !ok {
		return claim{}, false
	}
	c := claim{by: by, to: Colour(to), raw: raw}
	if timed {
		c.at, _ = time.Parse(time.RFC3339, at)
	}
	return c, true
}

// expired reports whether c is older than ttl.
func (c claim) expired(ttl time.Duration) bool {
	return ttl > 0 && !c.at.IsZero() && time.Since(c.at) > ttl
}

// takeOver says, for a Result's reason, that an expired claim was taken
// over.
func (s *blueGreenState) takeOver(c claim, o BlueGreenOptions) string {
	return fmt.Sprintf("took over the expired claim %s=%q on %s (older than %s, the longest an event may take: the invocation that made it is gone)",
		AnnotationDeploying, c.raw, s.router, o.ClaimExpiry)
}

func rollbackConflict(s *blueGreenState, err error) error {
	if apierrors.IsConflict(err) {
		return fmt.Errorf("%s changed since it was read, nothing was switched; run rollback again if still needed: %w", s.router, err)
	}
	return err
}

// blueGreenState is a blue-green target as read: the router, and the live
// and idle colours' Deployments.
type blueGreenState struct {
	t                            BlueGreenTarget
	router                       router
	liveColour, idleColour       Colour
	live, idle                   *appsv1.Deployment
	liveContainer, idleContainer *corev1.Container
	// idleList is the pod spec field that holds the idle container.
	idleList string
	// liveRec, idleRec, rolledBack and rejected are the live release, the
	// release the idle colour records, the release last rolled back and
	// the newest build a release gate rejected.
	liveRec, idleRec, rolledBack, rejected record
	// switchedBack, when the router was switched back by hand to the colour
	// it had left, says so: the build it records as live is then taken as
	// rolled back.
	switchedBack string
}

func readBlueGreen(ctx context.Context, client kube.Interface, t BlueGreenTarget) (*blueGreenState, error) {
	rt, err := getRouter(ctx, client, t)
	if err != nil {
		return nil, err
	}
	s := &blueGreenState{t: t, router: rt}
	if s.liveColour, err = rt.colour(); err != nil {
		return nil, err
	}
	s.idleColour = s.liveColour.Other()
	deployments := client.AppsV1().Deployments(t.Namespace)
	var list string
	for _, d := range []struct {
		colour    Colour
		into      **appsv1.Deployment
		container **corev1.Container
	}{{s.liveColour, &s.live, &s.liveContainer}, {s.idleColour, &s.idle, &s.idleContainer}} {
		name := t.DeploymentFor(d.colour)
		dep, err := deployments.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, fmt.Errorf("getting deployment %s/%s: %w", t.Namespace, name, err)
		}
		c, l, err := targetContainer(dep, t.Container)
		if err != nil {
			return nil, err
		}
		*d.into, *d.container, list = dep, c, l
	}
	s.idleList = list
	return s, s.readRecords()
}

// readRecords reads the releases the router and the colours record. Any
// record that cannot be read is an error: deciding without it could
// regress the target.
func (s *blueGreenState) readRecords() error {
	m := s.router.meta()
	routerObj := fmt.Sprintf("%s %s/%s", s.t.RouterKind, m.GetNamespace(), m.GetName())
	routerRec, err := annotationRecord(routerObj, m.GetAnnotations(), AnnotationBuildID, AnnotationBuildCreateTime)
	if err != nil {
		return err
	}
	if s.rolledBack, err = annotationRecord(routerObj, m.GetAnnotations(), AnnotationRolledBackBuildID, AnnotationRolledBackCreateTime); err != nil {
		return err
	}
	if s.rejected, err = annotationRecord(routerObj, m.GetAnnotations(), AnnotationRejectedBuildID, AnnotationRejectedCreateTime); err != nil {
		return err
	}
	liveRec, err := deploymentRecord(s.live)
	if err != nil {
		return err
	}
	if s.idleRec, err = deploymentRecord(s.idle); err != nil {
		return err
	}
	switch {
	case !routerRec.ok:
		// Before the first switch, the live Deployment records the release.
		s.liveRec = liveRec
	case routerRec.id != liveRec.id && routerRec.id == s.idleRec.id:
		// The router records as live the build the colour it does not
		// select holds: someone switched it back by hand. That build was
		// rolled back.
		s.liveRec = liveRec
		if !s.rolledBack.ok || routerRec.release().newerThan(s.rolledBack.id, s.rolledBack.at) {
			s.rolledBack = routerRec
		}
		s.switchedBack = fmt.Sprintf("%s was switched back by hand: it sends traffic to %s, though it records build %s, which %s holds, as live",
			s.router, s.live.Name, routerRec.id, s.idle.Name)
	default:
		s.liveRec = routerRec
	}
	return nil
}

// judge decides what r means for the target as read. It returns a reason
// to leave everything alone, or "" and whether the idle colour needs r's
// image (false: it already runs r's digest).
func (s *blueGreenState) judge(r Release) (deploy bool, reason string) {
	if sameImage(s.liveContainer.Image, r.Image.String()) {
		return false, fmt.Sprintf("already live: %s (%s) runs %s", s.live.Name, s.liveColour, r.Image.Digest)
	}
	if live := s.liveRec; live.ok {
		if live.id == r.BuildID {
			return false, fmt.Sprintf("build %s is already live on %s (the image has since been changed by hand to %s)", live.id, s.liveColour, s.liveContainer.Image)
		}
		if !r.newerThan(live.id, live.at) {
			return false, fmt.Sprintf("stale: build %s (created %s) is not newer than the live build %s (created %s)",
				r.BuildID, created(r.CreateTime), live.id, created(live.at))
		}
	}
	why := ""
	if s.switchedBack != "" {
		why = " (" + s.switchedBack + ")"
	}
	rb := s.rolledBack
	if rb.id == r.BuildID {
		return false, fmt.Sprintf("build %s was rolled back: it is not switched to again%s", rb.id, why)
	}
	if rb.ok && !r.newerThan(rb.id, rb.at) {
		return false, fmt.Sprintf("stale: build %s (created %s) is not newer than the rolled-back build %s (created %s)%s",
			r.BuildID, created(r.CreateTime), rb.id, created(rb.at), why)
	}
	if reason := rejectedReason(s.rejected, r); reason != "" {
		return false, reason
	}
	if sameImage(s.idleContainer.Image, r.Image.String()) {
		return false, ""
	}
	if idle := s.idleRec; idle.ok && idle.release().newerThan(r.BuildID, r.CreateTime) {
		return false, fmt.Sprintf("superseded: the newer build %s (created %s) is being deployed to %s",
			idle.id, created(idle.at), s.idle.Name)
	}
	return true, ""
}

// wantReplicas is the replica count a scaled-down colour is given: the live
// colour's, or 1 if that is scaled down too.
func (s *blueGreenState) wantReplicas() int32 {
	if n := replicas(s.live); n > 0 {
		return n
	}
	return 1
}

// switchPatch is the router patch that sends traffic to the idle colour and
// records annotations, with routerVersion as its precondition.
func (s *blueGreenState) switchPatch(routerVersion string, annotations map[string]any) map[string]any {
	annotations[AnnotationPreviousColour] = string(s.liveColour)
	annotations[AnnotationDeploying] = nil
	return map[string]any{
		"metadata": map[string]any{"resourceVersion": routerVersion, "annotations": annotations},
		"spec":     s.router.switchSpec(s.liveColour, s.idleColour),
	}
}

// dryRun sends the switch as a dry run and reports the patches.
func (s *blueGreenState) dryRun(ctx context.Context, sw map[string]any, sent [][]byte, o BlueGreenOptions) (Result, error) {
	res := Result{Outcome: Skipped, Previous: s.liveContainer.Image}
	if _, err := s.router.patch(ctx, sw, o); err != nil {
		return Result{}, err
	}
	res.Patch = []byte(strings.Join(append(stringsOf(sent), string(mustJSON(sw))), "\n"))
	res.Reason = fmt.Sprintf("dry run: the API server accepted the patches to switch %s from %s to %s; nothing was changed or waited for",
		s.router, s.liveColour, s.idleColour)
	return res, nil
}

// scaleDown scales the colour traffic left to 0 when o asks for it, once
// o.ScaleDownDelay has passed since the switch, and says what it did, for
// the Result's reason. The switch has happened: a failure here is reported,
// not returned, and leaves the colour running.
//
// It never scales down the colour that is live when it happens. After the
// delay it reads the colour, then the router, and leaves the colour running
// if traffic went back to it (a rollback), if a release or a rollback has
// claimed it (AnnotationDeploying), or if its spec changed. Otherwise it
// patches its replicas to 0 with the resourceVersion it read as the
// precondition. Every switch to a colour (BlueGreen, Rollback) first claims
// it on the router, then patches it with a change (AnnotationClaim) and the
// resourceVersion it read, and only then switches. So if that patch came
// before the scale-down read the colour, the claim came before it read the
// router, and the scale-down sees the claim (or the switch); if it came
// after, one of the two patches conflicts: the switch's (nothing is
// switched), or the scale-down's (it reads again and decides again), unless
// the scale-down's came before the switch read the colour, and the switch
// then finds it at 0 and scales it up before it switches. Only a writer that
// switches the router without these steps (kubectl patch) can race it.
func (s *blueGreenState) scaleDown(ctx context.Context, client kube.Interface, o BlueGreenOptions) string {
	if !o.ScaleDownOld || replicas(s.live) == 0 {
		return ""
	}
	if o.ScaleDownDelay > 0 {
		after := o.after
		if after == nil {
			after = time.After
		}
		select {
		case <-ctx.Done():
			return fmt.Sprintf("; left %s running: %v within the %s scale-down delay", s.live.Name, context.Cause(ctx), o.ScaleDownDelay)
		case <-after(o.ScaleDownDelay):
		}
	}
	var reason string
	err := retry.RetryOnConflict(conflictBackoff, func() error {
		var err error
		reason, err = s.scaleDownOnce(ctx, client, o)
		return err
	})
	switch {
	case apierrors.IsConflict(err):
		return fmt.Sprintf("; left %s running: it kept changing", s.live.Name)
	case err != nil:
		return fmt.Sprintf("; left %s running: scaling it to 0 failed: %v", s.live.Name, err)
	}
	return reason
}

func (s *blueGreenState) scaleDownOnce(ctx context.Context, client kube.Interface, o BlueGreenOptions) (string, error) {
	// The colour first, then the router: see scaleDown.
	name := s.live.Name
	old, err := client.AppsV1().Deployments(s.live.Namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("getting deployment %s/%s: %w", s.live.Namespace, name, err)
	}
	rt, err := getRouter(ctx, client, s.t)
	if err != nil {
		return "", err
	}
	if live, err := rt.colour(); err != nil {
		return "", err
	} else if live == s.liveColour {
		return fmt.Sprintf("; left %s running: traffic went back to it", name), nil
	}
	if c, ok := claimOf(rt); ok && c.to == s.liveColour {
		return fmt.Sprintf("; left %s running: %s records %s=%q", name, rt, AnnotationDeploying, c.raw), nil
	}
	if old.Generation != s.live.Generation {
		return fmt.Sprintf("; left %s running: another release has changed it since", name), nil
	}
	if _, _, err := patchDeployment(ctx, client, old, map[string]any{"spec": map[string]any{"replicas": 0}}, o); err != nil {
		return "", err
	}
	if o.ScaleDownDelay > 0 {
		return fmt.Sprintf("; scaled %s to 0 %s after the switch", name, o.ScaleDownDelay), nil
	}
	return fmt.Sprintf("; scaled %s to 0", name), nil
}

// patchDeployment sends patch to d, with d's resourceVersion as the
// precondition, and returns d as patched and the patch as sent.
func patchDeployment(ctx context.Context, client kube.Interface, d *appsv1.Deployment, patch map[string]any, o BlueGreenOptions) (*appsv1.Deployment, []byte, error) {
	m, _ := patch["metadata"].(map[string]any)
	if m == nil {
		m = map[string]any{}
		patch["metadata"] = m
	}
	m["resourceVersion"] = d.ResourceVersion
	data := mustJSON(patch)
	got, err := client.AppsV1().Deployments(d.Namespace).Patch(ctx, d.Name, types.StrategicMergePatchType, data, patchOptions(Options{DryRun: o.DryRun}))
	if err != nil {
		return d, data, fmt.Errorf("patching deployment %s/%s: %w", d.Namespace, d.Name, err)
	}
	return got, data, nil
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // Patches are maps of strings, numbers and typed API structs.
	}
	return b
}

func stringsOf(bs [][]byte) []string {
	s := make([]string, len(bs))
	for i, b := range bs {
		s[i] = string(b)
	}
	return s
}
