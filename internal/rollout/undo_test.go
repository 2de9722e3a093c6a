package rollout

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"

	"github.com/onnewimage/onnewimage/internal/kube/kubetest"
)

// revisions returns web at its last revision, running the last of rs, and
// one ReplicaSet per release, as the Deployment controller leaves them: the
// Deployment's annotations at the time, the pod template with its hash
// label, a revision number.
func revisions(rs ...Release) []runtime.Object {
	d := deployment("web", "", nil)
	d.UID = types.UID("web-uid")
	var objs []runtime.Object
	for i, r := range rs {
		d.Spec.Template.Spec.Containers[1].Image = r.Image.String()
		d.Annotations = recorded(r)
		d.Annotations["team"] = "payments"
		d.Annotations[annotationRevision] = fmt.Sprint(i + 1)
		hash := fmt.Sprintf("hash%d", i+1)
		set := &appsv1.ReplicaSet{
			ObjectMeta: metav1.ObjectMeta{Name: "web-" + hash, Namespace: "prod", Labels: map[string]string{"app": "web", labelTemplateHash: hash},
				Annotations:     d.Annotations,
				OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(d, appsv1.SchemeGroupVersion.WithKind("Deployment"))}},
			Spec: appsv1.ReplicaSetSpec{Template: *d.Spec.Template.DeepCopy()},
		}
		set.Spec.Template.Labels = map[string]string{"app": "web", labelTemplateHash: hash}
		objs = append(objs, set)
		d = d.DeepCopy()
	}
	d.Labels = map[string]string{"app": "web"}
	return append(objs, d)
}

// Undo is our `kubectl rollout undo`: the previous revision's template and
// release annotations, other annotations kept, the mark raised to the build
// taken out so that a redelivery does not deploy it again.
func TestUndo(t *testing.T) {
	r1, r2, r3 := release(1, digest1), release(2, digest2), release(3, digest3)
	cs := newClientset(t, revisions(r1, r2)...) // Deployed by a version without the mark.

	res, err := Undo(context.Background(), kubetest.Adapt(cs), target, Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := Result{Outcome: Deployed, Previous: r2.Image.String(),
		Reason: "rolled web back from revision 2 (build build-2) to revision 1 (build build-1); it runs " + r1.Image.String() + "; only a build newer than build-2 is deployed again"}
	if diff := cmp.Diff(want, res, ignorePatch); diff != "" {
		t.Errorf("Undo (-want +got):\n%s", diff)
	}
	d := getDeployment(t, cs, "web")
	wantAnnotations := recorded(r1)
	wantAnnotations["team"] = "payments"
	wantAnnotations[annotationRevision] = "2" // The controller bumps it; no controller here.
	if diff := cmp.Diff(wantAnnotations, d.Annotations); diff != "" {
		t.Errorf("annotations (-want +got):\n%s", diff)
	}
	wantLabels := map[string]string{"app": "web", LabelNewestBuild: "build-2", LabelNewestBuildTime: "20261102T120000.123456789Z"}
	if diff := cmp.Diff(wantLabels, d.Labels); diff != "" {
		t.Errorf("labels (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]string{"app": "web"}, d.Spec.Template.Labels); diff != "" {
		t.Errorf("template labels (-want +got):\n%s", diff)
	}
	if got := []string{d.Spec.Template.Spec.Containers[0].Image, d.Spec.Template.Spec.Containers[1].Image}; cmp.Diff([]string{"gcr.io/p/proxy:1", r1.Image.String()}, got) != "" {
		t.Errorf("containers run %v, want the sidecar and build 1", got)
	}

	// The rolled-back build, delivered again, is skipped; a newer one deploys.
	var got []string
	for _, r := range []Release{r2, r3} {
		res, err := Rolling(context.Background(), kubetest.Adapt(cs), target, r, Options{})
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(res.Outcome)+": "+res.Reason)
	}
	wantRolling := []string{
		"skipped: build build-2 was deployed here and rolled back (the deployment records build build-1): only a build newer than it is deployed",
		"deployed: web rolls from " + r1.Image.String() + " to " + r3.Image.String(),
	}
	if diff := cmp.Diff(wantRolling, got); diff != "" {
		t.Errorf("after Undo (-want +got):\n%s", diff)
	}
}

// The template is replaced whole: what the current revision added (a
// container, an env var) goes.
func TestUndoReplacesTheTemplate(t *testing.T) {
	r1, r2 := release(1, digest1), release(2, digest2)
	objs := revisions(r1, r2)
	d := objs[len(objs)-1].(*appsv1.Deployment)
	d.Spec.Template.Spec.Containers = d.Spec.Template.Spec.Containers[1:] // Revision 2 dropped the sidecar...
	d.Spec.Template.Spec.Containers[0].Args = []string{"--new-flag"}      // ...and added a flag.
	cs := newClientset(t, objs...)
	if _, err := Undo(context.Background(), kubetest.Adapt(cs), target, Options{}); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range getDeployment(t, cs, "web").Spec.Template.Spec.Containers {
		got = append(got, fmt.Sprintf("%s %s %v", c.Name, c.Image, c.Args))
	}
	if diff := cmp.Diff([]string{"sidecar gcr.io/p/proxy:1 []", "web " + r1.Image.String() + " []"}, got); diff != "" {
		t.Errorf("containers (-want +got):\n%s", diff)
	}
}

func TestUndoRefuses(t *testing.T) {
	r1, r2 := release(1, digest1), release(2, digest2)
	t.Run("no previous revision", func(t *testing.T) {
		cs := newClientset(t, revisions(r1)...)
		res, err := Undo(context.Background(), kubetest.Adapt(cs), target, Options{})
		if !errors.Is(err, ErrNoPrevious) || res.Outcome != "" {
			t.Errorf("Undo = %+v, %v; want the zero Result and ErrNoPrevious", res, err)
		}
	})
	t.Run("the deployment changed since it was read", func(t *testing.T) {
		cs := newClientset(t, revisions(r1, r2)...)
		interleave(t, cs, release(3, digest3))
		_, err := Undo(context.Background(), kubetest.Adapt(cs), target, Options{})
		if !apierrors.IsConflict(err) || !strings.Contains(err.Error(), "nothing was rolled back") {
			t.Errorf("error = %v, want a Conflict saying nothing was rolled back", err)
		}
		if got := imageOf(t, cs, "web"); got != release(3, digest3).Image.String() {
			t.Errorf("web runs %s, want build 3 (the write that won)", got)
		}
	})
}
