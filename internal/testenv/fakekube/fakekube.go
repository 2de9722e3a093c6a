// Package fakekube is client-go's fake clientset made to keep
// resourceVersions as the API server does, so that unit tests of
// compare-and-set writes (a patch carrying metadata.resourceVersion) can
// fail: the fake's own tracker never bumps a resourceVersion and never
// refuses a stale one, so concurrent writers there silently lose updates.
package fakekube

import (
	"encoding/json"
	"fmt"
	"strconv"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"
)

// NewClientset returns a fake clientset that keeps resourceVersions the way
// the API server does: every write bumps it, and a patch carrying
// metadata.resourceVersion fails with Conflict unless it is current. The
// fake's own tracker does neither.
func NewClientset(t testing.TB, objs ...runtime.Object) *fake.Clientset {
	t.Helper()
	for _, o := range objs {
		m, err := meta.Accessor(o)
		if err != nil {
			t.Fatal(err)
		}
		if m.GetResourceVersion() == "" {
			m.SetResourceVersion("1")
		}
	}
	cs := fake.NewClientset(objs...)
	tracker := cs.Tracker()
	apply := clienttesting.ObjectReaction(tracker)
	cs.PrependReactor("patch", "*", func(action clienttesting.Action) (bool, runtime.Object, error) {
		pa := action.(clienttesting.PatchActionImpl)
		cur, err := tracker.Get(pa.GetResource(), pa.GetNamespace(), pa.GetName())
		if err != nil {
			return true, nil, err
		}
		curMeta, _ := meta.Accessor(cur)
		var precondition struct {
			Metadata struct {
				ResourceVersion string `json:"resourceVersion"`
			} `json:"metadata"`
		}
		if err := json.Unmarshal(pa.GetPatch(), &precondition); err != nil {
			return true, nil, apierrors.NewBadRequest(err.Error())
		}
		if rv := precondition.Metadata.ResourceVersion; rv != "" && rv != curMeta.GetResourceVersion() {
			return true, nil, apierrors.NewConflict(pa.GetResource().GroupResource(), pa.GetName(),
				fmt.Errorf("the object has been modified: resourceVersion %s, patch expects %s", curMeta.GetResourceVersion(), rv))
		}
		if len(pa.PatchOptions.DryRun) > 0 {
			return true, cur, nil // Validated, not persisted.
		}
		_, obj, err := apply(action)
		if err != nil {
			return true, nil, err
		}
		return true, obj, Bump(tracker, pa.GetResource(), pa.GetNamespace(), obj, curMeta.GetResourceVersion())
	})
	cs.PrependReactor("update", "*", func(action clienttesting.Action) (bool, runtime.Object, error) {
		ua := action.(clienttesting.UpdateActionImpl)
		cur, err := tracker.Get(ua.GetResource(), ua.GetNamespace(), mustMeta(ua.GetObject()).GetName())
		if err != nil {
			return true, nil, err
		}
		if rv := mustMeta(ua.GetObject()).GetResourceVersion(); rv != "" && rv != mustMeta(cur).GetResourceVersion() {
			return true, nil, apierrors.NewConflict(ua.GetResource().GroupResource(), mustMeta(cur).GetName(), fmt.Errorf("stale resourceVersion %s", rv))
		}
		_, obj, err := apply(action)
		if err != nil {
			return true, nil, err
		}
		return true, obj, Bump(tracker, ua.GetResource(), ua.GetNamespace(), obj, mustMeta(cur).GetResourceVersion())
	})
	return cs
}

// Bump stores obj in tracker with the resourceVersion after old (and, for a
// Deployment, the next generation), as a write through the API server does:
// tests use it to play another writer, such as a controller.
func Bump(tracker clienttesting.ObjectTracker, gvr schema.GroupVersionResource, ns string, obj runtime.Object, old string) error {
	n, _ := strconv.Atoi(old)
	m := mustMeta(obj)
	m.SetResourceVersion(strconv.Itoa(n + 1))
	if d, ok := obj.(*appsv1.Deployment); ok {
		d.Generation++
	}
	return tracker.Update(gvr, obj, ns)
}

// mustMeta is o's object metadata; o is always a Kubernetes object here.
func mustMeta(o runtime.Object) metav1.Object {
	m, err := meta.Accessor(o)
	if err != nil {
		panic(err)
	}
	return m
}
