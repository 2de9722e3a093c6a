package rollout

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/onnewimage/onnewimage/internal/kube/kubetest"
)

// changedBy records that manager last changed obj at the time given, as
// the API server records it in managedFields.
func changedBy[T metav1.Object](obj T, entries ...metav1.ManagedFieldsEntry) T {
	obj.SetManagedFields(entries)
	return obj
}

func entry(manager, subresource string, at time.Time) metav1.ManagedFieldsEntry {
	return metav1.ManagedFieldsEntry{Manager: manager, Operation: metav1.ManagedFieldsOperationUpdate, Subresource: subresource, Time: &metav1.Time{Time: at}}
}

func built(r Release) *Build {
	return &Build{ID: r.BuildID, CreateTime: r.CreateTime, Commit: r.Commit}
}

func TestInspect(t *testing.T) {
	r1, r2 := release(1, digest1), release(2, digest2)
	deployedAt := t0.Add(5 * time.Hour)
	live := func(r Release) *appsv1.Deployment {
		d := deployment("web", r.Image.String(), recorded(r))
		d.Labels = map[string]string{LabelNewestBuild: r.BuildID, LabelNewestBuildTime: r.CreateTime.Format(LabelTimeLayout)}
		d.Status = appsv1.DeploymentStatus{ObservedGeneration: 1, Replicas: 2, UpdatedReplicas: 2, AvailableReplicas: 2}
		return changedBy(d, entry("kube-controller-manager", "status", deployedAt.Add(time.Minute)),
			entry(FieldManager, "", deployedAt), entry("kubectl", "", deployedAt.Add(-time.Hour)))
	}
	rolledBack := live(r1)
	rolledBack.Labels = map[string]string{LabelNewestBuild: r2.BuildID, LabelNewestBuildTime: r2.CreateTime.Format(LabelTimeLayout)}
	unreadable := live(r2)
	unreadable.Annotations[AnnotationBuildCreateTime] = "yesterday"
	never := deployment("web", repo+":initial", nil)

	tests := []struct {
		name string
		d    *appsv1.Deployment
		want State
	}{
		{"deployed by onNewImage", live(r2), State{
			Live:    Running{Deployment: "web", Image: r2.Image.String(), Build: built(r2), DeployedAt: deployedAt, Replicas: 2, Status: `deployment "web" successfully rolled out`},
			Records: Records{NewestBuild: &Build{ID: r2.BuildID, CreateTime: r2.CreateTime}},
		}},
		{"rolled back below its mark", rolledBack, State{
			Live: Running{Deployment: "web", Image: r1.Image.String(), Build: built(r1), DeployedAt: deployedAt, Replicas: 2, Status: `deployment "web" successfully rolled out`},
			Records: Records{NewestBuild: &Build{ID: r2.BuildID, CreateTime: r2.CreateTime},
				RolledBack: &Build{ID: r2.BuildID, CreateTime: r2.CreateTime}},
		}},
		{"never deployed to", never, State{
			Live: Running{Deployment: "web", Image: repo + ":initial", Replicas: 2, Status: "Waiting for deployment spec update to be observed..."},
		}},
		{"an unreadable record is a problem, not an error", unreadable, State{
			Live:     Running{Deployment: "web", Image: r2.Image.String(), DeployedAt: deployedAt, Replicas: 2, Status: `deployment "web" successfully rolled out`},
			Records:  Records{NewestBuild: &Build{ID: r2.BuildID, CreateTime: r2.CreateTime}},
			Problems: []string{`unreadable release record: deployment prod/web has annotation onnewimage.dev/build-create-time="yesterday", which is not an RFC 3339 time: correct it by hand (or remove annotation onnewimage.dev/build-id and onnewimage.dev/build-create-time, which drops the check that keeps older builds out)`},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cs := fake.NewClientset(tt.d)
			got, err := Inspect(context.Background(), kubetest.Adapt(cs), target)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Inspect (-want +got):\n%s", diff)
			}
			for _, a := range cs.Actions() {
				if a.GetVerb() != "get" {
					t.Errorf("Inspect sent %s %s: it may only get", a.GetVerb(), a.GetResource().Resource)
				}
			}
		})
	}
}

func TestInspectBlueGreen(t *testing.T) {
	r1, r2 := release(1, digest1), release(2, digest2)
	switchedAt := t0.Add(5 * time.Hour)
	rolledOut := `successfully rolled out`
	tests := []struct {
		name   string
		router map[string]string
		live   Colour
		want   func(State) State
	}{
		{"after a switch", routerAnnotations(r2, Blue), Green, func(s State) State {
			s.Live.Build, s.Live.DeployedAt = built(r2), switchedAt
			return s
		}},
		{"a release claimed the idle colour", func() map[string]string {
			a := routerAnnotations(r2, Blue)
			a[AnnotationDeploying] = "build-3 to blue at 2026-11-02T16:00:00Z"
			return a
		}(), Green, func(s State) State {
			s.Live.Build, s.Deploying = built(r2), "build-3 to blue at 2026-11-02T16:00:00Z"
			return s
		}},
		{"rolled back", func() map[string]string {
			a := routerAnnotations(r1, Green)
			a[AnnotationRolledBackBuildID], a[AnnotationRolledBackCreateTime] = r2.BuildID, r2.CreateTime.Format(time.RFC3339Nano)
			return a
		}(), Blue, func(s State) State {
			s.Live.Build, s.Live.DeployedAt = built(r1), switchedAt
			s.Records.RolledBack = &Build{ID: r2.BuildID, CreateTime: r2.CreateTime}
			return s
		}},
		{"switched back by hand", routerAnnotations(r2, Blue), Blue, func(s State) State {
			s.Live.Build = built(r1)
			s.Records.RolledBack = &Build{ID: r2.BuildID, CreateTime: r2.CreateTime}
			return s
		}},
		{"before the first switch", nil, Blue, func(s State) State {
			s.Live.Build = built(r1)
			return s
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			colours := map[Colour]*appsv1.Deployment{Blue: colour(Blue, r1, 2), Green: colour(Green, r2, 2)}
			router := changedBy(svcRouter(tt.live, tt.router), entry(FieldManager, "", switchedAt), entry("kubectl", "", switchedAt.Add(-time.Hour)))
			cs := fake.NewClientset([]runtime.Object{router, colours[Blue], colours[Green]}...)
			got, err := InspectBlueGreen(context.Background(), kubetest.Adapt(cs), bgTarget(ServiceRouter))
			if err != nil {
				t.Fatal(err)
			}
			idle := colours[tt.live.Other()]
			base := State{
				Live: Running{Deployment: "web-" + string(tt.live), Colour: tt.live, Image: colours[tt.live].Spec.Template.Spec.Containers[1].Image,
					Replicas: 2, Status: `deployment "web-` + string(tt.live) + `" ` + rolledOut},
				Idle: &Running{Deployment: idle.Name, Colour: tt.live.Other(), Image: idle.Spec.Template.Spec.Containers[1].Image,
					Build: map[Colour]*Build{Blue: built(r1), Green: built(r2)}[tt.live.Other()], Replicas: 2, Status: `deployment "` + idle.Name + `" ` + rolledOut},
			}
			if diff := cmp.Diff(tt.want(base), got); diff != "" {
				t.Errorf("InspectBlueGreen (-want +got):\n%s", diff)
			}
		})
	}
}
