// Package rollout updates Kubernetes Deployments to a release: a build's
// image, pinned by digest.
//
// Every write is one precise strategic-merge patch of only what changes (the
// container's image, the release annotations and the high-water-mark
// labels; Undo's pod template, replaced whole as kubectl does), sent with a
// field manager and with the resourceVersion that was read as a
// precondition. That makes
// each write a compare-and-set: when another writer got there first, the API
// server answers Conflict, the Deployment is read again and the decision is
// made again against what is really there. A release never replaces a newer
// one and is never applied twice.
//
// # Blue-green
//
// BlueGreen and Rollback work on two Deployments, DEPLOYMENT-blue and
// DEPLOYMENT-green, and one router in front that sends all traffic to one of
// them (the live colour). A release goes to the other one (the idle colour);
// traffic switches only once Status says the idle colour is rolled out.
//
// The router is also the lock. Its resourceVersion, as read when a release is
// decided, is the precondition of every write that commits to that decision:
// before an invocation patches the idle Deployment it writes a claim on the
// router (AnnotationDeploying), and it switches the router with the
// resourceVersion that claim left. An invocation that decided on an older
// view of the router therefore gets Conflict on its next router write, reads
// again and decides again; it can never patch the colour that went live in
// the meantime, nor switch after another release claimed the idle colour.
// The patch of the idle Deployment (with the resourceVersion read before the
// claim as its precondition) always records the claim (AnnotationClaim), so
// that a patch decided under an earlier claim, still in flight, conflicts
// instead of landing on a colour that a later claim has switched to.
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
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"

	"github.com/onnewimage/onnewimage/internal/image"
	"github.com/onnewimage/onnewimage/internal/kube"
)

// Annotation keys the function writes on the objects it changes.
const (
	// AnnotationBuildID holds the Cloud Build ID of the deployed release.
	AnnotationBuildID = "onnewimage.dev/build-id"
	// AnnotationBuildCreateTime holds the deployed build's createTime
	// (RFC 3339): releases are ordered by it.
	AnnotationBuildCreateTime = "onnewimage.dev/build-create-time"
	// AnnotationCommit holds the commit the deployed build was made from,
	// when known.
	AnnotationCommit = "onnewimage.dev/commit"
	// AnnotationImage holds the deployed image, pinned by digest.
	AnnotationImage = "onnewimage.dev/image"
	// AnnotationChangeCause is the annotation `kubectl rollout history` shows
	// for each revision.
	AnnotationChangeCause = "kubernetes.io/change-cause"
)

// Label keys the rolling strategy writes on the Deployment: the high-water
// mark of the releases deployed to it. `kubectl rollout undo` replaces the
// pod template and the annotations but not the labels, so the mark outlives
// a rollback, and a build that was rolled back is never deployed again by a
// redelivery: only a build newer than the mark is.
const (
	// LabelNewestBuild holds the ID of the newest build ever deployed to the
	// Deployment.
	LabelNewestBuild = "onnewimage.dev/newest-build"
	// LabelNewestBuildTime holds that build's createTime, in UTC, as
	// LabelTimeLayout formats it (a label value cannot hold RFC 3339).
	LabelNewestBuildTime = "onnewimage.dev/newest-build-time"
)

// Label keys the rolling strategy writes on the Deployment when a release
// gate rejects a build: neither that build nor an older one is deployed
// there again; a newer build is. Labels, like the high-water mark, so that
// `kubectl rollout undo` keeps them.
const (
	// LabelRejectedBuild holds the ID of the newest build a gate rejected.
	LabelRejectedBuild = "onnewimage.dev/rejected-build"
	// LabelRejectedBuildTime holds that build's createTime, as
	// LabelTimeLayout formats it.
	LabelRejectedBuildTime = "onnewimage.dev/rejected-build-time"
)

// LabelTimeLayout is the time layout of LabelNewestBuildTime.
const LabelTimeLayout = "20060102T150405.000000000Z"

// FieldManager is the field manager of every write.
const FieldManager = "onnewimage"

// Outcome is what became of a release.
type Outcome string

// The outcomes a release can have.
const (
	// Deployed means the cluster was changed to run the release.
	Deployed Outcome = "deployed"
	// Skipped means nothing needed to or should change.
	Skipped Outcome = "skipped"
	// Failed means the release should have been deployed and was not. No
	// function here returns it in a Result: it is the outcome a caller
	// reports for an error (see Result).
	Failed Outcome = "failed"
	// Refused means the build is not one to deploy according to its source
	// of truth, the Cloud Build API (see package provenance): a forged or
	// altered message. No function here returns it either.
	Refused Outcome = "refused"
)

// ErrTargetMissing is wrapped when the configured container does not exist
// in the Deployment: only an operator can fix that.
var ErrTargetMissing = errors.New("deployment target missing")

// ErrRecordUnreadable is wrapped when an annotation or label that records a
// release (and so orders releases) cannot be read: a build ID without its
// createTime, or the reverse, or a time that does not parse. Nothing is
// deployed until an operator corrects it, since deploying could regress the
// target.
var ErrRecordUnreadable = errors.New("unreadable release record")

// ErrBuildIDInvalid is wrapped when a build's ID cannot be recorded in a
// label (Cloud Build IDs are UUIDs, which can).
var ErrBuildIDInvalid = errors.New("build ID cannot be recorded")

// Target is the container a release is deployed to.
type Target struct {
	Namespace, Deployment, Container string
}

// String formats the target as namespace/deployment:container.
func (t Target) String() string { return t.Namespace + "/" + t.Deployment + ":" + t.Container }

// Release is a successful build's image, and where it came from.
type Release struct {
	// BuildID is the Cloud Build ID.
	BuildID string
	// CreateTime is the build's createTime, which orders releases.
	CreateTime time.Time
	// Commit is the source commit, or "".
	Commit string
	// Image is the pushed image, pinned by digest.
	Image image.Reference
}

// ChangeCause is the text recorded for `kubectl rollout history`.
func (r Release) ChangeCause() string {
	s := "onNewImage: build " + r.BuildID
	if r.Commit != "" {
		s += " commit " + short(r.Commit)
	}
	return s + " image " + r.Image.String()
}

// newerThan reports whether r orders after a release recorded as (id, at):
// by createTime, then by build ID so that two builds created in the same
// instant still have one winner.
func (r Release) newerThan(id string, at time.Time) bool {
	if !r.CreateTime.Equal(at) {
		return r.CreateTime.After(at)
	}
	return r.BuildID > id
}

// created formats r's createTime for reasons.
func created(at time.Time) string { return at.Format(time.RFC3339) }

func short(commit string) string {
	if len(commit) > 12 {
		return commit[:12]
	}
	return commit
}

// Options adjust how a release is applied.
type Options struct {
	// DryRun has the API server validate each write without persisting it.
	// The gates are not run.
	DryRun bool
	// Gates run, each to completion, before the Deployment is patched. A
	// gate that fails rejects the build (ErrGateFailed), and the Deployment
	// records it (LabelRejectedBuild).
	Gates Gates
}

// Result says what became of a release. It is meaningful only when the
// error returned with it is nil: every function here returns the zero Result
// with an error, and the error alone says what went wrong (and, for Failed,
// that something did).
type Result struct {
	Outcome Outcome
	// Reason explains the outcome in a sentence.
	Reason string
	// Previous is the image the target ran before.
	Previous string
	// Patch is the patch sent (or that would be sent, in a dry run).
	Patch []byte
}

// conflictBackoff bounds the compare-and-set loop: a few quick tries, then
// the error goes back to Pub/Sub, which retries later.
var conflictBackoff = wait.Backoff{Steps: 6, Duration: 20 * time.Millisecond, Factor: 2, Jitter: 0.5}

// Rolling deploys r to t by patching the Deployment's container image;
// Kubernetes then performs its rolling update. A Deployment already running
// r's digest, recording a newer build, or marked (LabelNewestBuild) with a
// build not older than r, is left alone.
func Rolling(ctx context.Context, client kube.Interface, t Target, r Release, o Options) (Result, error) {
	if errs := validation.IsValidLabelValue(r.BuildID); len(errs) > 0 {
		return Result{}, fmt.Errorf("%w: build ID %q is not a valid label value (%s), so label %s cannot record it",
			ErrBuildIDInvalid, r.BuildID, strings.Join(errs, "; "), LabelNewestBuild)
	}
	deployments := client.AppsV1().Deployments(t.Namespace)
	var res Result
	err := retry.RetryOnConflict(conflictBackoff, func() error {
		d, err := deployments.Get(ctx, t.Deployment, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("getting deployment %s/%s: %w", t.Namespace, t.Deployment, err)
		}
		var patch []byte
		res, patch, err = plan(d, t.Container, r)
		if err != nil || patch == nil {
			return err
		}
		if !o.DryRun {
			if err := o.Gates.run(ctx, client, r, ""); errors.Is(err, ErrGateFailed) {
				return rejectRolling(ctx, client, t, r, err)
			} else if err != nil {
				return err
			}
		}
		if _, err := deployments.Patch(ctx, t.Deployment, types.StrategicMergePatchType, patch, patchOptions(o)); err != nil {
			return fmt.Errorf("patching deployment %s/%s: %w", t.Namespace, t.Deployment, err)
		}
		res = Result{Outcome: Deployed, Previous: res.Previous, Patch: patch,
			Reason: fmt.Sprintf("%s rolls from %s to %s%s", t.Deployment, res.Previous, r.Image, o.Gates.summary())}
		if o.DryRun {
			res.Outcome, res.Reason = Skipped, "dry run: the API server accepted the patch; nothing was changed"
		}
		return nil
	})
	if err != nil {
		return Result{}, err
	}
	return res, nil
}

// plan decides what r means for d. It returns a patch when d must change,
// or nil with the reason to leave it.
func plan(d *appsv1.Deployment, container string, r Release) (Result, []byte, error) {
	c, list, err := targetContainer(d, container)
	if err != nil {
		return Result{}, nil, err
	}
	res := Result{Outcome: Skipped, Previous: c.Image}
	reason, ok, err := superseded(d, c.Image, r)
	if err != nil || !ok {
		res.Reason = reason
		return res, nil, err
	}
	patch, err := json.Marshal(map[string]any{
		"metadata": map[string]any{
			"resourceVersion": d.ResourceVersion,
			"annotations":     releaseAnnotations(r),
			"labels":          markLabels(r.BuildID, r.CreateTime),
		},
		"spec": map[string]any{"template": map[string]any{"spec": containerPatch(list, container, r.Image.String())}},
	})
	return res, patch, err
}

// superseded reports whether r should replace what d records and runs;
// when not, it says why.
func superseded(d *appsv1.Deployment, running string, r Release) (string, bool, error) {
	if sameImage(running, r.Image.String()) {
		return fmt.Sprintf("already running %s", r.Image.Digest), false, nil
	}
	deployed, err := deploymentRecord(d)
	if err != nil {
		return "", false, err
	}
	newest, err := labelRecord(d)
	if err != nil {
		return "", false, err
	}
	if deployed.id == r.BuildID {
		return fmt.Sprintf("build %s was already deployed here (the image has since been changed by hand to %s)", deployed.id, running), false, nil
	}
	rejected, err := readRecord(deploymentName(d), "label", d.Labels, LabelRejectedBuild, LabelRejectedBuildTime, LabelTimeLayout, "a time like "+LabelTimeLayout)
	if err != nil {
		return "", false, err
	}
	if reason := rejectedReason(rejected, r); reason != "" {
		return reason, false, nil
	}
	if newest.ok && !r.newerThan(newest.id, newest.at) {
		records := "the deployment records no build"
		if deployed.ok {
			records = "the deployment records build " + deployed.id
		}
		if newest.id == r.BuildID {
			return fmt.Sprintf("build %s was deployed here and rolled back (%s): only a build newer than it is deployed", r.BuildID, records), false, nil
		}
		reason := fmt.Sprintf("stale: build %s (created %s) is not newer than the newest build deployed here, %s (created %s)",
			r.BuildID, created(r.CreateTime), newest.id, created(newest.at))
		if !deployed.ok || newest.release().newerThan(deployed.id, deployed.at) {
			reason += fmt.Sprintf(", which was rolled back (%s)", records)
		}
		return reason, false, nil
	}
	if deployed.ok && !r.newerThan(deployed.id, deployed.at) {
		return fmt.Sprintf("stale: build %s (created %s) is not newer than the deployed build %s (created %s)",
			r.BuildID, created(r.CreateTime), deployed.id, created(deployed.at)), false, nil
	}
	return "", true, nil
}

// markLabels are the labels that raise d's high-water mark to the build
// (id, at).
func markLabels(id string, at time.Time) map[string]any {
	return map[string]any{LabelNewestBuild: id, LabelNewestBuildTime: at.UTC().Format(LabelTimeLayout)}
}

// sameImage reports whether the image references a and b name the same
// image: the same digest when both pin one (the tag or registry name may
// differ: a retag, a reproducible rebuild, a webhook that rewrites
// registries), else the same reference.
func sameImage(a, b string) bool {
	ra, errA := image.Parse(a)
	rb, errB := image.Parse(b)
	if errA == nil && errB == nil && ra.Digest != "" && rb.Digest != "" {
		return ra.Digest == rb.Digest
	}
	return a == b
}

// record is a release as an object records it.
type record struct {
	id string
	at time.Time
	// ok says a release is recorded (the build ID and its createTime).
	ok bool
}

// annotationRecord reads the release obj's annotations record under idKey
// and atKey (RFC 3339). Neither key: no release. One without the other, or a
// time that does not parse, is an error wrapping ErrRecordUnreadable.
func annotationRecord(obj string, annotations map[string]string, idKey, atKey string) (record, error) {
	return readRecord(obj, "annotation", annotations, idKey, atKey, time.RFC3339Nano, "an RFC 3339 time")
}

// deploymentRecord reads the release d's annotations record.
func deploymentRecord(d *appsv1.Deployment) (record, error) {
	return annotationRecord(deploymentName(d), d.Annotations, AnnotationBuildID, AnnotationBuildCreateTime)
}

// labelRecord reads the high-water mark d's labels record, as
// annotationRecord reads annotations.
func labelRecord(d *appsv1.Deployment) (record, error) {
	return readRecord(deploymentName(d), "label", d.Labels, LabelNewestBuild, LabelNewestBuildTime, LabelTimeLayout, "a time like "+LabelTimeLayout)
}

// deploymentName names d in errors: "deployment NAMESPACE/NAME".
func deploymentName(d *appsv1.Deployment) string { return "deployment " + d.Namespace + "/" + d.Name }

func readRecord(obj, kind string, m map[string]string, idKey, atKey, layout, want string) (record, error) {
	id, rawAt := m[idKey], m[atKey]
	if id == "" && rawAt == "" {
		return record{}, nil
	}
	fix := fmt.Sprintf("correct it by hand (or remove %s %s and %s, which drops the check that keeps older builds out)", kind, idKey, atKey)
	if id == "" {
		return record{}, fmt.Errorf("%w: %s has %s %s=%q but no %s: %s", ErrRecordUnreadable, obj, kind, atKey, rawAt, idKey, fix)
	}
	if rawAt == "" {
		return record{}, fmt.Errorf("%w: %s has %s %s=%q but no %s: %s", ErrRecordUnreadable, obj, kind, idKey, id, atKey, fix)
	}
	at, err := time.Parse(layout, rawAt)
	if err != nil {
		return record{}, fmt.Errorf("%w: %s has %s %s=%q, which is not %s: %s", ErrRecordUnreadable, obj, kind, atKey, rawAt, want, fix)
	}
	return record{id: id, at: at, ok: true}, nil
}

func (rec record) release() Release { return Release{BuildID: rec.id, CreateTime: rec.at} }

// nilIfEmpty is s, or nil (which a merge patch reads as "remove") when s is
// empty.
func nilIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// releaseAnnotations are the annotations that record r. A release without a
// commit removes the previous release's commit rather than leave it wrong.
func releaseAnnotations(r Release) map[string]any {
	return map[string]any{
		AnnotationBuildID:         r.BuildID,
		AnnotationBuildCreateTime: r.CreateTime.UTC().Format(time.RFC3339Nano),
		AnnotationImage:           r.Image.String(),
		AnnotationChangeCause:     r.ChangeCause(),
		AnnotationCommit:          nilIfEmpty(r.Commit),
	}
}

func patchOptions(o Options) metav1.PatchOptions {
	opts := metav1.PatchOptions{FieldManager: FieldManager}
	if o.DryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	return opts
}

// targetContainer finds the container named name in d's pod template, among
// its containers or its init containers (native sidecars among them), and
// says which list of the pod spec holds it.
func targetContainer(d *appsv1.Deployment, name string) (*corev1.Container, string, error) {
	if c, list := findContainer(&d.Spec.Template.Spec, name); c != nil {
		return c, list, nil
	}
	return nil, "", fmt.Errorf("%w: deployment %s/%s has no container %q (it has %s)",
		ErrTargetMissing, d.Namespace, d.Name, name, containerNames(&d.Spec.Template.Spec))
}

// findContainer finds the container name in spec: in spec.containers, or in
// spec.initContainers. list is the field that holds it.
func findContainer(spec *corev1.PodSpec, name string) (c *corev1.Container, list string) {
	for _, l := range []struct {
		field string
		cs    []corev1.Container
	}{{"containers", spec.Containers}, {"initContainers", spec.InitContainers}} {
		for i := range l.cs {
			if l.cs[i].Name == name {
				return &l.cs[i], l.field
			}
		}
	}
	return nil, ""
}

// containerPatch is the pod spec part of a patch that sets the image of
// the container name, in list.
func containerPatch(list, name, image string) map[string]any {
	return map[string]any{list: []any{map[string]any{"name": name, "image": image}}}
}

// containerNames lists spec's containers and init containers, for errors.
func containerNames(spec *corev1.PodSpec) string {
	quoted := func(cs []corev1.Container) string {
		names := make([]string, len(cs))
		for i, c := range cs {
			names[i] = fmt.Sprintf("%q", c.Name)
		}
		return strings.Join(names, ", ")
	}
	var parts []string
	if len(spec.Containers) > 0 {
		parts = append(parts, "containers "+quoted(spec.Containers))
	}
	if len(spec.InitContainers) > 0 {
		parts = append(parts, "init containers "+quoted(spec.InitContainers))
	}
	if len(parts) == 0 {
		return "no containers"
	}
	return strings.Join(parts, " and ")
}
