package rollout

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/util/retry"

	"github.com/onnewimage/onnewimage/internal/kube"
)

// AnnotationCanary, on the canary Deployment, records the canary in
// progress as JSON (see canaryProgress): the build, the step it is at, when
// that step's hold began, and which invocation drives it since when. Writing
// it with the Deployment's resourceVersion as the precondition is the claim
// that keeps two invocations from driving two canaries; the promotion and
// an abort remove it.
const AnnotationCanary = "onnewimage.dev/canary"

// TrackLabel is the pod label that tells the stable pods from the canary
// pods (values "stable" and "canary"): the manifests set it; a Service
// selecting both tracks splits traffic by their replica ratio.
const TrackLabel = "track"

var (
	// ErrCanaryAborted is wrapped when a canary was aborted: a canary pod
	// restarted or became unready, or the canary Deployment lost its
	// availability or its progress deadline. Traffic is back on the stable
	// Deployment and the build is recorded as rejected: delivering it again
	// cannot help.
	ErrCanaryAborted = errors.New("canary aborted")
	// ErrCanaryBusy is wrapped when another invocation is driving the
	// canary of the same build: the redelivery finds it promoted, or takes
	// over once that invocation's claim has expired.
	ErrCanaryBusy = errors.New("canary in progress in another invocation")
)

// CanaryTarget is a stable Deployment and its canary, Deployment-canary,
// both selected by one Service (the replica ratio splits traffic), or each
// selected by its own Service of the same name, weighted by an HTTPRoute.
type CanaryTarget struct {
	Namespace, Deployment, Container string
	// HTTPRoute, when set, names the Gateway API HTTPRoute whose rules
	// sending traffic to the Service Deployment split it with the Service
	// Deployment-canary by their weights; Routes reaches it.
	HTTPRoute string
	Routes    HTTPRouteClient
}

// CanaryDeployment is the name of the canary Deployment.
func (t CanaryTarget) CanaryDeployment() string { return t.Deployment + "-canary" }

// String formats the target as namespace/deployment(+canary):container.
func (t CanaryTarget) String() string {
	s := fmt.Sprintf("%s/%s(+%s):%s", t.Namespace, t.Deployment, t.CanaryDeployment(), t.Container)
	if t.HTTPRoute != "" {
		s += " via httproute/" + t.HTTPRoute
	}
	return s
}

// CanaryOptions adjust how a canary runs.
type CanaryOptions struct {
	// Steps are the shares of traffic, in percent, the canary takes in turn.
	Steps []int
	// Pause is how long each step is held while the canary's pods are
	// watched.
	Pause time.Duration
	// Timeout bounds each wait for a rollout (each step's and the
	// promotion's); zero leaves only ctx to bound it.
	Timeout time.Duration
	// ClaimExpiry is the age past which another invocation's claim of the
	// same build is taken as left behind by an invocation that died: the
	// longest one event may take. Zero: claims never expire.
	ClaimExpiry time.Duration
	// DryRun sends the first step's patch as a dry run and stops there.
	DryRun bool
	// Gates run, each to completion, before the canary takes any traffic.
	// A gate that fails rejects the build: nothing moves.
	Gates Gates
}

// canaryProgress is AnnotationCanary's value.
type canaryProgress struct {
	Build      string    `json:"build"`
	CreateTime time.Time `json:"createTime"`
	Image      string    `json:"image"`
	// Step is the index in the steps of the step in progress; Percent its
	// share.
	Step    int `json:"step"`
	Percent int `json:"percent"`
	// StepStart is when the step's hold began (its rollout done); zero
	// before.
	StepStart time.Time `json:"stepStart,omitzero"`
	// Holder identifies the invocation driving the canary, since
	// ClaimedAt; "" when it let go (a redelivery then resumes at once).
	Holder    string    `json:"holder,omitempty"`
	ClaimedAt time.Time `json:"claimedAt"`
	// Promoting is set once every step held clean.
	Promoting bool `json:"promoting,omitempty"`
}

// readProgress reads d's AnnotationCanary; nil when there is none.
func readProgress(d *appsv1.Deployment) (*canaryProgress, error) {
	raw := d.Annotations[AnnotationCanary]
	if raw == "" {
		return nil, nil
	}
	var p canaryProgress
	if err := json.Unmarshal([]byte(raw), &p); err != nil || p.Build == "" {
		return nil, fmt.Errorf("%w: %s has annotation %s=%q, which is not a canary's progress: correct it by hand or remove it",
			ErrRecordUnreadable, deploymentName(d), AnnotationCanary, raw)
	}
	return &p, nil
}

// CanaryReplicas is the canary's replica count for a share of percent
// next to stable replicas, when one Service selects both: round(percent /
// (100 - percent) x stable), at least 1. The share that really gives is
// CanaryShare's.
func CanaryReplicas(percent int, stable int32) int32 {
	n := int32(math.Round(float64(percent) / float64(100-percent) * float64(stable)))
	return max(n, 1)
}

// CanaryShare is the share of traffic, in percent, canary replicas next
// to stable replicas really take behind one Service.
func CanaryShare(canary, stable int32) float64 {
	if canary+stable == 0 {
		return 0
	}
	return 100 * float64(canary) / float64(canary+stable)
}

// Canary releases r through t's canary Deployment: it claims the canary
// (AnnotationCanary, compare-and-set), then for each of o.Steps sets the
// canary's image and replica count, waits until it is rolled out, and holds
// the step for o.Pause while watching the canary's pods. Once every step
// held clean it promotes r to the stable Deployment with the rolling
// strategy's patch (so the same records and ordering rules apply), waits
// for it, and scales the canary to 0.
//
// A restart of a container of this release's canary pods, a canary pod
// becoming unready after it was ready, or the canary Deployment losing
// availability or exceeding its progress deadline aborts: the canary goes
// to 0 replicas first (traffic back to stable), then the stable
// Deployment records r as rejected (LabelRejectedBuild, as a failed gate
// does) so that neither r nor an older build starts again; the error wraps
// ErrCanaryAborted.
//
// A redelivery of r resumes at the recorded step (the rest of its hold
// only); a newer build takes the canary over from an older one; an older
// build is skipped.
func Canary(ctx context.Context, client kube.Interface, t CanaryTarget, r Release, o CanaryOptions) (Result, error) {
	if errs := validation.IsValidLabelValue(r.BuildID); len(errs) > 0 {
		return Result{}, fmt.Errorf("%w: build ID %q is not a valid label value (%s), so label %s cannot record it",
			ErrBuildIDInvalid, r.BuildID, strings.Join(errs, "; "), LabelRejectedBuild)
	}
	c := &canaryRun{client: client, t: t, r: r, o: o, holder: newHolder()}
	var res Result
	err := retry.OnError(conflictBackoff, rereadable, func() error {
		var err error
		res, err = c.once(ctx)
		return err
	})
	if err != nil && !errors.Is(err, ErrCanaryAborted) && !errors.Is(err, ErrCanaryBusy) {
		c.letGo(ctx)
	}
	if err != nil {
		return Result{}, err
	}
	return res, nil
}

// canaryRun is one invocation's canary of one release.
type canaryRun struct {
	client kube.Interface
	t      CanaryTarget
	r      Release
	o      CanaryOptions
	// holder identifies this invocation in AnnotationCanary.
	holder string
	// steps says what each step did, for the Result's reason.
	steps []string
	// stableReplicas is the stable Deployment's replica count, as last
	// read.
	stableReplicas int32
	// took says, for the Result's reason, whose canary this one took over.
	took string
	// weights are the HTTPRoute's weights, as last set.
	weights string
	// rolledOut is the resourceVersion at which the canary was last seen
	// rolled out.
	rolledOut string
}

func newHolder() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func (c *canaryRun) deployments() interface {
	Get(context.Context, string, metav1.GetOptions) (*appsv1.Deployment, error)
} {
	return c.client.AppsV1().Deployments(c.t.Namespace)
}

func (c *canaryRun) get(ctx context.Context, name string) (*appsv1.Deployment, error) {
	d, err := c.deployments().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("getting deployment %s/%s: %w", c.t.Namespace, name, err)
	}
	return d, nil
}

// once reads the target, decides, and runs the canary from the step it
// decided on. A Conflict or errChanged means: read again, decide again.
func (c *canaryRun) once(ctx context.Context) (Result, error) {
	stable, err := c.get(ctx, c.t.Deployment)
	if err != nil {
		return Result{}, err
	}
	canary, err := c.get(ctx, c.t.CanaryDeployment())
	if err != nil {
		return Result{}, err
	}
	sc, _, err := targetContainer(stable, c.t.Container)
	if err != nil {
		return Result{}, err
	}
	_, list, err := targetContainer(canary, c.t.Container)
	if err != nil {
		return Result{}, err
	}
	res := Result{Outcome: Skipped, Previous: sc.Image}
	reason, ok, err := superseded(stable, sc.Image, c.r)
	if err != nil {
		return Result{}, err
	}
	p, err := readProgress(canary)
	if err != nil {
		return Result{}, err
	}
	if c.t.HTTPRoute != "" {
		// A route that cannot split exactly is refused before anything moves.
		if _, err := c.t.readRoute(ctx); err != nil {
			return Result{}, err
		}
	}
	if !ok {
		res.Reason = reason
		if p != nil && p.Build == c.r.BuildID && sameImage(sc.Image, c.r.Image.String()) {
			// Promoted by an invocation that died before it scaled the
			// canary down.
			if _, err := c.toStable(ctx, always); err != nil {
				return Result{}, err
			}
			res.Reason += fmt.Sprintf("; scaled %s, left at %d%%, to 0", c.t.CanaryDeployment(), p.Percent)
		}
		return res, nil
	}
	start, promoting := 0, false
	var stepStart time.Time
	switch {
	case p == nil:
	case p.Build == c.r.BuildID:
		if p.Holder != "" && p.Holder != c.holder && !claimExpired(p.ClaimedAt, c.o.ClaimExpiry) {
			return Result{}, fmt.Errorf("%w: %s is at %d%% for build %s, claimed at %s", ErrCanaryBusy,
				c.t.CanaryDeployment(), p.Percent, p.Build, p.ClaimedAt.UTC().Format(time.RFC3339))
		}
		start, stepStart, promoting = min(p.Step, len(c.o.Steps)-1), p.StepStart, p.Promoting
		if p.Holder != c.holder {
			c.took = fmt.Sprintf("resumed at %d%%; ", p.Percent)
		}
	case (Release{BuildID: p.Build, CreateTime: p.CreateTime}).newerThan(c.r.BuildID, c.r.CreateTime):
		res.Reason = fmt.Sprintf("superseded: the newer build %s (created %s) is on its canary (%s at %d%%)",
			p.Build, created(p.CreateTime), c.t.CanaryDeployment(), p.Percent)
		return res, nil
	default:
		c.took = fmt.Sprintf("stopped the canary of the older build %s at %d%%; ", p.Build, p.Percent)
	}
	c.steps = c.steps[:min(len(c.steps), start)]

	if !promoting && !c.o.DryRun {
		if err := c.runGates(ctx); err != nil {
			return Result{}, err
		}
	}
	if c.t.HTTPRoute != "" && !c.o.DryRun && (p == nil || p.Build != c.r.BuildID) {
		// The canary's pods are about to run this release: whatever share
		// the route gives them (another build's canary) goes back to
		// stable first.
		if _, err := c.t.setWeights(ctx, 0, false, false, nil); err != nil {
			return Result{}, err
		}
	}

	// Claim the canary with its first (or resumed) step: the patch sets
	// the image, the replicas and the progress, with the resourceVersion
	// read above as the precondition. A canary that was promoting is
	// claimed by the promotion's own compare-and-set.
	if promoting {
		start = len(c.o.Steps)
	} else if canary, err = c.step(ctx, canary, list, start, stepStart); err != nil {
		return Result{}, err
	}
	if c.o.DryRun {
		res.Reason = fmt.Sprintf("dry run: the API server accepted the patch starting the canary of %s at %d%%; nothing was changed or waited for",
			c.t.CanaryDeployment(), c.o.Steps[start])
		return res, nil
	}
	if c.t.HTTPRoute != "" && !promoting && (p == nil || p.Build != c.r.BuildID) {
		// Claimed: the invocation that drove another build's canary writes
		// no weights any more (see moveWeights), but one it had in flight
		// may have landed since the reset above. Reset again, before this
		// release's pods are ready.
		if _, err := c.t.setWeights(ctx, 0, false, false, c.stillClaimed); err != nil {
			return Result{}, err
		}
	}

	for i := start; i < len(c.o.Steps); i++ {
		if i > start {
			if canary, err = c.step(ctx, canary, list, i, time.Time{}); err != nil {
				return Result{}, err
			}
		}
		if canary, err = c.rollOut(ctx, canary, i); err != nil {
			return Result{}, err
		}
		seen, err := c.check(ctx, canary, i)
		if err != nil {
			return Result{}, err
		}
		if err := c.moveWeights(ctx, i); err != nil {
			return Result{}, err
		}
		held := c.o.Pause
		if i == start && !stepStart.IsZero() {
			held -= time.Since(stepStart)
		} else {
			stepStart = time.Now()
			if canary, err = c.progress(ctx, canary, i, stepStart, false); err != nil {
				return Result{}, err
			}
		}
		if canary, err = c.hold(ctx, canary, i, seen, max(held, 0)); err != nil {
			return Result{}, err
		}
		stepStart = time.Time{}
		c.steps = append(c.steps, c.describeStep(i, replicas(canary)))
	}

	promoted, err := c.promote(ctx, canary)
	if err != nil {
		return Result{}, err
	}
	res.Outcome, res.Patch = Deployed, promoted.Patch
	res.Reason = fmt.Sprintf("%scanary %s, each held %s%s; promoted: %s; %s scaled to 0",
		c.took, strings.Join(c.steps, ", "), c.o.Pause, c.o.Gates.summary(), promoted.Reason, c.t.CanaryDeployment())
	return res, nil
}

// runGates runs the target's gates, if any, before the canary takes any
// traffic: with the replica ratio, a canary pod that is ready takes its
// share, so the gates run before the first step's patch. A gate that
// fails rejects the build (the abort's record, nothing to scale down); one
// that is not done in time is retried, and the redelivery waits on the same
// Job. On a resume the gates' Jobs are found complete at once.
func (c *canaryRun) runGates(ctx context.Context) error {
	err := c.o.Gates.run(ctx, c.client, c.r, "")
	if !errors.Is(err, ErrGateFailed) {
		return err
	}
	if rerr := c.reject(ctx); rerr != nil {
		return fmt.Errorf("%w; recording build %s as rejected failed (a redelivery may run its gates again): %v", err, c.r.BuildID, rerr)
	}
	return fmt.Errorf("%w; build %s is recorded as rejected (label %s): it is not deployed again", err, c.r.BuildID, LabelRejectedBuild)
}

func (c *canaryRun) describeStep(i int, n int32) string {
	if c.t.HTTPRoute != "" {
		return fmt.Sprintf("%d%% (weights %s; %d replicas beside %d)", c.o.Steps[i], c.weights, n, c.stableReplicas)
	}
	return fmt.Sprintf("%d%% (%d replicas beside %d: really %.0f%%)", c.o.Steps[i], n, c.stableReplicas, CanaryShare(n, c.stableReplicas))
}

// step patches the canary to step i: the image, the replica count, the
// release annotations and the progress (held since stepStart, zero when
// the hold has not begun), with canary's resourceVersion as precondition.
func (c *canaryRun) step(ctx context.Context, canary *appsv1.Deployment, list string, i int, stepStart time.Time) (*appsv1.Deployment, error) {
	stable, err := c.get(ctx, c.t.Deployment)
	if err != nil {
		return nil, err
	}
	c.stableReplicas = replicas(stable)
	annotations := releaseAnnotations(c.r)
	annotations[AnnotationCanary] = c.progressValue(i, stepStart, false)
	patch := map[string]any{
		"metadata": map[string]any{"annotations": annotations},
		"spec": map[string]any{
			"replicas": c.replicas(c.o.Steps[i]),
			"template": map[string]any{"spec": containerPatch(list, c.t.Container, c.r.Image.String())},
		},
	}
	return c.patchCanary(ctx, canary, patch, c.o.DryRun)
}

// moveWeights gives the canary, rolled out, step i's share on the
// HTTPRoute, while the canary is still this invocation's (a newer build
// that took it over has taken the traffic back to stable: no share moves
// back to it). Without an HTTPRoute the replica ratio moved with the
// rollout.
func (c *canaryRun) moveWeights(ctx context.Context, i int) error {
	if c.t.HTTPRoute == "" {
		return nil
	}
	var err error
	if c.weights, err = c.t.setWeights(ctx, c.o.Steps[i], true, false, c.stillClaimed); err != nil {
		return err
	}
	// The claim was checked before the route was read: one taken between
	// by another build, or an abort (whose reset found nothing to undo),
	// did not stop the write. Take the share back from pods that are not
	// this release's any more (a redelivery of this build moves the same
	// weights: left alone).
	canary, err := c.get(ctx, c.t.CanaryDeployment())
	if err != nil {
		return err
	}
	if p, _ := readProgress(canary); p == nil || p.Build != c.r.BuildID {
		if _, err := c.t.setWeights(ctx, 0, false, false, nil); err != nil {
			// Not errChanged: a read again would skip, leaving the share.
			return fmt.Errorf("deployment %s was claimed by another release after the weights moved, and taking them back failed, traffic may still reach it: %w", deploymentName(canary), err)
		}
		return fmt.Errorf("%w: deployment %s was claimed by another release", errChanged, deploymentName(canary))
	}
	return nil
}

// stillClaimed fails with errChanged once the canary is no longer this
// invocation's.
func (c *canaryRun) stillClaimed(ctx context.Context) error {
	canary, err := c.get(ctx, c.t.CanaryDeployment())
	if err != nil {
		return err
	}
	if p, _ := readProgress(canary); p == nil || p.Holder != c.holder {
		return fmt.Errorf("%w: deployment %s was claimed by another release", errChanged, deploymentName(canary))
	}
	return nil
}

// replicas is the canary's replica count for a share of percent: by the
// route's weights (RouteCanaryReplicas) or the replica ratio
// (CanaryReplicas).
func (c *canaryRun) replicas(percent int) int32 {
	if c.t.HTTPRoute != "" {
		return RouteCanaryReplicas(percent, c.stableReplicas)
	}
	return CanaryReplicas(percent, c.stableReplicas)
}

// progress records that step i's hold began at stepStart, or that the
// canary is promoting.
func (c *canaryRun) progress(ctx context.Context, canary *appsv1.Deployment, i int, stepStart time.Time, promoting bool) (*appsv1.Deployment, error) {
	patch := map[string]any{"metadata": map[string]any{"annotations": map[string]any{
		AnnotationCanary: c.progressValue(i, stepStart, promoting)}}}
	return c.patchCanary(ctx, canary, patch, false)
}

// patchCanary sends patch to canary with its resourceVersion as the
// precondition. On Conflict it reads the canary again and sends the patch
// again while the claim (AnnotationCanary) is still the one canary had:
// another writer (the controller's status, an autoscaler) changed it.
// Once the claim has changed, the Conflict is returned: read again and
// decide again.
func (c *canaryRun) patchCanary(ctx context.Context, canary *appsv1.Deployment, patch map[string]any, dryRun bool) (*appsv1.Deployment, error) {
	for attempt := 1; ; attempt++ {
		got, _, err := patchDeployment(ctx, c.client, canary, patch, BlueGreenOptions{DryRun: dryRun})
		if !apierrors.IsConflict(err) || attempt == conflictBackoff.Steps {
			return got, err
		}
		fresh, gerr := c.get(ctx, canary.Name)
		if gerr != nil {
			return nil, gerr
		}
		if fresh.Annotations[AnnotationCanary] != canary.Annotations[AnnotationCanary] {
			return nil, err
		}
		canary = fresh
	}
}

func (c *canaryRun) progressValue(i int, stepStart time.Time, promoting bool) string {
	return string(mustJSON(canaryProgress{
		Build: c.r.BuildID, CreateTime: c.r.CreateTime.UTC(), Image: c.r.Image.String(),
		Step: i, Percent: c.o.Steps[i], StepStart: stepStart.UTC(),
		Holder: c.holder, ClaimedAt: time.Now().UTC(), Promoting: promoting,
	}))
}

// rollOut waits until the canary is rolled out at step i. A progress
// deadline aborts; the rollout timeout is returned (retried: the
// redelivery resumes at the step).
func (c *canaryRun) rollOut(ctx context.Context, canary *appsv1.Deployment, i int) (*appsv1.Deployment, error) {
	waitCtx, cancel := waitContext(ctx, c.o.Timeout)
	defer cancel()
	got, err := waitRolledOut(waitCtx, c.client, canary, c.t.Container, c.r.Image.String(), c.o.Timeout)
	var deadline *deadlineError
	if errors.As(err, &deadline) {
		return nil, c.abort(ctx, i, "", fmt.Sprintf("%s exceeded its progress deadline%s", canary.Name, progressingMessage(got)))
	}
	if err != nil {
		return nil, fmt.Errorf("canary at %d%%: %w", c.o.Steps[i], err)
	}
	c.rolledOut = got.ResourceVersion
	return got, nil
}

// canaryPods is what check saw of the canary's pods, for hold to watch on
// from: the selector, the list's resourceVersion, and the pods of this
// release seen ready.
type canaryPods struct {
	selector labels.Selector
	listed   string
	ready    map[string]bool
}

// check lists the canary's pods, rolled out at step i, and aborts if one
// of this release's already restarted or became unready, or the canary
// Deployment is in trouble: before the step's share of traffic moves, so a
// release that failed while rolling out never gets it.
func (c *canaryRun) check(ctx context.Context, canary *appsv1.Deployment, i int) (canaryPods, error) {
	pods := c.client.CoreV1().Pods(c.t.Namespace)
	selector, err := metav1.LabelSelectorAsSelector(canary.Spec.Selector)
	if err != nil {
		return canaryPods{}, fmt.Errorf("selector of deployment %s/%s: %w", canary.Namespace, canary.Name, err)
	}
	list, err := pods.List(ctx, metav1.ListOptions{LabelSelector: selector.String()})
	if err != nil {
		return canaryPods{}, fmt.Errorf("listing the pods of deployment %s/%s: %w", canary.Namespace, canary.Name, err)
	}
	// The pods as they were when the canary was seen rolled out: those of
	// this release ready then were counted available, so one unready now
	// became unready after it was ready. One created since is starting.
	ready := map[string]bool{}
	if c.rolledOut != "" {
		then, err := pods.List(ctx, metav1.ListOptions{LabelSelector: selector.String(),
			ResourceVersion: c.rolledOut, ResourceVersionMatch: metav1.ResourceVersionMatchExact})
		if err == nil { // Compacted away (Gone): only the pods seen ready from now on count.
			for j := range then.Items {
				if c.ofRelease(&then.Items[j]) && podReady(&then.Items[j]) {
					ready[then.Items[j].Name] = true
				}
			}
		}
	}
	for j := range list.Items {
		if pod, why := c.podProblem(&list.Items[j], ready); why != "" {
			return canaryPods{}, c.abort(ctx, i, pod, why)
		}
	}
	if why := deploymentProblem(canary); why != "" {
		return canaryPods{}, c.abort(ctx, i, "", why)
	}
	return canaryPods{selector: selector, listed: list.ResourceVersion, ready: ready}, nil
}

// hold watches the canary's pods, from what check saw, and its Deployment
// for d, and aborts on the first sign of trouble (see podProblem and
// deploymentProblem).
func (c *canaryRun) hold(ctx context.Context, canary *appsv1.Deployment, i int, seen canaryPods, d time.Duration) (*appsv1.Deployment, error) {
	selector, ready := seen.selector, seen.ready
	watchCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	pw, err := c.client.CoreV1().Pods(c.t.Namespace).Watch(watchCtx, metav1.ListOptions{LabelSelector: selector.String(), ResourceVersion: seen.listed})
	if err != nil {
		return nil, fmt.Errorf("watching the pods of deployment %s/%s: %w", canary.Namespace, canary.Name, err)
	}
	defer pw.Stop()
	dw, err := c.client.AppsV1().Deployments(canary.Namespace).Watch(watchCtx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("metadata.name", canary.Name).String(), ResourceVersion: canary.ResourceVersion})
	if err != nil {
		return nil, fmt.Errorf("watching deployment %s/%s: %w", canary.Namespace, canary.Name, err)
	}
	defer dw.Stop()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case <-timer.C:
			return canary, nil
		case <-ctx.Done():
			return nil, fmt.Errorf("holding the canary at %d%%: %w", c.o.Steps[i], context.Cause(ctx))
		case ev, ok := <-pw.ResultChan():
			if !ok {
				return nil, fmt.Errorf("%w: the watch of the pods of %s ended", errChanged, canary.Name)
			}
			pod, isPod := ev.Object.(*corev1.Pod)
			if !isPod || ev.Type == watch.Deleted || !selector.Matches(labels.Set(pod.Labels)) {
				continue
			}
			if name, why := c.podProblem(pod, ready); why != "" {
				return nil, c.abort(ctx, i, name, why)
			}
		case ev, ok := <-dw.ResultChan():
			if !ok {
				return nil, fmt.Errorf("%w: the watch of %s ended", errChanged, canary.Name)
			}
			got, isDeployment := ev.Object.(*appsv1.Deployment)
			if !isDeployment || got.Name != canary.Name {
				continue
			}
			if ev.Type == watch.Deleted {
				return nil, fmt.Errorf("%w: deployment %s/%s was deleted", errChanged, canary.Namespace, canary.Name)
			}
			if p, _ := readProgress(got); p == nil || p.Holder != c.holder {
				return nil, fmt.Errorf("%w: deployment %s/%s was claimed by another release", errChanged, canary.Namespace, canary.Name)
			}
			canary = got
			if why := deploymentProblem(got); why != "" {
				return nil, c.abort(ctx, i, "", why)
			}
		}
	}
}

// podProblem says why pod, when it runs this release, is a reason to
// abort: a container restarted (at any time since the pod was created), or
// the pod was ready and is not any more. ready remembers the pods seen
// ready.
func (c *canaryRun) podProblem(pod *corev1.Pod, ready map[string]bool) (string, string) {
	if !c.ofRelease(pod) {
		return "", "" // Another release's pod, on its way out.
	}
	for _, st := range append(append([]corev1.ContainerStatus(nil), pod.Status.InitContainerStatuses...), pod.Status.ContainerStatuses...) {
		if st.RestartCount == 0 {
			continue
		}
		why := fmt.Sprintf("container %s restarted %d times", st.Name, st.RestartCount)
		if term := st.LastTerminationState.Terminated; term != nil {
			why = fmt.Sprintf("restarted, exit code %d", term.ExitCode)
			if detail := strings.TrimSpace(strings.Join(nonEmpty(term.Reason, term.Message), ": ")); detail != "" {
				why += ": " + detail
			}
			if st.Name != c.t.Container {
				why = "container " + st.Name + " " + why
			}
		}
		return pod.Name, why
	}
	if podReady(pod) {
		ready[pod.Name] = true
	} else if ready[pod.Name] {
		return pod.Name, "became unready after it was ready"
	}
	return "", ""
}

// ofRelease reports whether pod runs this release.
func (c *canaryRun) ofRelease(pod *corev1.Pod) bool {
	ct, _ := findContainer(&pod.Spec, c.t.Container)
	return ct != nil && sameImage(ct.Image, c.r.Image.String())
}

// podReady reports whether pod's Ready condition is True.
func podReady(pod *corev1.Pod) bool {
	for _, cond := range pod.Status.Conditions {
		if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

func nonEmpty(ss ...string) []string {
	var out []string
	for _, s := range ss {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

// deploymentProblem says why the canary Deployment d, rolled out before,
// is a reason to abort: it exceeded its progress deadline, or it lost
// availability.
func deploymentProblem(d *appsv1.Deployment) string {
	if _, _, err := Status(d); err != nil {
		return err.Error() + progressingMessage(d)
	}
	if d.Status.ObservedGeneration < d.Generation {
		return "" // Not observed yet: judged once it is.
	}
	for _, cond := range d.Status.Conditions {
		if cond.Type == appsv1.DeploymentAvailable && cond.Status == corev1.ConditionFalse {
			return fmt.Sprintf("deployment %q lost availability: %s", d.Name, cond.Message)
		}
	}
	if d.Status.AvailableReplicas < replicas(d) {
		return fmt.Sprintf("deployment %q lost availability: %d of %d replicas available", d.Name, d.Status.AvailableReplicas, replicas(d))
	}
	return ""
}

// promote records that the canary is promoting (compare-and-set: it is
// still this invocation's), patches the stable Deployment as Rolling does,
// waits until it is rolled out, and scales the canary to 0.
func (c *canaryRun) promote(ctx context.Context, canary *appsv1.Deployment) (Result, error) {
	last := len(c.o.Steps) - 1
	canary, err := c.progress(ctx, canary, last, time.Time{}, true)
	if err != nil {
		return Result{}, err
	}
	res, err := Rolling(ctx, c.client, Target{Namespace: c.t.Namespace, Deployment: c.t.Deployment, Container: c.t.Container}, c.r, Options{})
	if err != nil {
		return Result{}, fmt.Errorf("promoting: %w", err)
	}
	stable, err := c.get(ctx, c.t.Deployment)
	if err != nil {
		return Result{}, err
	}
	waitCtx, cancel := waitContext(ctx, c.o.Timeout)
	defer cancel()
	if _, err := waitRolledOut(waitCtx, c.client, stable, c.t.Container, c.r.Image.String(), c.o.Timeout); err != nil {
		return Result{}, fmt.Errorf("promoting: %w", err)
	}
	if _, err := c.toStable(ctx, c.held); err != nil {
		return Result{}, err
	}
	return res, nil
}

// toStable takes all traffic back to stable (the HTTPRoute's weights to
// 100/0, first), then scales the canary to 0 and removes its progress, and
// returns the patch sent. take decides, from the progress the canary
// records when it is read (again after a Conflict), whether to: true, or
// false to leave it as it is (nil), or an error to stop with. When the
// weights cannot be set the canary is left running: it may still take
// traffic.
func (c *canaryRun) toStable(ctx context.Context, take func(*canaryProgress) (bool, error)) ([]byte, error) {
	var sent []byte
	err := retry.RetryOnConflict(conflictBackoff, func() error {
		canary, err := c.get(ctx, c.t.CanaryDeployment())
		if err != nil {
			return err
		}
		p, _ := readProgress(canary)
		if ok, err := take(p); !ok || err != nil {
			return err
		}
		if c.t.HTTPRoute != "" {
			if c.weights, err = c.t.setWeights(ctx, 0, false, c.o.DryRun, nil); err != nil {
				return err
			}
		}
		patch := map[string]any{
			"metadata": map[string]any{"annotations": map[string]any{AnnotationCanary: nil}},
			"spec":     map[string]any{"replicas": 0},
		}
		_, sent, err = patchDeployment(ctx, c.client, canary, patch, BlueGreenOptions{DryRun: c.o.DryRun})
		return err
	})
	return sent, err
}

// always is toStable's take for an abort: whoever holds the canary.
func always(*canaryProgress) (bool, error) { return true, nil }

// held is toStable's take after a promotion: only while this invocation
// still holds the canary.
func (c *canaryRun) held(p *canaryProgress) (bool, error) {
	return p != nil && p.Holder == c.holder, nil
}

// abort takes traffic back to stable (the canary to 0), records r as
// rejected on the stable Deployment's high-water mark, and returns the
// error that says at which step, which pod, and why.
func (c *canaryRun) abort(ctx context.Context, i int, pod, why string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	msg := fmt.Sprintf("canary aborted at %d%%: ", c.o.Steps[i])
	if pod != "" {
		msg += "pod " + pod + " "
	}
	msg += why
	if _, err := c.toStable(ctx, always); err != nil {
		return fmt.Errorf("%s; taking traffic back from %s failed, traffic may still reach it: %w", msg, c.t.CanaryDeployment(), err)
	}
	if err := c.reject(ctx); err != nil {
		return &abortError{fmt.Sprintf("%s; traffic is back on %s, but recording build %s as rejected failed (a redelivery may start it again): %v",
			msg, c.t.Deployment, c.r.BuildID, err)}
	}
	return &abortError{fmt.Sprintf("%s; traffic is back on %s, and build %s is recorded as rejected (label %s): it is not deployed again",
		msg, c.t.Deployment, c.r.BuildID, LabelRejectedBuild)}
}

// reject records c.r as rejected on the stable Deployment (see
// recordRejection): neither c.r nor an older build is deployed again.
func (c *canaryRun) reject(ctx context.Context) error {
	return recordRejection(ctx, c.client, Target{Namespace: c.t.Namespace, Deployment: c.t.Deployment, Container: c.t.Container},
		c.r, Options{DryRun: c.o.DryRun})
}

// ErrNoCanary is wrapped by AbortCanary's error when no canary is in
// progress: nothing was changed.
var ErrNoCanary = errors.New("no canary in progress")

// AbortCanary stops the canary in progress on t at once: the canary goes
// to 0 replicas and loses its progress (compare-and-set), so the invocation
// driving it stops without promoting, and the build is recorded as
// rejected on the stable Deployment's high-water mark, so that its
// redelivery does not start it again. With no canary in progress the
// error wraps ErrNoCanary.
func AbortCanary(ctx context.Context, client kube.Interface, t CanaryTarget, o Options) (Result, error) {
	c := &canaryRun{client: client, t: t, o: CanaryOptions{DryRun: o.DryRun}}
	stable, err := c.get(ctx, t.Deployment)
	if err != nil {
		return Result{}, err
	}
	sc, _, err := targetContainer(stable, t.Container)
	if err != nil {
		return Result{}, err
	}
	canary, err := c.get(ctx, t.CanaryDeployment())
	if err != nil {
		return Result{}, err
	}
	p, err := readProgress(canary)
	if err != nil {
		return Result{}, err
	}
	if p == nil {
		return Result{}, fmt.Errorf("%w: %s records none (annotation %s)", ErrNoCanary, deploymentName(canary), AnnotationCanary)
	}
	c.r = Release{BuildID: p.Build, CreateTime: p.CreateTime}
	// The invocation driving the canary may record a step meanwhile (a
	// Conflict): still this build's canary, still aborted.
	patch, err := c.toStable(ctx, func(q *canaryProgress) (bool, error) {
		if q == nil || q.Build != p.Build {
			return false, fmt.Errorf("%w: %s no longer records the canary of build %s", errChanged, deploymentName(canary), p.Build)
		}
		return true, nil
	})
	if err != nil {
		return Result{}, err
	}
	if t.HTTPRoute != "" {
		// The invocation driving the canary checks its claim before each
		// weights write: one checked before the patch above may have
		// landed since the reset. Reset again, now that no claim holds.
		if _, err := t.setWeights(ctx, 0, false, o.DryRun, nil); err != nil {
			return Result{}, fmt.Errorf("%s is scaled to 0, but taking traffic back from it failed, traffic may still reach it: %w", t.CanaryDeployment(), err)
		}
	}
	res := Result{Outcome: Deployed, Previous: sc.Image, Patch: patch}
	if err := c.reject(ctx); err != nil {
		return Result{}, fmt.Errorf("%s is scaled to 0, traffic is back on %s, but recording build %s as rejected failed (a redelivery may start it again): %w",
			t.CanaryDeployment(), t.Deployment, p.Build, err)
	}
	route := ""
	if t.HTTPRoute != "" {
		route = fmt.Sprintf("httproute %s weighted %d/0, ", t.HTTPRoute, 100)
	}
	res.Reason = fmt.Sprintf("aborted the canary of build %s at %d%%: %s%s scaled to 0, traffic back on %s; build %s is recorded as rejected (label %s): it is not deployed again",
		p.Build, p.Percent, route, t.CanaryDeployment(), t.Deployment, p.Build, LabelRejectedBuild)
	if o.DryRun {
		res.Outcome, res.Reason = Skipped, "dry run: the API server accepted the patches to abort the canary of build "+p.Build+"; nothing was changed"
	}
	return res, nil
}

// InspectCanary is Inspect of t's stable Deployment, with the canary in
// progress, if any, as Deploying: "build B at P% on DEPLOYMENT-canary (N
// replicas), claimed at T".
func InspectCanary(ctx context.Context, client kube.Interface, t CanaryTarget) (State, error) {
	s, err := Inspect(ctx, client, Target{Namespace: t.Namespace, Deployment: t.Deployment, Container: t.Container})
	if err != nil {
		return State{}, err
	}
	canary, err := client.AppsV1().Deployments(t.Namespace).Get(ctx, t.CanaryDeployment(), metav1.GetOptions{})
	if err != nil {
		return State{}, fmt.Errorf("getting deployment %s/%s: %w", t.Namespace, t.CanaryDeployment(), err)
	}
	p, err := readProgress(canary)
	switch {
	case err != nil:
		s.Problems = append(s.Problems, err.Error())
	case p != nil:
		s.Deploying = fmt.Sprintf("build %s at %d%% on %s (%d replicas), claimed at %s", p.Build, p.Percent, canary.Name, replicas(canary),
			p.ClaimedAt.UTC().Format(time.RFC3339))
		if !p.StepStart.IsZero() {
			s.Deploying += ", held since " + p.StepStart.UTC().Format(time.RFC3339)
		}
		if p.Promoting {
			s.Deploying += ", promoting"
		}
		if p.Holder == "" {
			s.Deploying += " (its invocation stopped: the redelivery resumes it)"
		}
	}
	if t.HTTPRoute != "" {
		w, err := t.routeWeights(ctx)
		if err != nil {
			s.Problems = append(s.Problems, err.Error())
		} else {
			s.Weights = "httproute/" + t.HTTPRoute + ": " + w
		}
	}
	return s, nil
}

// abortError is the error of an aborted canary; it wraps ErrCanaryAborted.
type abortError struct{ msg string }

func (e *abortError) Error() string { return e.msg }

func (e *abortError) Unwrap() error { return ErrCanaryAborted }

// letGo clears this invocation's claim, keeping the step, so that a
// redelivery resumes at once instead of waiting for the claim to expire.
func (c *canaryRun) letGo(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = retry.RetryOnConflict(conflictBackoff, func() error {
		canary, err := c.get(ctx, c.t.CanaryDeployment())
		if err != nil {
			return err
		}
		p, _ := readProgress(canary)
		if p == nil || p.Holder != c.holder {
			return nil
		}
		p.Holder = ""
		_, _, err = patchDeployment(ctx, c.client, canary, map[string]any{"metadata": map[string]any{"annotations": map[string]any{
			AnnotationCanary: string(mustJSON(p))}}}, BlueGreenOptions{})
		return err
	})
}

// claimExpired reports whether a claim made at is older than ttl.
func claimExpired(at time.Time, ttl time.Duration) bool {
	return ttl > 0 && time.Since(at) > ttl
}
