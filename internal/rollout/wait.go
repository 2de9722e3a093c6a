package rollout

import (
	"context"
	"errors"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"

	"github.com/onnewimage/onnewimage/internal/kube"
)

// waitRolledOut watches d until Status says it is rolled out, and returns
// it as last seen. It fails with ErrProgressDeadline when Status does, with
// ErrRolloutTimeout when ctx's rollout timeout (of length timeout, for the
// message) runs out, and with errChanged when d stops running img (its
// digest, when img pins one), is scaled to 0 or deleted: not kubectl's rules
// but this wait's own, because then another release has taken d.
//
// The watch starts at d's resourceVersion and selects d by name with a
// field selector, which is what RBAC needs to grant watch on one name.
func waitRolledOut(ctx context.Context, client kube.Interface, d *appsv1.Deployment, container, img string, timeout time.Duration) (*appsv1.Deployment, error) {
	check := func(d *appsv1.Deployment) (bool, error) {
		if c, _ := findContainer(&d.Spec.Template.Spec, container); c == nil || !sameImage(c.Image, img) {
			return false, fmt.Errorf("%w: deployment %s/%s no longer runs %s", errChanged, d.Namespace, d.Name, img)
		}
		if replicas(d) == 0 {
			return false, fmt.Errorf("%w: deployment %s/%s was scaled to 0", errChanged, d.Namespace, d.Name)
		}
		_, done, err := Status(d)
		if err != nil {
			return false, fmt.Errorf("%w%s; traffic was not switched", err, progressingMessage(d))
		}
		return done, nil
	}
	if done, err := check(d); done || err != nil {
		return d, err
	}

	w, err := watchByName(ctx, d.ResourceVersion, d.Name, client.AppsV1().Deployments(d.Namespace).Watch)
	if err != nil {
		return d, fmt.Errorf("watching deployment %s/%s: %w", d.Namespace, d.Name, err)
	}
	defer w.Stop()
	last := d
	_, err = watchtools.UntilWithoutRetry(ctx, w, func(ev watch.Event) (bool, error) {
		switch ev.Type {
		case watch.Error:
			if err := apierrors.FromObject(ev.Object); apierrors.IsGone(err) || apierrors.IsResourceExpired(err) {
				return false, fmt.Errorf("%w: watch of deployment %s/%s expired: %v", errChanged, d.Namespace, d.Name, err)
			} else {
				return false, fmt.Errorf("watching deployment %s/%s: %w", d.Namespace, d.Name, err)
			}
		case watch.Deleted:
			return false, fmt.Errorf("%w: deployment %s/%s was deleted", errChanged, d.Namespace, d.Name)
		}
		got, ok := ev.Object.(*appsv1.Deployment)
		if !ok || got.Name != d.Name { // A fake clientset ignores the field selector.
			return false, nil
		}
		last = got
		return check(got)
	})
	if err != nil && ctx.Err() != nil {
		if errors.Is(context.Cause(ctx), errTimeout) {
			status, _, _ := Status(last)
			return last, fmt.Errorf("%w: %s did not become available within %s (%s); traffic was not switched",
				ErrRolloutTimeout, d.Name, timeout, status)
		}
		return last, fmt.Errorf("waiting for deployment %s/%s: %w", d.Namespace, d.Name, context.Cause(ctx))
	}
	return last, err
}

// watchByName watches the one object named name through watchFn, from
// resourceVersion on, resuming after a dropped connection (a RetryWatcher).
// It selects the object by name with a field selector, which is what RBAC
// needs to grant watch on one name, or on a kind without list.
func watchByName(ctx context.Context, resourceVersion, name string, watchFn func(context.Context, metav1.ListOptions) (watch.Interface, error)) (watch.Interface, error) {
	byName := fields.OneTermEqualSelector("metadata.name", name).String()
	return watchtools.NewRetryWatcherWithContext(ctx, resourceVersion, &cache.ListWatch{
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			opts.FieldSelector = byName
			return watchFn(ctx, opts)
		},
	})
}

// Status says how far d's rollout is, by the rules and in the words of
// `kubectl rollout status` (without its trailing newline): done is true once
// the controller has observed d's spec, every desired replica is updated, no
// old replica is left and every updated replica is available. The checks run
// in kubectl's order, and each message names the first one that fails:
//
//	Waiting for deployment spec update to be observed...
//	Waiting for deployment "web" rollout to finish: 2 out of 3 new replicas have been updated...
//	Waiting for deployment "web" rollout to finish: 1 old replicas are pending termination...
//	Waiting for deployment "web" rollout to finish: 2 of 3 updated replicas are available...
//	deployment "web" successfully rolled out
//
// A Deployment whose controller reports ProgressDeadlineExceeded for its
// current spec is not waited for: the error, kubectl's `deployment "web"
// exceeded its progress deadline`, wraps ErrProgressDeadline. As in kubectl,
// an unset spec.replicas (the API server always sets it) skips the count of
// updated replicas.
func Status(d *appsv1.Deployment) (message string, done bool, err error) {
	st := d.Status
	if st.ObservedGeneration < d.Generation {
		return "Waiting for deployment spec update to be observed...", false, nil
	}
	for _, c := range st.Conditions {
		if c.Type == appsv1.DeploymentProgressing && c.Reason == "ProgressDeadlineExceeded" {
			return "", false, &deadlineError{name: d.Name}
		}
	}
	waiting := fmt.Sprintf("Waiting for deployment %q rollout to finish: ", d.Name)
	switch {
	case d.Spec.Replicas != nil && st.UpdatedReplicas < *d.Spec.Replicas:
		return waiting + fmt.Sprintf("%d out of %d new replicas have been updated...", st.UpdatedReplicas, *d.Spec.Replicas), false, nil
	case st.Replicas > st.UpdatedReplicas:
		return waiting + fmt.Sprintf("%d old replicas are pending termination...", st.Replicas-st.UpdatedReplicas), false, nil
	case st.AvailableReplicas < st.UpdatedReplicas:
		return waiting + fmt.Sprintf("%d of %d updated replicas are available...", st.AvailableReplicas, st.UpdatedReplicas), false, nil
	}
	return fmt.Sprintf("deployment %q successfully rolled out", d.Name), true, nil
}

// deadlineError is Status's error for a Deployment past its progress
// deadline.
type deadlineError struct{ name string }

func (e *deadlineError) Error() string {
	return fmt.Sprintf("deployment %q exceeded its progress deadline", e.name)
}

func (e *deadlineError) Unwrap() error { return ErrProgressDeadline }

// progressingMessage is ": " and the message of d's Progressing condition,
// which says what made no progress, or "".
func progressingMessage(d *appsv1.Deployment) string {
	for _, c := range d.Status.Conditions {
		if c.Type == appsv1.DeploymentProgressing && c.Message != "" {
			return ": " + c.Message
		}
	}
	return ""
}

func replicas(d *appsv1.Deployment) int32 {
	if d.Spec.Replicas == nil {
		return 1
	}
	return *d.Spec.Replicas
}
