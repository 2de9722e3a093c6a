package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"

	"github.com/onnewimage/onnewimage/internal/kube/kubetest"
)

// digest0 is what the idle colour runs before any test release.
const digest0 = "sha256:0000000000000000000000000000000000000000000000000000000000000000"

var (
	deploymentsGVR = appsv1.SchemeGroupVersion.WithResource("deployments")
	servicesGVR    = corev1.SchemeGroupVersion.WithResource("services")
)

func bgTarget(kind RouterKind) BlueGreenTarget {
	return BlueGreenTarget{Namespace: "prod", Deployment: "web", Container: "web", RouterKind: kind, Router: "web"}
}

// colour returns web-<c> running r's image (a release recorded by its
// annotations), with n replicas, fully rolled out.
func colour(c Colour, r Release, n int32) *appsv1.Deployment {
	d := deployment("web-"+string(c), r.Image.String(), recorded(r))
	labels := map[string]string{"app": "web", ColourLabel: string(c)}
	d.Spec.Selector.MatchLabels, d.Spec.Template.Labels = labels, labels
	d.Spec.Replicas = &n
	d.Status = appsv1.DeploymentStatus{ObservedGeneration: 1, Replicas: n, UpdatedReplicas: n, ReadyReplicas: n, AvailableReplicas: n}
	return d
}

// release0 is the build the idle colour runs at the start of most tests.
var release0 = Release{BuildID: "build-0", CreateTime: t0, Image: release(0, digest0).Image}

func svcRouter(live Colour, annotations map[string]string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "prod", Annotations: annotations},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "web", ColourLabel: string(live)},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80}},
		},
	}
}

func backend(svc string) networkingv1.IngressBackend {
	return networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{Name: svc, Port: networkingv1.ServiceBackendPort{Name: "http"}}}
}

// ingressRouter sends / and the default backend to the live colour's
// Service, and /static to a Service of its own.
func ingRouter(live Colour, annotations map[string]string) *networkingv1.Ingress {
	prefix := networkingv1.PathTypePrefix
	colourBackend := backend("web-" + string(live) + "-svc")
	return &networkingv1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "prod", Annotations: annotations},
		Spec: networkingv1.IngressSpec{
			DefaultBackend: &colourBackend,
			Rules: []networkingv1.IngressRule{{IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{
				Paths: []networkingv1.HTTPIngressPath{
					{Path: "/", PathType: &prefix, Backend: colourBackend},
					{Path: "/static", PathType: &prefix, Backend: backend("static-assets")},
				},
			}}}},
		},
	}
}

func routerFor(kind RouterKind, live Colour, annotations map[string]string) runtime.Object {
	if kind == IngressRouter {
		return ingRouter(live, annotations)
	}
	return svcRouter(live, annotations)
}

// routerState reads the router back: the colour it sends traffic to (as
// every colour backend names it, for an Ingress) and its annotations.
func routerState(t *testing.T, cs *fake.Clientset, kind RouterKind) (string, map[string]string) {
	t.Helper()
	ctx := context.Background()
	if kind == IngressRouter {
		ing, err := cs.NetworkingV1().Ingresses("prod").Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		paths := ing.Spec.Rules[0].HTTP.Paths
		return fmt.Sprintf("default=%s /=%s /static=%s", ing.Spec.DefaultBackend.Service.Name, paths[0].Backend.Service.Name, paths[1].Backend.Service.Name), ing.Annotations
	}
	svc, err := cs.CoreV1().Services("prod").Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return "version=" + svc.Spec.Selector[ColourLabel], svc.Annotations
}

// routes is what routerState reports for a router sending traffic to c.
func routes(kind RouterKind, c Colour) string {
	if kind == IngressRouter {
		return fmt.Sprintf("default=web-%s-svc /=web-%s-svc /static=static-assets", c, c)
	}
	return "version=" + string(c)
}

// routerAnnotations is what a switch from `from` to r records on the router.
func routerAnnotations(r Release, from Colour) map[string]string {
	return map[string]string{
		AnnotationBuildID:         r.BuildID,
		AnnotationBuildCreateTime: r.CreateTime.Format(time.RFC3339Nano),
		AnnotationImage:           r.Image.String(),
		AnnotationCommit:          r.Commit,
		AnnotationPreviousColour:  string(from),
	}
}

// behaviour is how the simulated Deployment controller reports a rollout.
type behaviour func(d *appsv1.Deployment)

var (
	// becomesAvailable completes every rollout.
	becomesAvailable behaviour = func(d *appsv1.Deployment) {
		n := replicas(d)
		d.Status = appsv1.DeploymentStatus{ObservedGeneration: d.Generation, Replicas: n, UpdatedReplicas: n, ReadyReplicas: n, AvailableReplicas: n}
	}
	// oldReplicaRemains never terminates one old replica, and one updated
	// replica is never available.
	oldReplicaRemains behaviour = func(d *appsv1.Deployment) {
		n := replicas(d)
		d.Status = appsv1.DeploymentStatus{ObservedGeneration: d.Generation, Replicas: n + 1, UpdatedReplicas: n, ReadyReplicas: n - 1, AvailableReplicas: n - 1}
	}
	// oneUnavailable never makes one updated replica available.
	oneUnavailable behaviour = func(d *appsv1.Deployment) {
		n := replicas(d)
		d.Status = appsv1.DeploymentStatus{ObservedGeneration: d.Generation, Replicas: n, UpdatedReplicas: n, ReadyReplicas: n - 1, AvailableReplicas: n - 1}
	}
	// missesDeadline reports ProgressDeadlineExceeded.
	missesDeadline behaviour = func(d *appsv1.Deployment) {
		n := replicas(d)
		d.Status = appsv1.DeploymentStatus{ObservedGeneration: d.Generation, Replicas: n + 1, UpdatedReplicas: 1, AvailableReplicas: n,
			Conditions: []appsv1.DeploymentCondition{{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionFalse,
				Reason: "ProgressDeadlineExceeded", Message: `ReplicaSet "web-green-5d8f" has timed out progressing.`}}}
	}
	// neverObserves is a controller that is not running: status stays as
	// it was, behind the new generation.
	neverObserves behaviour = nil
)

// controller simulates the Deployment controller from a goroutine of the
// test: whenever a Deployment's spec changes (its generation moves past the
// observed one) it writes the status b gives it, through the clientset, so
// that watches see it exactly as they would see the real controller's.
func controller(t *testing.T, cs *fake.Clientset, b behaviour) {
	t.Helper()
	// Status writes keep the generation, as the API server does; the
	// clientset's update reactor would bump it.
	cs.PrependReactor("update", "deployments", func(action clienttesting.Action) (bool, runtime.Object, error) {
		ua := action.(clienttesting.UpdateActionImpl)
		if ua.GetSubresource() != "status" {
			return false, nil, nil
		}
		d := ua.GetObject().(*appsv1.Deployment).DeepCopy()
		cur, err := cs.Tracker().Get(deploymentsGVR, d.Namespace, d.Name)
		if err != nil {
			return true, nil, err
		}
		if cur.(*appsv1.Deployment).ResourceVersion != d.ResourceVersion {
			return true, nil, apierrors.NewConflict(appsv1.Resource("deployments"), d.Name, errors.New("stale status"))
		}
		var n int
		fmt.Sscan(d.ResourceVersion, &n)
		d.ResourceVersion = fmt.Sprint(n + 1)
		return true, d, cs.Tracker().Update(deploymentsGVR, d, d.Namespace)
	})
	if b == nil {
		return
	}
	w, err := cs.Tracker().Watch(deploymentsGVR, "prod")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { w.Stop(); <-done })
	go func() {
		defer close(done)
		for ev := range w.ResultChan() {
			name := ev.Object.(*appsv1.Deployment).Name
			for {
				d, err := cs.AppsV1().Deployments("prod").Get(context.Background(), name, metav1.GetOptions{})
				if err != nil || d.Generation <= d.Status.ObservedGeneration {
					break
				}
				b(d)
				if _, err := cs.AppsV1().Deployments("prod").UpdateStatus(context.Background(), d, metav1.UpdateOptions{}); !apierrors.IsConflict(err) {
					break
				}
			}
		}
	}()
}

// atSwitch records, at the moment each router patch that moves traffic is
// applied, how far the colour it moves traffic to had rolled out.
type atSwitch struct {
	mu       sync.Mutex
	progress []string
}

func (a *atSwitch) get() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.progress...)
}

func recordSwitches(t *testing.T, cs *fake.Clientset) *atSwitch {
	a := &atSwitch{}
	for _, resource := range []string{"services", "ingresses"} {
		cs.PrependReactor("patch", resource, func(action clienttesting.Action) (bool, runtime.Object, error) {
			var p struct {
				Spec struct {
					Selector       map[string]string
					DefaultBackend *networkingv1.IngressBackend
				}
			}
			if err := json.Unmarshal(action.(clienttesting.PatchActionImpl).GetPatch(), &p); err != nil {
				t.Error(err)
			}
			to := p.Spec.Selector[ColourLabel]
			if b := p.Spec.DefaultBackend; b != nil {
				to = strings.TrimSuffix(strings.TrimPrefix(b.Service.Name, "web-"), "-svc")
			}
			if to == "" {
				return false, nil, nil // A claim, not a switch.
			}
			obj, err := cs.Tracker().Get(deploymentsGVR, "prod", "web-"+to)
			if err != nil {
				t.Error(err)
				return false, nil, nil
			}
			a.mu.Lock()
			status, done, err := Status(obj.(*appsv1.Deployment))
			a.progress = append(a.progress, fmt.Sprintf("%s done=%v err=%v", status, done, err))
			a.mu.Unlock()
			return false, nil, nil
		})
	}
	return a
}

// patchesOf lists the patches sent to one kind of object, by name.
func patchesOf(cs *fake.Clientset, resource string) []string {
	var out []string
	for _, p := range patches(cs) {
		if p.GetResource().Resource == resource {
			out = append(out, p.GetName())
		}
	}
	return out
}

func imageOf(t *testing.T, cs *fake.Clientset, name string) string {
	t.Helper()
	return getDeployment(t, cs, name).Spec.Template.Spec.Containers[1].Image
}

var ignorePatch = cmpopts.IgnoreFields(Result{}, "Patch")

func TestBlueGreenSwitchesAfterAvailable(t *testing.T) {
	r1, r2 := release(1, digest1), release(2, digest2)
	for _, kind := range []RouterKind{ServiceRouter, IngressRouter} {
		t.Run(string(kind), func(t *testing.T) {
			cs := newClientset(t, routerFor(kind, Blue, routerAnnotations(r1, Green)), colour(Blue, r1, 3), colour(Green, release0, 3))
			controller(t, cs, becomesAvailable)
			switches := recordSwitches(t, cs)

			res, err := BlueGreen(context.Background(), kubetest.Adapt(cs), bgTarget(kind), r2, BlueGreenOptions{Timeout: time.Minute})
			if err != nil {
				t.Fatalf("BlueGreen: %v", err)
			}
			want := Result{Outcome: Deployed, Previous: r1.Image.String(),
				Reason: fmt.Sprintf(`switched %s web from blue to green after deployment "web-green" successfully rolled out`, kind)}
			if diff := cmp.Diff(want, res, ignorePatch); diff != "" {
				t.Errorf("BlueGreen (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff([]string{`deployment "web-green" successfully rolled out done=true err=<nil>`}, switches.get()); diff != "" {
				t.Errorf("idle colour when traffic switched (-want +got):\n%s", diff)
			}
			gotRoutes, gotAnnotations := routerState(t, cs, kind)
			if diff := cmp.Diff(routes(kind, Green), gotRoutes); diff != "" {
				t.Errorf("router (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(routerAnnotations(r2, Blue), gotAnnotations); diff != "" {
				t.Errorf("router annotations (-want +got):\n%s", diff)
			}
			got := []string{imageOf(t, cs, "web-green"), getDeployment(t, cs, "web-green").Annotations[AnnotationBuildID], imageOf(t, cs, "web-blue")}
			if diff := cmp.Diff([]string{r2.Image.String(), "build-2", r1.Image.String()}, got); diff != "" {
				t.Errorf("green image and build, blue image (-want +got):\n%s", diff)
			}
			// One patch of the idle colour; the router's claim, then its switch.
			if diff := cmp.Diff([]string{"web-green"}, patchesOf(cs, "deployments")); diff != "" {
				t.Errorf("deployments patched (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff([]string{"web", "web"}, patchesOf(cs, map[RouterKind]string{ServiceRouter: "services", IngressRouter: "ingresses"}[kind])); diff != "" {
				t.Errorf("router patches (-want +got):\n%s", diff)
			}
			var watches []string
			for _, a := range cs.Actions() {
				if w, ok := a.(clienttesting.WatchActionImpl); ok {
					watches = append(watches, w.GetResource().Resource+" "+w.WatchRestrictions.Fields.String())
				}
			}
			if diff := cmp.Diff([]string{"deployments metadata.name=web-green"}, watches); diff != "" {
				t.Errorf("watches (-want +got):\n%s", diff)
			}
		})
	}
}

func TestBlueGreenIdlePatch(t *testing.T) {
	r1, r2 := release(1, digest1), release(2, digest2)
	cs := newClientset(t, svcRouter(Blue, nil), colour(Blue, r1, 3), colour(Green, release0, 0))
	controller(t, cs, becomesAvailable)
	if _, err := BlueGreen(context.Background(), kubetest.Adapt(cs), bgTarget(ServiceRouter), r2, BlueGreenOptions{}); err != nil {
		t.Fatal(err)
	}
	var got []map[string]any
	for _, p := range patches(cs) {
		var m map[string]any
		if err := json.Unmarshal(p.GetPatch(), &m); err != nil {
			t.Fatal(err)
		}
		got = append(got, map[string]any{p.GetResource().Resource + "/" + p.GetName(): m})
	}
	// The claim says when it was made: now.
	claimed := got[0]["services/web"].(map[string]any)["metadata"].(map[string]any)["annotations"].(map[string]any)
	value, _ := claimed[AnnotationDeploying].(string)
	made, err := time.Parse(time.RFC3339, strings.TrimPrefix(value, "build-2 to green at "))
	if err != nil || time.Since(made) > time.Minute || time.Since(made) < -time.Second {
		t.Errorf("claim %q, want build-2 to green at the time it was made (%v)", value, err)
	}
	claimed[AnnotationDeploying] = "CLAIM"
	want := []map[string]any{
		{"services/web": map[string]any{"metadata": map[string]any{"resourceVersion": "1",
			"annotations": map[string]any{AnnotationDeploying: "CLAIM"}}}},
		{"deployments/web-green": map[string]any{
			"metadata": map[string]any{"resourceVersion": "1", "annotations": map[string]any{
				AnnotationBuildID:         "build-2",
				AnnotationBuildCreateTime: "2026-11-02T12:00:00.123456789Z",
				AnnotationImage:           r2.Image.String(),
				AnnotationCommit:          r2.Commit,
				AnnotationChangeCause:     r2.ChangeCause(),
				AnnotationClaim:           "2", // The router's resourceVersion after the claim.
			}},
			"spec": map[string]any{
				"replicas": float64(3), // Scaled down: scaled up to the live colour's count.
				"template": map[string]any{"spec": map[string]any{
					"containers": []any{map[string]any{"name": "web", "image": r2.Image.String()}},
				}},
			},
		}},
		{"services/web": map[string]any{
			"metadata": map[string]any{"resourceVersion": "2", "annotations": map[string]any{
				AnnotationBuildID:              "build-2",
				AnnotationBuildCreateTime:      "2026-11-02T12:00:00.123456789Z",
				AnnotationImage:                r2.Image.String(),
				AnnotationCommit:               r2.Commit,
				AnnotationPreviousColour:       "blue",
				AnnotationDeploying:            nil,
				AnnotationRolledBackBuildID:    nil,
				AnnotationRolledBackCreateTime: nil,
			}},
			"spec": map[string]any{"selector": map[string]any{ColourLabel: "green"}},
		}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("patches (-want +got):\n%s", diff)
	}
	if n := replicas(getDeployment(t, cs, "web-green")); n != 3 {
		t.Errorf("web-green has %d replicas, want 3", n)
	}
}

func TestBlueGreenNeverSwitchesToUnavailable(t *testing.T) {
	r1, r2 := release(1, digest1), release(2, digest2)
	tests := []struct {
		name   string
		b      behaviour
		target error
		reason string
	}{
		{"an old replica remains", oldReplicaRemains, ErrRolloutTimeout,
			`release not available in time: web-green did not become available within 1s (Waiting for deployment "web-green" rollout to finish: 1 old replicas are pending termination...); traffic was not switched`},
		{"an updated replica is not available", oneUnavailable, ErrRolloutTimeout,
			`release not available in time: web-green did not become available within 1s (Waiting for deployment "web-green" rollout to finish: 2 of 3 updated replicas are available...); traffic was not switched`},
		{"the controller never observes the change", neverObserves, ErrRolloutTimeout,
			"release not available in time: web-green did not become available within 1s (Waiting for deployment spec update to be observed...); traffic was not switched"},
		{"progress deadline exceeded", missesDeadline, ErrProgressDeadline,
			`deployment "web-green" exceeded its progress deadline: ReplicaSet "web-green-5d8f" has timed out progressing.; traffic was not switched`},
	}
	for _, tt := range tests {
		for _, kind := range []RouterKind{ServiceRouter, IngressRouter} {
			t.Run(tt.name+"/"+string(kind), func(t *testing.T) {
				// The reason quotes the last status the wait saw, which the
				// fake controller writes asynchronously: the timeout leaves it
				// ample time even on a loaded machine, and the cases run in
				// parallel so that the suite does not wait for each in turn.
				t.Parallel()
				cs := newClientset(t, routerFor(kind, Blue, routerAnnotations(r1, Green)), colour(Blue, r1, 3), colour(Green, release0, 3))
				controller(t, cs, tt.b)
				switches := recordSwitches(t, cs)

				res, err := BlueGreen(context.Background(), kubetest.Adapt(cs), bgTarget(kind), r2, BlueGreenOptions{Timeout: time.Second, ScaleDownOld: true})
				if !errors.Is(err, tt.target) {
					t.Fatalf("error = %v, want %v", err, tt.target)
				}
				if diff := cmp.Diff(tt.reason, err.Error()); diff != "" {
					t.Errorf("BlueGreen error (-want +got):\n%s", diff)
				}
				if diff := cmp.Diff(Result{}, res); diff != "" {
					t.Errorf("BlueGreen with its error: want the zero Result (-want +got):\n%s", diff)
				}
				if s := switches.get(); len(s) != 0 {
					t.Errorf("traffic switched to %v", s)
				}
				if got, _ := routerState(t, cs, kind); got != routes(kind, Blue) {
					t.Errorf("router = %s, want it left on blue", got)
				}
				if got := imageOf(t, cs, "web-green"); got != r2.Image.String() {
					t.Errorf("web-green runs %s, want the release (deployed, not switched to)", got)
				}
				if n := replicas(getDeployment(t, cs, "web-blue")); n != 3 {
					t.Errorf("web-blue scaled to %d though traffic never left it", n)
				}
			})
		}
	}
}

func TestBlueGreenSkips(t *testing.T) {
	r1, r2, r3 := release(1, digest1), release(2, digest2), release(3, digest3)
	rolledBack := func(r Release) map[string]string {
		a := routerAnnotations(r1, Green)
		a[AnnotationRolledBackBuildID], a[AnnotationRolledBackCreateTime] = r.BuildID, r.CreateTime.Format(time.RFC3339Nano)
		return a
	}
	tests := []struct {
		name       string
		router     map[string]string
		blue, idle *appsv1.Deployment
		reason     string
	}{
		{"already live", routerAnnotations(r2, Green), colour(Blue, r2, 3), colour(Green, r1, 3),
			"already live: web-blue (blue) runs " + digest2},
		{"same build live, image changed by hand", routerAnnotations(r2, Green), colour(Blue, release(9, digest3), 3), colour(Green, r1, 3),
			"build build-2 is already live on blue (the image has since been changed by hand to " + repo + ":v9@" + digest3 + ")"},
		{"newer build live", routerAnnotations(r3, Green), colour(Blue, r3, 3), colour(Green, r1, 3),
			"stale: build build-2 (created 2026-11-02T12:00:00Z) is not newer than the live build build-3 (created 2026-11-02T13:00:00Z)"},
		{"newer build live, recorded only on the deployment", nil, colour(Blue, r3, 3), colour(Green, r1, 3),
			"stale: build build-2 (created 2026-11-02T12:00:00Z) is not newer than the live build build-3 (created 2026-11-02T13:00:00Z)"},
		{"this build was rolled back", rolledBack(r2), colour(Blue, r1, 3), colour(Green, r2, 3),
			"build build-2 was rolled back: it is not switched to again"},
		{"a newer build was rolled back", rolledBack(r3), colour(Blue, r1, 3), colour(Green, r3, 3),
			"stale: build build-2 (created 2026-11-02T12:00:00Z) is not newer than the rolled-back build build-3 (created 2026-11-02T13:00:00Z)"},
		{"a newer build is being deployed to the idle colour", routerAnnotations(r1, Green), colour(Blue, r1, 3), colour(Green, r3, 3),
			"superseded: the newer build build-3 (created 2026-11-02T13:00:00Z) is being deployed to web-green"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cs := newClientset(t, svcRouter(Blue, tt.router), tt.blue, tt.idle)
			res, err := BlueGreen(context.Background(), kubetest.Adapt(cs), bgTarget(ServiceRouter), r2, BlueGreenOptions{})
			if err != nil {
				t.Fatal(err)
			}
			want := Result{Outcome: Skipped, Previous: tt.blue.Spec.Template.Spec.Containers[1].Image, Reason: tt.reason}
			if diff := cmp.Diff(want, res); diff != "" {
				t.Errorf("BlueGreen (-want +got):\n%s", diff)
			}
			if ps := patches(cs); len(ps) != 0 {
				t.Errorf("sent %d patches, want none", len(ps))
			}
		})
	}
}

// An earlier attempt deployed the release to the idle colour and then lost
// a race or timed out: the retry does not patch its image again (no new
// rollout), it records its claim and switches.
func TestBlueGreenIdleAlreadyRunsRelease(t *testing.T) {
	r1, r2 := release(1, digest1), release(2, digest2)
	cs := newClientset(t, svcRouter(Blue, routerAnnotations(r1, Green)), colour(Blue, r1, 3), colour(Green, r2, 3))
	// The fake bumps the generation on any patch, where the API server would
	// not for annotations alone: the simulated controller observes it.
	controller(t, cs, becomesAvailable)
	res, err := BlueGreen(context.Background(), kubetest.Adapt(cs), bgTarget(ServiceRouter), r2, BlueGreenOptions{Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if res.Outcome != Deployed {
		t.Errorf("BlueGreen = %+v, want deployed", res)
	}
	var got []string
	for _, p := range patches(cs) {
		var m map[string]any
		if err := json.Unmarshal(p.GetPatch(), &m); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%s/%s spec=%v", p.GetResource().Resource, p.GetName(), m["spec"] != nil))
	}
	want := []string{"services/web spec=false", "deployments/web-green spec=false", "services/web spec=true"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("patches: claim, annotations only, switch (-want +got):\n%s", diff)
	}
	if route, _ := routerState(t, cs, ServiceRouter); route != "version=green" {
		t.Errorf("router = %s", route)
	}
	if img := imageOf(t, cs, "web-green"); img != r2.Image.String() {
		t.Errorf("web-green runs %s", img)
	}
	// The API server does not change an object for a patch that changes
	// nothing: the claim is what makes a patch of web-green decided before it
	// conflict.
	if got := getDeployment(t, cs, "web-green").Annotations[AnnotationClaim]; got != "2" {
		t.Errorf("web-green records claim %q, want the router's resourceVersion after the claim, 2", got)
	}
}

func TestBlueGreenScaleDownOld(t *testing.T) {
	r1, r2 := release(1, digest1), release(2, digest2)
	tests := []struct {
		name         string
		takeOver     bool // Another release changes web-blue between switch and scale-down.
		blueReplicas int32
		reason       string
	}{
		{"scales the old colour down", false, 0,
			`switched service web from blue to green after deployment "web-green" successfully rolled out; scaled web-blue to 0`},
		{"leaves it to a newer release that took it", true, 3,
			`switched service web from blue to green after deployment "web-green" successfully rolled out; left web-blue running: another release has changed it since`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cs := newClientset(t, svcRouter(Blue, routerAnnotations(r1, Green)), colour(Blue, r1, 3), colour(Green, release0, 3))
			controller(t, cs, becomesAvailable)
			if tt.takeOver {
				cs.PrependReactor("patch", "services", func(action clienttesting.Action) (bool, runtime.Object, error) {
					if !strings.Contains(string(action.(clienttesting.PatchActionImpl).GetPatch()), `"selector"`) {
						return false, nil, nil
					}
					obj, _ := cs.Tracker().Get(deploymentsGVR, "prod", "web-blue")
					d := obj.(*appsv1.Deployment)
					d.Spec.Template.Spec.Containers[1].Image = release(3, digest3).Image.String()
					if err := bump(cs.Tracker(), deploymentsGVR, "prod", d, d.ResourceVersion); err != nil {
						t.Error(err)
					}
					return false, nil, nil
				})
			}
			res, err := BlueGreen(context.Background(), kubetest.Adapt(cs), bgTarget(ServiceRouter), r2, BlueGreenOptions{ScaleDownOld: true})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(Result{Outcome: Deployed, Previous: r1.Image.String(), Reason: tt.reason}, res, ignorePatch); diff != "" {
				t.Errorf("BlueGreen (-want +got):\n%s", diff)
			}
			if n := replicas(getDeployment(t, cs, "web-blue")); n != tt.blueReplicas {
				t.Errorf("web-blue has %d replicas, want %d", n, tt.blueReplicas)
			}
		})
	}
}

// The old colour keeps running for ScaleDownDelay after the switch, then is
// scaled down, unless it is live again, claimed or changed by then. The
// delay is a channel the test controls: nothing sleeps.
func TestBlueGreenScaleDownDelay(t *testing.T) {
	r1, r2 := release(1, digest1), release(2, digest2)
	// bumpTracker changes an object behind the clientset's back, as another
	// writer would, bumping its resourceVersion.
	bumpTracker := func(t *testing.T, cs *fake.Clientset, gvr schema.GroupVersionResource, name string, change func(runtime.Object)) {
		obj, err := cs.Tracker().Get(gvr, "prod", name)
		if err != nil {
			t.Fatal(err)
		}
		change(obj)
		if err := bump(cs.Tracker(), gvr, "prod", obj, mustMeta(obj).GetResourceVersion()); err != nil {
			t.Fatal(err)
		}
	}
	// rollbackClaimsBlue makes the writes a rollback to blue makes before it
	// switches: its claim on the router, then its patch of web-blue.
	rollbackClaimsBlue := func(t *testing.T, cs *fake.Clientset) {
		bumpTracker(t, cs, servicesGVR, "web", func(o runtime.Object) {
			o.(*corev1.Service).Annotations[AnnotationDeploying] = "rollback to blue"
		})
		bumpTracker(t, cs, deploymentsGVR, "web-blue", func(o runtime.Object) {
			d := o.(*appsv1.Deployment)
			d.Annotations[AnnotationClaim] = "99"
			d.Generation-- // The API server keeps it for a change of annotations alone.
		})
	}
	// once runs f before the first patch of resource whose body contains
	// marker, then lets that patch go on.
	once := func(cs *fake.Clientset, resource, marker string, f func()) {
		done := false
		cs.PrependReactor("patch", resource, func(action clienttesting.Action) (bool, runtime.Object, error) {
			if !done && strings.Contains(string(action.(clienttesting.PatchActionImpl).GetPatch()), marker) {
				done = true
				f()
			}
			return false, nil, nil
		})
	}
	tests := []struct {
		name string
		// during runs when the delay starts.
		during func(t *testing.T, cs *fake.Clientset, cancel context.CancelFunc)
		// race sets up writes that interleave with the scale-down's.
		race         func(t *testing.T, cs *fake.Clientset)
		reason       string
		blueReplicas int32
	}{
		{"scales the old colour down after the delay", nil, nil,
			"; scaled web-blue to 0 30s after the switch", 0},
		{"the invocation ends within the delay", func(t *testing.T, cs *fake.Clientset, cancel context.CancelFunc) { cancel() }, nil,
			"; left web-blue running: context canceled within the 30s scale-down delay", 3},
		{"a rollback within the delay switches straight back", func(t *testing.T, cs *fake.Clientset, cancel context.CancelFunc) {
			res, err := Rollback(context.Background(), kubetest.Adapt(cs), bgTarget(ServiceRouter), BlueGreenOptions{Timeout: time.Minute})
			if err != nil || res.Outcome != Deployed {
				t.Fatalf("Rollback within the delay = %+v, %v", res, err)
			}
		}, nil,
			"; left web-blue running: traffic went back to it", 3},
		{"a release claims the old colour within the delay", func(t *testing.T, cs *fake.Clientset, cancel context.CancelFunc) {
			claim := fmt.Sprintf(`{"metadata":{"annotations":{%q:"build-3 to blue"}}}`, AnnotationDeploying)
			if _, err := cs.CoreV1().Services("prod").Patch(context.Background(), "web", types.StrategicMergePatchType, []byte(claim), metav1.PatchOptions{}); err != nil {
				t.Fatal(err)
			}
		}, nil,
			`; left web-blue running: service web records onnewimage.dev/deploying="build-3 to blue"`, 3},
		{"a rollback claims and patches the old colour between the scale-down's two reads", func(t *testing.T, cs *fake.Clientset, cancel context.CancelFunc) {
			var reads int
			cs.PrependReactor("get", "*", func(action clienttesting.Action) (bool, runtime.Object, error) {
				if name := action.(clienttesting.GetAction).GetName(); name == "web" || name == "web-blue" {
					if reads++; reads == 2 {
						rollbackClaimsBlue(t, cs)
					}
				}
				return false, nil, nil
			})
		}, nil,
			`; left web-blue running: service web records onnewimage.dev/deploying="rollback to blue"`, 3},
		{"a rollback claims and patches the old colour between the scale-down's reads and its patch", nil, func(t *testing.T, cs *fake.Clientset) {
			once(cs, "deployments", `"replicas":0`, func() { rollbackClaimsBlue(t, cs) })
		},
			`; left web-blue running: service web records onnewimage.dev/deploying="rollback to blue"`, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cs := newClientset(t, svcRouter(Blue, routerAnnotations(r1, Green)), colour(Blue, r1, 3), colour(Green, release0, 3))
			controller(t, cs, becomesAvailable)
			if tt.race != nil {
				tt.race(t, cs)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var atDelay []string
			o := BlueGreenOptions{Timeout: time.Minute, ScaleDownOld: true, ScaleDownDelay: 30 * time.Second}
			o.after = func(d time.Duration) <-chan time.Time {
				route, _ := routerState(t, cs, ServiceRouter)
				atDelay = append(atDelay, fmt.Sprintf("%s for %s, web-blue has %d replicas", route, d, replicas(getDeployment(t, cs, "web-blue"))))
				if tt.during != nil {
					tt.during(t, cs, cancel)
				}
				fired := make(chan time.Time, 1)
				if ctx.Err() == nil {
					fired <- time.Time{}
				}
				return fired
			}

			res, err := BlueGreen(ctx, kubetest.Adapt(cs), bgTarget(ServiceRouter), r2, o)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff([]string{"version=green for 30s, web-blue has 3 replicas"}, atDelay); diff != "" {
				t.Errorf("when the delay started (-want +got):\n%s", diff)
			}
			want := Result{Outcome: Deployed, Previous: r1.Image.String(),
				Reason: `switched service web from blue to green after deployment "web-green" successfully rolled out` + tt.reason}
			if diff := cmp.Diff(want, res, ignorePatch); diff != "" {
				t.Errorf("BlueGreen (-want +got):\n%s", diff)
			}
			if n := replicas(getDeployment(t, cs, "web-blue")); n != tt.blueReplicas {
				t.Errorf("web-blue has %d replicas, want %d", n, tt.blueReplicas)
			}
			// Nothing but the scale-down touched web-blue's replicas: a
			// rollback found it up and did not have to scale it up.
			var scaled []string
			for _, p := range patches(cs) {
				if p.GetName() == "web-blue" && strings.Contains(string(p.GetPatch()), `"replicas"`) {
					scaled = append(scaled, string(p.GetPatch()))
				}
			}
			for _, p := range scaled {
				if !strings.Contains(p, `"spec":{"replicas":0}`) {
					t.Errorf("web-blue patched %s, want only the scale-down's replicas 0", p)
				}
			}
		})
	}
}

// A scale-down that claimed the router before a rollback read it, and
// patches the colour after the rollback read it, must not leave the
// rollback switching traffic to a colour at 0: the rollback's own patch of
// the colour conflicts, and nothing is switched.
func TestRollbackNeverSwitchesToAColourScaledDown(t *testing.T) {
	r1, r2 := release(1, digest1), release(2, digest2)
	cs := newClientset(t, svcRouter(Green, routerAnnotations(r2, Blue)), colour(Blue, r1, 3), colour(Green, r2, 3))
	controller(t, cs, becomesAvailable)
	raced := false
	cs.PrependReactor("patch", "services", func(action clienttesting.Action) (bool, runtime.Object, error) {
		if raced {
			return false, nil, nil
		}
		raced = true // The rollback's first router write: it has read everything.
		obj, err := cs.Tracker().Get(deploymentsGVR, "prod", "web-blue")
		if err != nil {
			t.Fatal(err)
		}
		d := obj.(*appsv1.Deployment)
		d.Spec.Replicas = new(int32) // The scale-down's patch lands.
		if err := bump(cs.Tracker(), deploymentsGVR, "prod", d, d.ResourceVersion); err != nil {
			t.Fatal(err)
		}
		return false, nil, nil
	})
	_, err := Rollback(context.Background(), kubetest.Adapt(cs), bgTarget(ServiceRouter), BlueGreenOptions{Timeout: time.Minute})
	route, _ := routerState(t, cs, ServiceRouter)
	blue := replicas(getDeployment(t, cs, "web-blue"))
	if route == "version=blue" && blue == 0 {
		t.Fatalf("Rollback switched traffic to web-blue at 0 replicas (error %v)", err)
	}
	if !apierrors.IsConflict(err) || !strings.Contains(err.Error(), "nothing was switched") {
		t.Errorf("error = %v, want a Conflict saying nothing was switched", err)
	}
}

func TestBlueGreenRouterUnknown(t *testing.T) {
	r1 := release(1, digest1)
	canary := svcRouter(Blue, nil)
	canary.Spec.Selector[ColourLabel] = "canary"
	unversioned := svcRouter(Blue, nil)
	delete(unversioned.Spec.Selector, ColourLabel)
	elsewhere := ingRouter(Blue, nil)
	elsewhere.Spec.DefaultBackend.Service.Name = "maintenance"
	elsewhere.Spec.Rules[0].HTTP.Paths[0].Backend.Service.Name = "maintenance"
	both := ingRouter(Blue, nil)
	both.Spec.Rules[0].HTTP.Paths[1].Backend.Service.Name = "web-green-svc"
	tests := []struct {
		name   string
		kind   RouterKind
		router runtime.Object
		want   string
	}{
		{"service selects another version", ServiceRouter, canary, `service prod/web selects version="canary", not blue or green`},
		{"service selects no version", ServiceRouter, unversioned, `service prod/web selects version="", not blue or green`},
		{"ingress sends traffic elsewhere", IngressRouter, elsewhere, "no backend of ingress prod/web is web-blue-svc or web-green-svc"},
		{"ingress sends traffic to both", IngressRouter, both, "ingress prod/web sends traffic to both web-blue-svc and web-green-svc"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cs := newClientset(t, tt.router, colour(Blue, r1, 3), colour(Green, release0, 3))
			_, err := BlueGreen(context.Background(), kubetest.Adapt(cs), bgTarget(tt.kind), release(2, digest2), BlueGreenOptions{})
			if !errors.Is(err, ErrRouterUnknown) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %v, want ErrRouterUnknown saying %q", err, tt.want)
			}
			_, err = Rollback(context.Background(), kubetest.Adapt(cs), bgTarget(tt.kind), BlueGreenOptions{})
			if !errors.Is(err, ErrRouterUnknown) {
				t.Errorf("Rollback: error = %v, want ErrRouterUnknown", err)
			}
			if ps := patches(cs); len(ps) != 0 {
				t.Errorf("sent %d patches, want none", len(ps))
			}
		})
	}
}

// raceOnRouter makes the first router patch whose body contains marker lose
// a race: just before it lands, the router is switched to live (a
// Deployment running r, recorded on the router as it would be), bumping
// both resourceVersions as the API server would.
func raceOnRouter(t *testing.T, cs *fake.Clientset, marker string, live Colour, r Release) {
	raced := false
	cs.PrependReactor("patch", "services", func(action clienttesting.Action) (bool, runtime.Object, error) {
		if raced || !strings.Contains(string(action.(clienttesting.PatchActionImpl).GetPatch()), marker) {
			return false, nil, nil
		}
		raced = true
		obj, err := cs.Tracker().Get(deploymentsGVR, "prod", "web-"+string(live))
		if err != nil {
			t.Fatal(err)
		}
		d := obj.(*appsv1.Deployment)
		d.Annotations = recorded(r)
		d.Spec.Template.Spec.Containers[1].Image = r.Image.String()
		if err := bump(cs.Tracker(), deploymentsGVR, "prod", d, d.ResourceVersion); err != nil {
			t.Fatal(err)
		}
		obj, err = cs.Tracker().Get(servicesGVR, "prod", "web")
		if err != nil {
			t.Fatal(err)
		}
		svc := obj.(*corev1.Service)
		svc.Spec.Selector[ColourLabel] = string(live)
		svc.Annotations = routerAnnotations(r, live.Other())
		if err := bump(cs.Tracker(), servicesGVR, "prod", svc, svc.ResourceVersion); err != nil {
			t.Fatal(err)
		}
		return false, nil, nil // Now let this patch reach the resourceVersion check.
	})
}

func TestBlueGreenRace(t *testing.T) {
	r1, r2, r3 := release(1, digest1), release(2, digest2), release(3, digest3)

	t.Run("a newer build switched while this one waited", func(t *testing.T) {
		cs := newClientset(t, svcRouter(Blue, routerAnnotations(r1, Green)), colour(Blue, r1, 3), colour(Green, release0, 3))
		controller(t, cs, becomesAvailable)
		raceOnRouter(t, cs, `"selector"`, Green, r3) // Build 3 took green and switched to it.
		res, err := BlueGreen(context.Background(), kubetest.Adapt(cs), bgTarget(ServiceRouter), r2, BlueGreenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		want := Result{Outcome: Skipped, Previous: r3.Image.String(),
			Reason: "stale: build build-2 (created 2026-11-02T12:00:00Z) is not newer than the live build build-3 (created 2026-11-02T13:00:00Z)"}
		if diff := cmp.Diff(want, res); diff != "" {
			t.Errorf("BlueGreen(build 2) (-want +got):\n%s", diff)
		}
		route, annotations := routerState(t, cs, ServiceRouter)
		if route != "version=green" || annotations[AnnotationBuildID] != "build-3" {
			t.Errorf("router %s records %s, want green with build-3", route, annotations[AnnotationBuildID])
		}
	})

	t.Run("an older build switched before this one claimed", func(t *testing.T) {
		cs := newClientset(t, svcRouter(Blue, routerAnnotations(r1, Green)), colour(Blue, r1, 3), colour(Green, release0, 3))
		controller(t, cs, becomesAvailable)
		raceOnRouter(t, cs, AnnotationDeploying, Green, r2) // Build 2 switched to green before build 3's claim.
		res, err := BlueGreen(context.Background(), kubetest.Adapt(cs), bgTarget(ServiceRouter), r3, BlueGreenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		want := Result{Outcome: Deployed, Previous: r2.Image.String(),
			Reason: `switched service web from green to blue after deployment "web-blue" successfully rolled out`}
		if diff := cmp.Diff(want, res, ignorePatch); diff != "" {
			t.Errorf("BlueGreen(build 3) (-want +got):\n%s", diff)
		}
		// The claim failed before anything was patched: green, live by then,
		// was never touched; blue got build 3.
		if diff := cmp.Diff([]string{"web-blue"}, patchesOf(cs, "deployments")); diff != "" {
			t.Errorf("deployments patched (-want +got):\n%s", diff)
		}
		got := []string{imageOf(t, cs, "web-green"), imageOf(t, cs, "web-blue")}
		if diff := cmp.Diff([]string{r2.Image.String(), r3.Image.String()}, got); diff != "" {
			t.Errorf("green, blue images (-want +got):\n%s", diff)
		}
		route, annotations := routerState(t, cs, ServiceRouter)
		if diff := cmp.Diff([]string{"version=blue", "build-3", "green"}, []string{route, annotations[AnnotationBuildID], annotations[AnnotationPreviousColour]}); diff != "" {
			t.Errorf("router (-want +got):\n%s", diff)
		}
	})

	t.Run("two builds at once", func(t *testing.T) {
		for i := range 10 {
			cs := newClientset(t, svcRouter(Blue, routerAnnotations(r1, Green)), colour(Blue, r1, 3), colour(Green, release0, 3))
			controller(t, cs, becomesAvailable)
			w, err := cs.Tracker().Watch(servicesGVR, "prod")
			if err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			errs := make([]error, 2)
			for j, r := range []Release{r3, r2} {
				wg.Go(func() {
					_, errs[j] = BlueGreen(context.Background(), kubetest.Adapt(cs), bgTarget(ServiceRouter), r, BlueGreenOptions{Timeout: time.Minute})
				})
			}
			wg.Wait()
			w.Stop()
			if err := errors.Join(errs...); err != nil {
				t.Fatalf("run %d: %v", i, err)
			}
			// Every switch moves traffic to a newer build than the one before.
			var switched []string
			live := "blue"
			for ev := range w.ResultChan() {
				svc := ev.Object.(*corev1.Service)
				if c := svc.Spec.Selector[ColourLabel]; c != live {
					live = c
					switched = append(switched, svc.Annotations[AnnotationBuildID])
				}
			}
			if len(switched) == 0 || switched[len(switched)-1] != "build-3" || (len(switched) == 2 && switched[0] != "build-2") || len(switched) > 2 {
				t.Errorf("run %d: switches to %v, want build-3 last and no switch back", i, switched)
			}
			route, annotations := routerState(t, cs, ServiceRouter)
			if img := imageOf(t, cs, "web-"+strings.TrimPrefix(route, "version=")); img != r3.Image.String() || annotations[AnnotationBuildID] != "build-3" {
				t.Errorf("run %d: router %s (recording %s) sends traffic to %s, want build 3", i, route, annotations[AnnotationBuildID], img)
			}
		}
	})
}

func TestBlueGreenDryRun(t *testing.T) {
	r1 := release(1, digest1)
	cs := newClientset(t, svcRouter(Blue, routerAnnotations(r1, Green)), colour(Blue, r1, 3), colour(Green, release0, 3))
	res, err := BlueGreen(context.Background(), kubetest.Adapt(cs), bgTarget(ServiceRouter), release(2, digest2), BlueGreenOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Outcome != Skipped || strings.Count(string(res.Patch), "\n") != 1 {
		t.Errorf("BlueGreen(dry run) = %+v, want skipped with two patches", res)
	}
	for _, p := range patches(cs) {
		if diff := cmp.Diff([]string{metav1.DryRunAll}, p.PatchOptions.DryRun); diff != "" {
			t.Errorf("%s patch not a dry run (-want +got):\n%s", p.GetResource().Resource, diff)
		}
	}
	if n := len(patches(cs)); n != 2 {
		t.Errorf("sent %d patches, want 2 (the idle colour and the switch)", n)
	}
	if got := imageOf(t, cs, "web-green"); got != release0.Image.String() {
		t.Errorf("dry run changed web-green to %s", got)
	}
}

func TestRollback(t *testing.T) {
	r1, r2 := release(1, digest1), release(2, digest2)
	for _, kind := range []RouterKind{ServiceRouter, IngressRouter} {
		for _, blueReplicas := range []int32{3, 0} {
			t.Run(fmt.Sprintf("%s, previous colour has %d replicas", kind, blueReplicas), func(t *testing.T) {
				cs := newClientset(t, routerFor(kind, Green, routerAnnotations(r2, Blue)), colour(Blue, r1, blueReplicas), colour(Green, r2, 3))
				controller(t, cs, becomesAvailable)
				switches := recordSwitches(t, cs)

				res, err := Rollback(context.Background(), kubetest.Adapt(cs), bgTarget(kind), BlueGreenOptions{Timeout: time.Minute})
				if err != nil {
					t.Fatal(err)
				}
				want := Result{Outcome: Deployed, Previous: r2.Image.String(),
					Reason: fmt.Sprintf(`rolled back %s web from green to blue after deployment "web-blue" successfully rolled out; it runs %s (build build-1)`, kind, r1.Image)}
				if diff := cmp.Diff(want, res, ignorePatch); diff != "" {
					t.Errorf("Rollback (-want +got):\n%s", diff)
				}
				if diff := cmp.Diff([]string{`deployment "web-blue" successfully rolled out done=true err=<nil>`}, switches.get()); diff != "" {
					t.Errorf("previous colour when traffic switched (-want +got):\n%s", diff)
				}
				route, annotations := routerState(t, cs, kind)
				if diff := cmp.Diff(routes(kind, Blue), route); diff != "" {
					t.Errorf("router (-want +got):\n%s", diff)
				}
				wantAnnotations := routerAnnotations(r1, Green)
				wantAnnotations[AnnotationRolledBackBuildID] = "build-2"
				wantAnnotations[AnnotationRolledBackCreateTime] = r2.CreateTime.Format(time.RFC3339Nano)
				if diff := cmp.Diff(wantAnnotations, annotations); diff != "" {
					t.Errorf("router annotations (-want +got):\n%s", diff)
				}
				// web-blue records the rollback's claim, and is scaled up if
				// it was scaled down.
				wantSpec := map[string]any(nil)
				if blueReplicas == 0 {
					wantSpec = map[string]any{"replicas": float64(3)}
				}
				var gotSpecs []map[string]any
				for _, p := range patches(cs) {
					if p.GetResource().Resource == "deployments" {
						var m struct{ Spec map[string]any }
						if err := json.Unmarshal(p.GetPatch(), &m); err != nil {
							t.Fatal(err)
						}
						gotSpecs = append(gotSpecs, map[string]any{p.GetName(): m.Spec})
					}
				}
				if diff := cmp.Diff([]map[string]any{{"web-blue": wantSpec}}, gotSpecs); diff != "" {
					t.Errorf("deployment patches' specs (-want +got):\n%s", diff)
				}
				if got := getDeployment(t, cs, "web-blue").Annotations[AnnotationClaim]; got == "" {
					t.Errorf("web-blue records no claim")
				}
				if got := imageOf(t, cs, "web-blue"); got != r1.Image.String() {
					t.Errorf("web-blue runs %s, want it untouched", got)
				}
			})
		}
	}
}

// After a rollback, the build taken out of traffic (or an older one) is not
// switched to again when its event is delivered again; a newer build is.
func TestRollbackSticks(t *testing.T) {
	r1, r2, r3 := release(1, digest1), release(2, digest2), release(3, digest3)
	cs := newClientset(t, svcRouter(Green, routerAnnotations(r2, Blue)), colour(Blue, r1, 3), colour(Green, r2, 3))
	controller(t, cs, becomesAvailable)
	if _, err := Rollback(context.Background(), kubetest.Adapt(cs), bgTarget(ServiceRouter), BlueGreenOptions{}); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range []Release{r2, r3} {
		res, err := BlueGreen(context.Background(), kubetest.Adapt(cs), bgTarget(ServiceRouter), r, BlueGreenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(res.Outcome)+": "+res.Reason)
	}
	want := []string{
		"skipped: build build-2 was rolled back: it is not switched to again",
		`deployed: switched service web from blue to green after deployment "web-green" successfully rolled out`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("after rollback (-want +got):\n%s", diff)
	}
	if _, annotations := routerState(t, cs, ServiceRouter); annotations[AnnotationRolledBackBuildID] != "" {
		t.Errorf("the switch to build 3 left %s=%s", AnnotationRolledBackBuildID, annotations[AnnotationRolledBackBuildID])
	}
}

func TestRollbackRefuses(t *testing.T) {
	r1, r2, r3 := release(1, digest1), release(2, digest2), release(3, digest3)
	claimed := routerAnnotations(r2, Blue)
	claimed[AnnotationDeploying] = "build-3 to blue"
	tests := []struct {
		name   string
		router map[string]string
		blue   Release
		want   string
	}{
		{"the other colour holds a newer build", routerAnnotations(r2, Blue), r3,
			"no previous release to roll back to: web-blue holds build build-3, newer than the live build build-2: it is a release not switched to, not the previous one"},
		{"a newer build claimed the other colour", claimed, r1,
			`no previous release to roll back to: service web records onnewimage.dev/deploying="build-3 to blue": a release may be on its way to web-blue; try again, or remove the annotation if that deploy is gone`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cs := newClientset(t, svcRouter(Green, tt.router), colour(Blue, tt.blue, 3), colour(Green, r2, 3))
			res, err := Rollback(context.Background(), kubetest.Adapt(cs), bgTarget(ServiceRouter), BlueGreenOptions{})
			if !errors.Is(err, ErrNoPrevious) {
				t.Fatalf("error = %v, want ErrNoPrevious", err)
			}
			if diff := cmp.Diff(tt.want, err.Error()); diff != "" {
				t.Errorf("Rollback error (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(Result{}, res); diff != "" {
				t.Errorf("Rollback with its error: want the zero Result (-want +got):\n%s", diff)
			}
			if ps := patches(cs); len(ps) != 0 {
				t.Errorf("sent %d patches, want none", len(ps))
			}
		})
	}
}

func TestRollbackSwitchesAtMostOnce(t *testing.T) {
	r1, r2, r3 := release(1, digest1), release(2, digest2), release(3, digest3)
	cs := newClientset(t, svcRouter(Green, routerAnnotations(r2, Blue)), colour(Blue, r1, 3), colour(Green, r2, 3))
	controller(t, cs, becomesAvailable)
	raceOnRouter(t, cs, `"selector"`, Green, r3) // Build 3 went live on green meanwhile.
	_, err := Rollback(context.Background(), kubetest.Adapt(cs), bgTarget(ServiceRouter), BlueGreenOptions{})
	if !apierrors.IsConflict(err) || !strings.Contains(err.Error(), "nothing was switched") {
		t.Errorf("error = %v, want a Conflict saying nothing was switched", err)
	}
	if n := len(patchesOf(cs, "services")); n != 2 {
		t.Errorf("sent %d router patches, want the claim and the switch that conflicted", n)
	}
	route, annotations := routerState(t, cs, ServiceRouter)
	if route != "version=green" || annotations[AnnotationBuildID] != "build-3" {
		t.Errorf("router %s records %s, want green with build-3", route, annotations[AnnotationBuildID])
	}
}

// The idle colour already runs the release's digest under another name (a
// revert rebuilt into the same digest with a new tag, a retag, a webhook
// that rewrites registries): that is the release. It is not patched again,
// the wait accepts it, and traffic switches once.
func TestBlueGreenIdleRunsTheDigestUnderAnotherName(t *testing.T) {
	r1, r2 := release(1, digest1), release(2, digest2)
	rebuilt := "mirror.example.com/apps/web:revert@" + digest2
	idle := colour(Green, release0, 3)
	idle.Spec.Template.Spec.Containers[1].Image = rebuilt
	cs := newClientset(t, svcRouter(Blue, routerAnnotations(r1, Green)), colour(Blue, r1, 3), idle)
	controller(t, cs, becomesAvailable)
	switches := recordSwitches(t, cs)

	res, err := BlueGreen(context.Background(), kubetest.Adapt(cs), bgTarget(ServiceRouter), r2, BlueGreenOptions{Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	want := Result{Outcome: Deployed, Previous: r1.Image.String(),
		Reason: "switched service web from blue to green after deployment \"web-green\" successfully rolled out"}
	if diff := cmp.Diff(want, res, ignorePatch); diff != "" {
		t.Errorf("BlueGreen (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{`deployment "web-green" successfully rolled out done=true err=<nil>`}, switches.get()); diff != "" {
		t.Errorf("switches (-want +got):\n%s", diff)
	}
	// The claim, the idle colour's annotations, the switch: nothing more.
	if n := len(patches(cs)); n != 3 {
		t.Errorf("sent %d patches, want 3 (claim, idle annotations, switch)", n)
	}
	if got := imageOf(t, cs, "web-green"); got != rebuilt {
		t.Errorf("web-green runs %s, want it left on %s", got, rebuilt)
	}
}

// The router switched back by hand (kubectl patch service ... selector) to
// the colour it had left: the build it still records as live is taken as
// rolled back, and is not switched to again; a newer build is.
func TestBlueGreenRouterSwitchedBackByHand(t *testing.T) {
	r1, r2, r3 := release(1, digest1), release(2, digest2), release(3, digest3)
	between := release(9, digest3)
	between.BuildID, between.CreateTime = "build-1b", r1.CreateTime.Add(time.Minute)
	// Build 2 went live on green; then the Service was patched back to blue.
	cs := newClientset(t, svcRouter(Blue, routerAnnotations(r2, Blue)), colour(Blue, r1, 3), colour(Green, r2, 3))
	controller(t, cs, becomesAvailable)

	var got []string
	for _, r := range []Release{r2, between, r3} {
		res, err := BlueGreen(context.Background(), kubetest.Adapt(cs), bgTarget(ServiceRouter), r, BlueGreenOptions{Timeout: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(res.Outcome)+": "+res.Reason)
	}
	byHand := " (service web was switched back by hand: it sends traffic to web-blue, though it records build build-2, which web-green holds, as live)"
	want := []string{
		"skipped: build build-2 was rolled back: it is not switched to again" + byHand,
		"skipped: stale: build build-1b (created 2026-11-02T11:01:00Z) is not newer than the rolled-back build build-2 (created 2026-11-02T12:00:00Z)" + byHand,
		"deployed: switched service web from blue to green after deployment \"web-green\" successfully rolled out",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("after the router was switched back by hand (-want +got):\n%s", diff)
	}
	if route, annotations := routerState(t, cs, ServiceRouter); route != "version=green" || annotations[AnnotationBuildID] != "build-3" {
		t.Errorf("router %s records %s, want green with build-3", route, annotations[AnnotationBuildID])
	}
}

func TestBlueGreenUnreadableRecordFailsClosed(t *testing.T) {
	r1, r2 := release(1, digest1), release(2, digest2)
	badTime := routerAnnotations(r1, Green)
	badTime[AnnotationBuildCreateTime] = "Mon Nov 2 10:00"
	noID := routerAnnotations(r1, Green)
	delete(noID, AnnotationBuildID)
	badRolledBack := routerAnnotations(r1, Green)
	badRolledBack[AnnotationRolledBackBuildID] = "build-3"
	badIdle := colour(Green, release0, 3)
	badIdle.Annotations[AnnotationBuildCreateTime] = "soon"
	tests := []struct {
		name   string
		router map[string]string
		idle   *appsv1.Deployment
		want   string
	}{
		{"router createTime not RFC 3339", badTime, colour(Green, release0, 3),
			`service prod/web has annotation onnewimage.dev/build-create-time="Mon Nov 2 10:00", which is not an RFC 3339 time`},
		{"router createTime without build ID", noID, colour(Green, release0, 3),
			`service prod/web has annotation onnewimage.dev/build-create-time="2026-11-02T11:00:00.123456789Z" but no onnewimage.dev/build-id`},
		{"rolled-back build without createTime", badRolledBack, colour(Green, release0, 3),
			`service prod/web has annotation onnewimage.dev/rolled-back-build-id="build-3" but no onnewimage.dev/rolled-back-build-create-time`},
		{"idle colour createTime unreadable", routerAnnotations(r1, Green), badIdle,
			`deployment prod/web-green has annotation onnewimage.dev/build-create-time="soon", which is not an RFC 3339 time`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cs := newClientset(t, svcRouter(Blue, tt.router), colour(Blue, r1, 3), tt.idle)
			// A timeout, so that a release deployed by mistake fails rather than waits.
			o := BlueGreenOptions{Timeout: 300 * time.Millisecond}
			res, err := BlueGreen(context.Background(), kubetest.Adapt(cs), bgTarget(ServiceRouter), r2, o)
			if !errors.Is(err, ErrRecordUnreadable) || !strings.Contains(err.Error(), tt.want) || res.Outcome != "" {
				t.Errorf("BlueGreen = %s, %v; want the zero Result and ErrRecordUnreadable saying %q", res.Outcome, err, tt.want)
			}
			res, err = Rollback(context.Background(), kubetest.Adapt(cs), bgTarget(ServiceRouter), o)
			if !errors.Is(err, ErrRecordUnreadable) || res.Outcome != "" {
				t.Errorf("Rollback = %s, %v; want the zero Result and ErrRecordUnreadable", res.Outcome, err)
			}
			if n := len(patches(cs)); n != 0 {
				t.Errorf("sent %d patches, want none", n)
			}
		})
	}
}

// A claim records when it was made. One older than ClaimExpiry was left by
// an invocation that died: Rollback takes over, saying so. A fresh one, or
// one without a time (an older version's), still stops it.
func TestRollbackClaims(t *testing.T) {
	r1, r2 := release(1, digest1), release(2, digest2)
	now := time.Now()
	at := func(d time.Duration) string { return now.Add(d).UTC().Format(time.RFC3339) }
	tests := []struct {
		name  string
		claim string
		want  string // A substring of the reason.
		err   error
	}{
		{"an expired claim is taken over", "build-3 to blue at " + at(-2*time.Hour), `took over the expired claim onnewimage.dev/deploying="build-3 to blue at ` + at(-2*time.Hour) +
			`" on service web (older than 1h0m0s, the longest an event may take: the invocation that made it is gone)`, nil},
		{"a fresh claim refuses", "build-3 to blue at " + at(-time.Minute), `a release may be on its way to web-blue; try again (it expires at ` + at(59*time.Minute) + `)`, ErrNoPrevious},
		{"a claim without a time refuses", "build-3 to blue", `records onnewimage.dev/deploying="build-3 to blue": a release may be on its way to web-blue; try again, or remove the annotation if that deploy is gone`, ErrNoPrevious},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			annotations := routerAnnotations(r2, Blue)
			annotations[AnnotationDeploying] = tt.claim
			cs := newClientset(t, svcRouter(Green, annotations), colour(Blue, r1, 3), colour(Green, r2, 3))
			controller(t, cs, becomesAvailable)
			res, err := Rollback(context.Background(), kubetest.Adapt(cs), bgTarget(ServiceRouter), BlueGreenOptions{ClaimExpiry: time.Hour})
			said := res.Reason
			if err != nil {
				said = err.Error()
			}
			if !errors.Is(err, tt.err) || !strings.Contains(said, tt.want) {
				t.Errorf("Rollback = %s %q, %v; want %v and a reason saying %q", res.Outcome, res.Reason, err, tt.err, tt.want)
			}
			route, annotations := routerState(t, cs, ServiceRouter)
			wantRoute := "version=green"
			if tt.err == nil {
				wantRoute = "version=blue"
				if c := annotations[AnnotationDeploying]; c != "" {
					t.Errorf("the switch left the claim %q", c)
				}
			}
			if route != wantRoute {
				t.Errorf("router %s, want %s", route, wantRoute)
			}
		})
	}
}

// The next release takes over an expired claim too, and says so.
func TestBlueGreenTakesOverAnExpiredClaim(t *testing.T) {
	r1, r2 := release(1, digest1), release(2, digest2)
	annotations := routerAnnotations(r1, Green)
	stale := "build-9 to green at " + time.Now().Add(-2*time.Hour).UTC().Format(time.RFC3339)
	annotations[AnnotationDeploying] = stale
	cs := newClientset(t, svcRouter(Blue, annotations), colour(Blue, r1, 3), colour(Green, release0, 3))
	controller(t, cs, becomesAvailable)
	res, err := BlueGreen(context.Background(), kubetest.Adapt(cs), bgTarget(ServiceRouter), r2, BlueGreenOptions{ClaimExpiry: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	want := "switched service web from blue to green after deployment \"web-green\" successfully rolled out; took over the expired claim onnewimage.dev/deploying=\"" + stale +
		"\" on service web (older than 1h0m0s, the longest an event may take: the invocation that made it is gone)"
	if diff := cmp.Diff(Result{Outcome: Deployed, Previous: r1.Image.String(), Reason: want}, res, ignorePatch); diff != "" {
		t.Errorf("BlueGreen (-want +got):\n%s", diff)
	}
}

// The container may be an init container (a native sidecar): it is
// patched there, and the wait reads it there.
func TestBlueGreenInitContainer(t *testing.T) {
	r1, r2 := release(1, digest1), release(2, digest2)
	always := corev1.ContainerRestartPolicyAlways
	asSidecar := func(d *appsv1.Deployment) *appsv1.Deployment {
		web := d.Spec.Template.Spec.Containers[1]
		web.RestartPolicy = &always
		d.Spec.Template.Spec.Containers = d.Spec.Template.Spec.Containers[:1]
		d.Spec.Template.Spec.InitContainers = []corev1.Container{web}
		return d
	}
	cs := newClientset(t, svcRouter(Blue, routerAnnotations(r1, Green)), asSidecar(colour(Blue, r1, 3)), asSidecar(colour(Green, release0, 3)))
	controller(t, cs, becomesAvailable)
	res, err := BlueGreen(context.Background(), kubetest.Adapt(cs), bgTarget(ServiceRouter), r2, BlueGreenOptions{Timeout: time.Minute})
	if err != nil || res.Outcome != Deployed {
		t.Fatalf("BlueGreen = %+v, %v; want deployed", res, err)
	}
	spec := getDeployment(t, cs, "web-green").Spec.Template.Spec
	if got := []string{spec.InitContainers[0].Image, spec.Containers[0].Image}; cmp.Diff([]string{r2.Image.String(), "gcr.io/p/proxy:1"}, got) != "" {
		t.Errorf("web-green init container, container: %v; want the release in the init container", got)
	}
}
