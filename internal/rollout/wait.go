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
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"
)

// waitRolledOut watches d until it is fully rolled out by kubectl's rules
// while running img, and returns it as last seen. It fails with errChanged
// when d stops running img (its digest, when img pins one), is scaled to 0 or deleted (another release took
// it), with ErrProgressDeadline when its controller gives up, and with
// ErrRolloutTimeout when ctx's rollout timeout (of length timeout, for the
// message) runs out.
//
// The watch starts at d's resourceVersion and selects d by name with a
// field selector, which is what RBAC needs to grant watch on one name.
func waitRolledOut(ctx context.Context, client kubernetes.Interface, d *appsv1.Deployment, container, img string, timeout time.Duration) (*appsv1.Deployment, error) {
	check := func(d *appsv1.Deployment) (bool, error) {
		if c, _ := findContainer(&d.Spec.Template.Spec, container); c == nil || !sameImage(c.Image, img) {
			return false, fmt.Errorf("%w: deployment %s/%s no longer runs %s", errChanged, d.Namespace, d.Name, img)
		}
		if replicas(d) == 0 {
			return false, fmt.Errorf("%w: deployment %s/%s was scaled to 0", errChanged, d.Namespace, d.Name)
		}
		if d.Status.ObservedGeneration >= d.Generation {
			for _, c := range d.Status.Conditions {
				if c.Type == appsv1.DeploymentProgressing && c.Reason == "ProgressDeadlineExceeded" {
					return false, fmt.Errorf("%w: %s made no progress (%s): %s; traffic was not switched",
						ErrProgressDeadline, d.Name, progress(d), c.Message)
				}
			}
		}
		return RolledOut(d), nil
	}
	if done, err := check(d); done || err != nil {
		return d, err
	}

	deployments := client.AppsV1().Deployments(d.Namespace)
	byName := fields.OneTermEqualSelector("metadata.name", d.Name).String()
	w, err := watchtools.NewRetryWatcherWithContext(ctx, d.ResourceVersion, &cache.ListWatch{
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			opts.FieldSelector = byName
			return deployments.Watch(ctx, opts)
		},
	})
	if err != nil {
		return d, fmt.Errorf("watching deployment %s/%s: %w", d.Namespace, d.Name, err)
	}
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
			return last, fmt.Errorf("%w: %s did not become available within %s (%s); traffic was not switched",
				ErrRolloutTimeout, d.Name, timeout, progress(last))
		}
		return last, fmt.Errorf("waiting for deployment %s/%s: %w", d.Namespace, d.Name, context.Cause(ctx))
	}
	return last, err
}

// RolledOut reports whether d is fully rolled out by the rules of `kubectl
// rollout status`: the controller has observed its spec, every replica is
// updated, no old replica remains, and every updated replica is available.
func RolledOut(d *appsv1.Deployment) bool {
	st := d.Status
	return st.ObservedGeneration >= d.Generation &&
		st.UpdatedReplicas >= replicas(d) &&
		st.Replicas <= st.UpdatedReplicas &&
		st.AvailableReplicas >= st.UpdatedReplicas
}

// progress summarises d's rollout: "3/3", or the counts that are short.
func progress(d *appsv1.Deployment) string {
	st, want := d.Status, replicas(d)
	if RolledOut(d) {
		return fmt.Sprintf("%d/%d", st.AvailableReplicas, want)
	}
	s := fmt.Sprintf("%d/%d updated, %d available", st.UpdatedReplicas, want, st.AvailableReplicas)
	if old := st.Replicas - st.UpdatedReplicas; old > 0 {
		s += fmt.Sprintf(", %d old", old)
	}
	if st.ObservedGeneration < d.Generation {
		s += ", spec not yet observed"
	}
	return s
}

func replicas(d *appsv1.Deployment) int32 {
	if d.Spec.Replicas == nil {
		return 1
	}
	return *d.Spec.Replicas
}
