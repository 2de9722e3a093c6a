// Package rollout updates Kubernetes Deployments to a release: a build's
// image, pinned by digest.
//
// Every write is one precise strategic-merge patch of only what changes (the
// container's image and the release annotations), sent with a field manager
// and with the resourceVersion that was read as a precondition. That makes
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
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"

	"github.com/onnewimage/onnewimage/internal/image"
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
)

// ErrTargetMissing is wrapped when the configured container does not exist
// in the Deployment: only an operator can fix that.
var ErrTargetMissing = errors.New("deployment target missing")

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

func short(commit string) string {
	if len(commit) > 12 {
		return commit[:12]
	}
	return commit
}

// Options adjust how a release is applied.
type Options struct {
	// DryRun has the API server validate each write without persisting it.
	DryRun bool
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
// r's digest, or recording a newer build, is left alone.
func Rolling(ctx context.Context, client kubernetes.Interface, t Target, r Release, o Options) (Result, error) {
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
		if _, err := deployments.Patch(ctx, t.Deployment, types.StrategicMergePatchType, patch, patchOptions(o)); err != nil {
			return fmt.Errorf("patching deployment %s/%s: %w", t.Namespace, t.Deployment, err)
		}
		res = Result{Outcome: Deployed, Previous: res.Previous, Patch: patch,
			Reason: fmt.Sprintf("%s rolls from %s to %s", t.Deployment, res.Previous, r.Image)}
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
	c := findContainer(d.Spec.Template.Spec.Containers, container)
	if c == nil {
		return Result{}, nil, fmt.Errorf("%w: deployment %s/%s has no container %q (it has %s)",
			ErrTargetMissing, d.Namespace, d.Name, container, containerNames(d.Spec.Template.Spec.Containers))
	}
	res := Result{Outcome: Skipped, Previous: c.Image}
	if reason, ok := superseded(d.Annotations, c.Image, r); !ok {
		res.Reason = reason
		return res, nil, nil
	}
	patch, err := json.Marshal(map[string]any{
		"metadata": map[string]any{
			"resourceVersion": d.ResourceVersion,
			"annotations":     releaseAnnotations(r),
		},
		"spec": map[string]any{"template": map[string]any{"spec": map[string]any{
			"containers": []any{map[string]any{"name": container, "image": r.Image.String()}},
		}}},
	})
	return res, patch, err
}

// superseded reports whether r should replace what an object records and
// runs; when not, it says why.
func superseded(annotations map[string]string, running string, r Release) (string, bool) {
	if sameDigest(running, r.Image) {
		return fmt.Sprintf("already running %s", r.Image.Digest), false
	}
	deployed := recordOf(annotations, AnnotationBuildID, AnnotationBuildCreateTime)
	if deployed.id == r.BuildID {
		return fmt.Sprintf("build %s was already deployed here (the image has since been changed by hand to %s)", deployed.id, running), false
	}
	if deployed.ok && !r.newerThan(deployed.id, deployed.at) {
		return fmt.Sprintf("stale: build %s (created %s) is not newer than the deployed build %s (created %s)",
			r.BuildID, r.CreateTime.Format(time.RFC3339), deployed.id, deployed.at.Format(time.RFC3339)), false
	}
	return "", true
}

// sameDigest reports whether the image reference running pins r's digest.
func sameDigest(running string, r image.Reference) bool {
	cur, err := image.Parse(running)
	return err == nil && cur.Digest == r.Digest
}

// record is a release as annotations record it.
type record struct {
	id string
	at time.Time
	// ok says both the build ID and a valid createTime are recorded.
	ok bool
}

func recordOf(annotations map[string]string, idKey, atKey string) record {
	rec := record{id: annotations[idKey]}
	at, err := time.Parse(time.RFC3339Nano, annotations[atKey])
	if rec.id != "" && err == nil {
		rec.at, rec.ok = at, true
	}
	return rec
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

func findContainer(cs []corev1.Container, name string) *corev1.Container {
	for i := range cs {
		if cs[i].Name == name {
			return &cs[i]
		}
	}
	return nil
}

func containerNames(cs []corev1.Container) string {
	if len(cs) == 0 {
		return "no containers"
	}
	s := ""
	for i, c := range cs {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("%q", c.Name)
	}
	return s
}
