package rollout

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/watch"
	watchtools "k8s.io/client-go/tools/watch"
	"k8s.io/client-go/util/retry"

	"github.com/onnewimage/onnewimage/internal/image"
	"github.com/onnewimage/onnewimage/internal/kube"
)

// Keys the release gates write on the Jobs they create.
const (
	// LabelGateBuild, on a gate's Job, holds the full ID of the build the
	// Job was created for: a Job of the expected name that holds another
	// build is not waited for.
	LabelGateBuild = "onnewimage.dev/build-id"
	// LabelGate, on a gate's Job, holds the gate (CronJob) it was made from.
	LabelGate = "onnewimage.dev/gate"
	// AnnotationInstantiate is what `kubectl create job --from=cronjob/NAME`
	// writes on the Job it creates: "manual", since no schedule did.
	AnnotationInstantiate = "cronjob.kubernetes.io/instantiate"
)

// The variables a gate's Job finds in each container that runs the release.
const (
	// EnvBuildID holds the build's ID.
	EnvBuildID = "ONNEWIMAGE_BUILD_ID"
	// EnvImage holds the release's image, pinned by digest.
	EnvImage = "ONNEWIMAGE_IMAGE"
	// EnvService holds, with blue-green, the idle colour's Service
	// (DEPLOYMENT-COLOUR-svc): where the release runs before traffic moves.
	EnvService = "ONNEWIMAGE_SERVICE"
)

var (
	// ErrGateFailed is wrapped when a gate's Job failed: the release is
	// rejected, and delivering it again cannot help.
	ErrGateFailed = errors.New("release gate failed")
	// ErrGateTimeout is wrapped when a gate's Job was neither Complete nor
	// Failed within the gate timeout. The Job goes on; a redelivery finds it
	// by name and waits for it again.
	ErrGateTimeout = errors.New("release gate not done in time")
	// ErrGateInvalid is wrapped when a gate cannot run as configured: its
	// CronJob has no container to run the release in, or a Job of the
	// expected name belongs to another build. Only an operator can fix it.
	ErrGateInvalid = errors.New("release gate cannot run")
)

// Gates are the release gates of a target: CronJobs in Namespace, normally
// suspended, used as templates. Before traffic moves to a release, each is
// run in order as a Job made the way `kubectl create job --from=cronjob/NAME`
// makes one, and each must be Complete before the next one is created.
type Gates struct {
	Namespace string
	// Names are the CronJobs, in order.
	Names []string
	// Container is the target's container: the container of that name in a
	// gate's pod template runs the release.
	Container string
	// Repository is the target's image: any container whose image is in it
	// runs the release too.
	Repository image.Pattern
	// Timeout bounds each gate's wait; zero leaves only ctx to bound it.
	Timeout time.Duration
}

// JobName is the name of gate's Job for build: the gate, the build ID's
// first eight characters (Cloud Build's short ID, for people) and six hex
// digits of the SHA-256 of the whole ID (for builds whose IDs share a
// prefix): web-migrate-0b7e5c1a-3f9c2d. It is a valid DNS label, at most 63
// characters: a gate name too long for that is cut short. A Job of that
// name holding another build is refused (ErrGateInvalid), never confused.
func JobName(gate, buildID string) string {
	short := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			return r
		case r >= 'A' && r <= 'Z':
			return r - 'A' + 'a'
		}
		return -1
	}, buildID)
	sum := sha256.Sum256([]byte(buildID))
	suffix := short[:min(len(short), 8)] + "-" + hex.EncodeToString(sum[:3])
	if len(short) == 0 {
		suffix = hex.EncodeToString(sum[:3])
	}
	if max := validation.DNS1123LabelMaxLength - 1 - len(suffix); len(gate) > max {
		gate = strings.TrimRight(gate[:max], "-.")
	}
	return gate + "-" + suffix
}

// run runs every gate for r, in order. service is the Service the release
// can be reached at before traffic moves ("" with rolling). It returns nil
// once every gate's Job is Complete.
func (g Gates) run(ctx context.Context, client kube.Interface, r Release, service string) error {
	for _, gate := range g.Names {
		if err := g.runOne(ctx, client, gate, r, service); err != nil {
			return err
		}
	}
	return nil
}

// summary names the gates for a Result's reason: " after gates a, b" or "".
func (g Gates) summary() string {
	if len(g.Names) == 0 {
		return ""
	}
	return " after gates " + strings.Join(g.Names, ", ") + " completed"
}

func (g Gates) runOne(ctx context.Context, client kube.Interface, gate string, r Release, service string) error {
	if errs := validation.IsValidLabelValue(r.BuildID); len(errs) > 0 {
		return fmt.Errorf("%w: build ID %q is not a valid label value (%s), so label %s cannot record it",
			ErrBuildIDInvalid, r.BuildID, strings.Join(errs, "; "), LabelGateBuild)
	}
	name := JobName(gate, r.BuildID)
	if errs := validation.IsDNS1123Label(name); len(errs) > 0 {
		return fmt.Errorf("%w: gate %s: job name %q for build %s: %s", ErrGateInvalid, gate, name, r.BuildID, strings.Join(errs, "; "))
	}
	jobs := client.BatchV1().Jobs(g.Namespace)
	// An existing Job is waited for as it is: the gate runs once per build,
	// whatever the CronJob became since.
	job, err := jobs.Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		cj, err := client.BatchV1().CronJobs(g.Namespace).Get(ctx, gate, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("gate %s: getting cronjob %s/%s: %w", gate, g.Namespace, gate, err)
		}
		want, err := g.job(cj, name, r, service)
		if err != nil {
			return err
		}
		job, err = jobs.Create(ctx, want, metav1.CreateOptions{FieldManager: FieldManager})
		if apierrors.IsAlreadyExists(err) {
			// A concurrent delivery of the same build created it first.
			job, err = jobs.Get(ctx, name, metav1.GetOptions{})
		}
		if err != nil {
			return fmt.Errorf("gate %s: creating job %s/%s: %w", gate, g.Namespace, name, err)
		}
	case err != nil:
		return fmt.Errorf("gate %s: getting job %s/%s: %w", gate, g.Namespace, name, err)
	}
	if got := job.Labels[LabelGateBuild]; got != r.BuildID {
		return fmt.Errorf("%w: gate %s: job %s/%s holds build %q, not %s: delete it if it is left over",
			ErrGateInvalid, gate, g.Namespace, name, got, r.BuildID)
	}
	return g.wait(ctx, client, gate, job)
}

// job makes gate's Job for r from the CronJob cj, as `kubectl create job
// --from=cronjob/NAME` does (the jobTemplate's labels, annotations and
// spec, owned by the CronJob), with r's image and the variables in every
// container that runs the release.
func (g Gates) job(cj *batchv1.CronJob, name string, r Release, service string) (*batchv1.Job, error) {
	tmpl := cj.Spec.JobTemplate.DeepCopy()
	annotations := map[string]string{}
	for k, v := range tmpl.Annotations {
		annotations[k] = v
	}
	annotations[AnnotationInstantiate] = "manual"
	annotations[AnnotationImage] = r.Image.String()
	labels := map[string]string{}
	for k, v := range tmpl.Labels {
		labels[k] = v
	}
	labels[LabelGateBuild] = r.BuildID
	labels[LabelGate] = cj.Name
	controller := true
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Namespace:   g.Namespace,
			Labels:      labels,
			Annotations: annotations,
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: batchv1.SchemeGroupVersion.String(), Kind: "CronJob",
				Name: cj.Name, UID: cj.UID, Controller: &controller,
			}},
		},
		Spec: tmpl.Spec,
	}
	env := []corev1.EnvVar{{Name: EnvBuildID, Value: r.BuildID}, {Name: EnvImage, Value: r.Image.String()}}
	if service != "" {
		env = append(env, corev1.EnvVar{Name: EnvService, Value: service})
	}
	spec := &job.Spec.Template.Spec
	found := 0
	for _, list := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
		for i := range list {
			c := &list[i]
			if c.Name != g.Container && !g.runsRepository(c.Image) {
				continue
			}
			found++
			c.Image = r.Image.String()
			c.Env = slices.DeleteFunc(c.Env, func(e corev1.EnvVar) bool {
				return slices.ContainsFunc(env, func(w corev1.EnvVar) bool { return w.Name == e.Name })
			})
			c.Env = append(c.Env, env...)
		}
	}
	if found == 0 {
		return nil, fmt.Errorf("%w: gate %s: cronjob %s/%s has no container %q and none whose image is %s (it has %s): nothing would run the release",
			ErrGateInvalid, cj.Name, cj.Namespace, cj.Name, g.Container, g.Repository, containerNames(spec))
	}
	return job, nil
}

// runsRepository reports whether img is an image of g's repository.
func (g Gates) runsRepository(img string) bool {
	ref, err := image.Parse(img)
	return err == nil && g.Repository.String() != "" && g.Repository.Match(ref.Repository)
}

// wait watches job until it is Complete (nil) or Failed (ErrGateFailed,
// with why), bounded by g.Timeout (ErrGateTimeout). The watch starts at the
// resourceVersion job was read at and selects it by name, which is what
// RBAC needs to grant watch on Jobs without list.
func (g Gates) wait(ctx context.Context, client kube.Interface, gate string, job *batchv1.Job) error {
	if done, err := g.finished(ctx, client, gate, job); done {
		return err
	}
	waitCtx, cancel := ctx, context.CancelFunc(func() {})
	if g.Timeout > 0 {
		waitCtx, cancel = context.WithTimeoutCause(ctx, g.Timeout, errGateTimeout)
	}
	defer cancel()
	w, err := watchByName(waitCtx, job.ResourceVersion, job.Name, client.BatchV1().Jobs(job.Namespace).Watch)
	if err != nil {
		return fmt.Errorf("gate %s: watching job %s/%s: %w", gate, job.Namespace, job.Name, err)
	}
	defer w.Stop()
	last := job
	var result error
	_, err = watchtools.UntilWithoutRetry(waitCtx, w, func(ev watch.Event) (bool, error) {
		switch ev.Type {
		case watch.Error:
			return false, fmt.Errorf("gate %s: watching job %s/%s: %w", gate, job.Namespace, job.Name, apierrors.FromObject(ev.Object))
		case watch.Deleted:
			return false, fmt.Errorf("gate %s: job %s/%s was deleted while it ran", gate, job.Namespace, job.Name)
		}
		got, ok := ev.Object.(*batchv1.Job)
		if !ok || got.Name != job.Name { // A fake clientset ignores the field selector.
			return false, nil
		}
		last = got
		done, err := g.finished(ctx, client, gate, got)
		result = err
		return done, nil
	})
	if err == nil {
		return result
	}
	if waitCtx.Err() != nil && errors.Is(context.Cause(waitCtx), errGateTimeout) {
		return fmt.Errorf("%w: gate %s: job %s/%s is neither complete nor failed after %s (%s); it goes on, and a redelivery waits for it",
			ErrGateTimeout, gate, job.Namespace, job.Name, g.Timeout, progress(last))
	}
	if ctx.Err() != nil {
		return fmt.Errorf("gate %s: waiting for job %s/%s: %w", gate, job.Namespace, job.Name, context.Cause(ctx))
	}
	return err
}

// errGateTimeout is the cause of a gate's wait that ran out.
var errGateTimeout = errors.New("gate timeout")

// finished reports whether job is Complete (nil) or Failed (an error
// wrapping ErrGateFailed that says why).
func (g Gates) finished(ctx context.Context, client kube.Interface, gate string, job *batchv1.Job) (bool, error) {
	for _, c := range job.Status.Conditions {
		if c.Status != corev1.ConditionTrue {
			continue
		}
		switch c.Type {
		case batchv1.JobComplete:
			return true, nil
		case batchv1.JobFailed:
			why := c.Reason
			if c.Message != "" {
				why += ": " + c.Message
			}
			return true, fmt.Errorf("%w: gate %s: job %s/%s failed (%s)%s; traffic did not move",
				ErrGateFailed, gate, job.Namespace, job.Name, why, terminations(ctx, client, job))
		}
	}
	return false, nil
}

// terminations says how job's failed pods' containers ended: ", pod P
// container C exited 1: MESSAGE", from the pods the Job's selector picks.
// A pod list that fails says so instead: the failure is reported anyway.
func terminations(ctx context.Context, client kube.Interface, job *batchv1.Job) string {
	if job.Spec.Selector == nil {
		return ""
	}
	selector, err := metav1.LabelSelectorAsSelector(job.Spec.Selector)
	if err != nil {
		return ""
	}
	pods, err := client.CoreV1().Pods(job.Namespace).List(ctx, metav1.ListOptions{LabelSelector: selector.String()})
	if err != nil {
		return fmt.Sprintf("; its pods could not be listed: %v", err)
	}
	var parts []string
	for _, p := range pods.Items {
		if p.Status.Phase != corev1.PodFailed {
			continue
		}
		for _, cs := range slices.Concat(p.Status.InitContainerStatuses, p.Status.ContainerStatuses) {
			t := cs.State.Terminated
			if t == nil || t.ExitCode == 0 {
				continue
			}
			s := fmt.Sprintf("pod %s container %s exited %d", p.Name, cs.Name, t.ExitCode)
			if t.Reason != "" {
				s += " (" + t.Reason + ")"
			}
			if msg := strings.TrimSpace(t.Message); msg != "" {
				s += ": " + msg
			}
			parts = append(parts, s)
		}
	}
	if len(parts) == 0 {
		return ""
	}
	slices.Sort(parts)
	return "; " + strings.Join(parts, "; ")
}

// progress says how far job is, for a timeout's message.
func progress(job *batchv1.Job) string {
	st := job.Status
	return fmt.Sprintf("%d active, %d succeeded, %d failed", st.Active, st.Succeeded, st.Failed)
}

// rejectedReason is why r is not deployed after a gate rejected the build
// rejected records, or "" when r is newer.
func rejectedReason(rejected record, r Release) string {
	switch {
	case !rejected.ok:
		return ""
	case rejected.id == r.BuildID:
		return fmt.Sprintf("build %s was rejected (a release gate failed, or its canary was aborted): it is not deployed, nor are its gates run again", r.BuildID)
	case !r.newerThan(rejected.id, rejected.at):
		return fmt.Sprintf("stale: build %s (created %s) is not newer than build %s (created %s), which was rejected (a release gate failed, or its canary was aborted)",
			r.BuildID, created(r.CreateTime), rejected.id, created(rejected.at))
	}
	return ""
}

// rejectRolling records on t's Deployment that a gate rejected r (unless it
// records a newer rejection already), and returns gateErr. When the record
// cannot be written the error is the write's, so that a redelivery, which
// finds the gate's failed Job, records it again.
func rejectRolling(ctx context.Context, client kube.Interface, t Target, r Release, gateErr error) error {
	if err := recordRejection(ctx, client, t, r, Options{}); err != nil {
		return fmt.Errorf("%v; recording the rejection on deployment %s/%s failed: %w", gateErr, t.Namespace, t.Deployment, err)
	}
	return gateErr
}

// recordRejection labels t's Deployment with r as rejected
// (LabelRejectedBuild, LabelRejectedBuildTime), unless it records a newer
// rejection already: neither r nor an older build is deployed there again
// (see decide). A gate that failed and an aborted canary leave this one
// record.
func recordRejection(ctx context.Context, client kube.Interface, t Target, r Release, o Options) error {
	deployments := client.AppsV1().Deployments(t.Namespace)
	return retry.RetryOnConflict(conflictBackoff, func() error {
		d, err := deployments.Get(ctx, t.Deployment, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("getting deployment %s/%s: %w", t.Namespace, t.Deployment, err)
		}
		rejected, _ := readRecord(deploymentName(d), "label", d.Labels, LabelRejectedBuild, LabelRejectedBuildTime, LabelTimeLayout, "")
		if rejected.ok && !r.newerThan(rejected.id, rejected.at) {
			return nil
		}
		patch := mustJSON(map[string]any{"metadata": map[string]any{
			"resourceVersion": d.ResourceVersion,
			"labels": map[string]any{
				LabelRejectedBuild:     r.BuildID,
				LabelRejectedBuildTime: r.CreateTime.UTC().Format(LabelTimeLayout),
			},
		}})
		if _, err := deployments.Patch(ctx, t.Deployment, types.StrategicMergePatchType, patch, patchOptions(o)); err != nil {
			return fmt.Errorf("patching deployment %s/%s: %w", t.Namespace, t.Deployment, err)
		}
		return nil
	})
}

// rejectBlueGreen records on s's router that a gate rejected r (unless it
// records a newer rejection already) and removes r's claim, and returns
// gateErr; see rejectRolling.
func rejectBlueGreen(ctx context.Context, client kube.Interface, t BlueGreenTarget, r Release, o BlueGreenOptions, gateErr error) error {
	err := retry.RetryOnConflict(conflictBackoff, func() error {
		rt, err := getRouter(ctx, client, t)
		if err != nil {
			return err
		}
		m := rt.meta()
		rejected, _ := annotationRecord("", m.GetAnnotations(), AnnotationRejectedBuildID, AnnotationRejectedCreateTime)
		annotations := map[string]any{}
		if !rejected.ok || r.newerThan(rejected.id, rejected.at) {
			annotations[AnnotationRejectedBuildID] = r.BuildID
			annotations[AnnotationRejectedCreateTime] = r.CreateTime.UTC().Format(time.RFC3339Nano)
		}
		if c, ok := claimOf(rt); ok && c.by == r.BuildID {
			annotations[AnnotationDeploying] = nil
		}
		if len(annotations) == 0 {
			return nil
		}
		_, err = rt.patch(ctx, map[string]any{"metadata": map[string]any{
			"resourceVersion": m.GetResourceVersion(),
			"annotations":     annotations,
		}}, o)
		return err
	})
	if err != nil {
		return fmt.Errorf("%v; recording the rejection on %s %s/%s failed: %w", gateErr, t.RouterKind, t.Namespace, t.Router, err)
	}
	return gateErr
}
