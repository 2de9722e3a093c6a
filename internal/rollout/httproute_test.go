package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwfake "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned/fake"

	"github.com/onnewimage/onnewimage/internal/kube/kubetest"
	"github.com/onnewimage/onnewimage/internal/testenv/fakekube"
)

var httpRoutesGVR = gatewayv1.SchemeGroupVersion.WithResource("httproutes")

// ref is a backendRef to the Service name with weight w (nil: unset).
func ref(name string, w *int32) gatewayv1.HTTPBackendRef {
	return gatewayv1.HTTPBackendRef{BackendRef: gatewayv1.BackendRef{
		BackendObjectReference: gatewayv1.BackendObjectReference{Name: gatewayv1.ObjectName(name)}, Weight: w}}
}

func weightOf(n int32) *int32 { return &n }

// httpRoute is the HTTPRoute prod/web with one rule per list of refs.
func httpRoute(rules ...[]gatewayv1.HTTPBackendRef) *gatewayv1.HTTPRoute {
	r := &gatewayv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "prod", ResourceVersion: "1"}}
	for _, refs := range rules {
		r.Spec.Rules = append(r.Spec.Rules, gatewayv1.HTTPRouteRule{BackendRefs: refs})
	}
	return r
}

// stableOnly is the route of k8s/canary between releases: web 100,
// web-canary 0.
func stableOnly() *gatewayv1.HTTPRoute {
	return httpRoute([]gatewayv1.HTTPBackendRef{ref("web", weightOf(100)), ref("web-canary", weightOf(0))})
}

// newRoutes is gateway-api's fake clientset holding route, made to keep
// resourceVersions as the API server does: a patch setting
// metadata.resourceVersion (see routeSplit.weightsPatch) is a Conflict
// unless it is current, and every write bumps it. When h is not nil, every
// weights patch that applies is recorded there as "route STABLE/CANARY".
func newRoutes(t *testing.T, h *history, route *gatewayv1.HTTPRoute) *gwfake.Clientset {
	cs := gwfake.NewSimpleClientset(route)
	tracker := cs.Tracker()
	apply := clienttesting.ObjectReaction(tracker)
	cs.PrependReactor("patch", "httproutes", func(action clienttesting.Action) (bool, runtime.Object, error) {
		pa := action.(clienttesting.PatchActionImpl)
		cur, err := tracker.Get(httpRoutesGVR, pa.GetNamespace(), pa.GetName())
		if err != nil {
			return true, nil, err
		}
		var ops []struct {
			Op, Path string
			Value    any
		}
		if err := json.Unmarshal(pa.GetPatch(), &ops); err != nil {
			return true, nil, apierrors.NewBadRequest(err.Error())
		}
		rv := mustMeta(cur).GetResourceVersion()
		var weights []string
		for _, op := range ops {
			if op.Path == "/metadata/resourceVersion" && op.Value != rv {
				return true, nil, apierrors.NewConflict(httpRoutesGVR.GroupResource(), pa.GetName(), fmt.Errorf("resourceVersion %s, patch expects %v", rv, op.Value))
			}
			if strings.HasSuffix(op.Path, "/weight") && len(weights) < 2 {
				weights = append(weights, fmt.Sprint(op.Value))
			}
		}
		if len(pa.PatchOptions.DryRun) > 0 {
			return true, cur, nil
		}
		_, obj, err := apply(action)
		if err != nil {
			return true, nil, err
		}
		if h != nil {
			h.mu.Lock()
			h.events = append(h.events, "route "+strings.Join(weights, "/"))
			h.at = append(h.at, time.Now())
			h.mu.Unlock()
		}
		return true, obj, fakekube.Bump(tracker, httpRoutesGVR, pa.GetNamespace(), obj, rv)
	})
	return cs
}

func routeTarget(routes *gwfake.Clientset) CanaryTarget {
	t := canaryTarget
	t.HTTPRoute, t.Routes = "web", routes.GatewayV1().HTTPRoutes("prod")
	return t
}

// liveWeights reads route web's split between web and web-canary, as the
// canary does: "web 100, web-canary 0".
func liveWeights(t *testing.T, routes *gwfake.Clientset) string {
	t.Helper()
	s, err := readSplit(getRoute(t, routes), "web", "web-canary")
	if err != nil {
		t.Fatalf("route web: %v", err)
	}
	return s.weights()
}

func getRoute(t *testing.T, routes *gwfake.Clientset) *gatewayv1.HTTPRoute {
	t.Helper()
	r, err := routes.GatewayV1().HTTPRoutes("prod").Get(context.Background(), "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestReadSplit(t *testing.T) {
	other := func(r gatewayv1.HTTPBackendRef, f func(*gatewayv1.HTTPBackendRef)) gatewayv1.HTTPBackendRef {
		f(&r)
		return r
	}
	ns := gatewayv1.Namespace("shop")
	kind, group := gatewayv1.Kind("ServiceImport"), gatewayv1.Group("multicluster.x-k8s.io")
	tests := []struct {
		name        string
		route       *gatewayv1.HTTPRoute
		wantWeights string
		wantErr     string
	}{
		{"one rule", stableOnly(), "web 100, web-canary 0", ""},
		{"weights unset are 1", httpRoute([]gatewayv1.HTTPBackendRef{ref("web", nil), ref("web-canary", nil)}), "web 1, web-canary 1", ""},
		{"two rules that split, one for another service", httpRoute(
			[]gatewayv1.HTTPBackendRef{ref("web-canary", weightOf(10)), ref("web", weightOf(90))},
			[]gatewayv1.HTTPBackendRef{ref("api", nil)},
			[]gatewayv1.HTTPBackendRef{ref("web", weightOf(100)), ref("web-canary", weightOf(0))}),
			"rule 0: web 90, web-canary 10; rule 2: web 100, web-canary 0", ""},
		{"no rule to stable", httpRoute([]gatewayv1.HTTPBackendRef{ref("api", nil)}), "", "no rule sends traffic to service web"},
		{"stable without canary", httpRoute([]gatewayv1.HTTPBackendRef{ref("web", nil)}), "",
			"rule 0 sends traffic to service web but not to service web-canary: add it as a backendRef (weight 0)"},
		{"canary without stable", httpRoute(
			[]gatewayv1.HTTPBackendRef{ref("web", nil), ref("web-canary", weightOf(0))},
			[]gatewayv1.HTTPBackendRef{ref("web-canary", nil)}), "",
			"rule 1 sends traffic to service web-canary but not to service web"},
		{"a third service", httpRoute([]gatewayv1.HTTPBackendRef{ref("web", nil), ref("web-canary", nil), ref("web-old", nil)}), "",
			"rule 0 sends traffic to service web-old besides services web and web-canary"},
		{"stable twice", httpRoute([]gatewayv1.HTTPBackendRef{ref("web", nil), ref("web-canary", nil), ref("web", nil)}), "",
			"rule 0 sends traffic to service web besides services web and web-canary"},
		{"a service of the same name in another namespace", httpRoute([]gatewayv1.HTTPBackendRef{
			ref("web", nil), ref("web-canary", nil), other(ref("web", nil), func(r *gatewayv1.HTTPBackendRef) { r.Namespace = &ns })}), "",
			"rule 0 sends traffic to service shop/web besides"},
		{"another kind", httpRoute([]gatewayv1.HTTPBackendRef{
			other(ref("web", nil), func(r *gatewayv1.HTTPBackendRef) { r.Kind, r.Group = &kind, &group }), ref("web-canary", nil)}), "",
			"rule 0 sends traffic to service web-canary but not to service web"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := readSplit(tt.route, "web", "web-canary")
			if tt.wantErr != "" {
				if !errors.Is(err, ErrRouteInvalid) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("readSplit error = %v, want ErrRouteInvalid saying %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("readSplit: %v", err)
			}
			if diff := cmp.Diff(tt.wantWeights, s.weights()); diff != "" {
				t.Errorf("weights (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRouteCanaryReplicas(t *testing.T) {
	tests := []struct {
		percent int
		stable  int32
		want    int32
	}{
		{10, 3, 1}, {50, 3, 2}, {34, 3, 2}, {33, 3, 1}, {1, 1, 1}, {90, 10, 9}, {5, 0, 1},
	}
	for _, tt := range tests {
		if got := RouteCanaryReplicas(tt.percent, tt.stable); got != tt.want {
			t.Errorf("RouteCanaryReplicas(%d, %d) = %d, want %d", tt.percent, tt.stable, got, tt.want)
		}
	}
}

func TestCanaryHTTPRouteStepsThenPromotes(t *testing.T) {
	r1, r2 := release(1, digest1), release(2, digest2)
	stable, canary := canaryPair(r1)
	cs := newClientset(t, stable, canary)
	controller(t, cs, becomesAvailable)
	h := recordCanary(t, cs)
	routes := newRoutes(t, h, stableOnly())
	const pause = 200 * time.Millisecond

	res, err := Canary(context.Background(), kubetest.Adapt(cs), routeTarget(routes), r2, canaryOptions(pause))
	if err != nil {
		t.Fatalf("Canary: %v", err)
	}
	// Each step: the canary's replicas (ceil(w% x 3)), rolled out, then
	// the weights; the promotion: stable, then the weights, then the
	// canary to 0.
	want := []string{"web-canary replicas=1", "route 90/10", "web-canary replicas=2", "route 50/50",
		"web image=sha256:2222", "route 100/0", "web-canary replicas=0"}
	if diff := cmp.Diff(want, h.get()); diff != "" {
		t.Errorf("traffic and stable writes (-want +got):\n%s", diff)
	}
	if held := h.when("web image=sha256:2222").Sub(h.when("route 50/50")); held < pause {
		t.Errorf("stable patched %s after the last step's weights, want after its %s hold", held, pause)
	}
	if !strings.Contains(res.Reason, "canary 10% (weights web 90, web-canary 10; 1 replicas beside 3), 50% (weights web 50, web-canary 50; 2 replicas beside 3)") {
		t.Errorf("reason %q, want it to name each step's weights", res.Reason)
	}
	if diff := cmp.Diff("web 100, web-canary 0", liveWeights(t, routes)); diff != "" {
		t.Errorf("route after the canary (-want +got):\n%s", diff)
	}
}

func TestCanaryHTTPRouteAbortsTrafficFirst(t *testing.T) {
	r1, r2 := release(1, digest1), release(2, digest2)
	stable, canary := canaryPair(r1)
	cs := newClientset(t, stable, canary, canaryPod("web-canary-a", r2, 0))
	controller(t, cs, becomesAvailable)
	h := recordCanary(t, cs)
	routes := newRoutes(t, h, stableOnly())
	onHold(t, cs, func() {
		p, err := cs.CoreV1().Pods("prod").Get(context.Background(), "web-canary-a", metav1.GetOptions{})
		if err != nil {
			t.Error(err)
			return
		}
		p.Status.ContainerStatuses[0].RestartCount = 1
		p.Status.ContainerStatuses[0].LastTerminationState.Terminated = &corev1.ContainerStateTerminated{ExitCode: 1, Reason: "Error"}
		if _, err := cs.CoreV1().Pods("prod").UpdateStatus(context.Background(), p, metav1.UpdateOptions{}); err != nil {
			t.Error(err)
		}
	})

	_, err := Canary(context.Background(), kubetest.Adapt(cs), routeTarget(routes), r2, canaryOptions(time.Minute))
	if !errors.Is(err, ErrCanaryAborted) || !strings.HasPrefix(err.Error(), "canary aborted at 10%: pod web-canary-a restarted, exit code 1: Error; traffic is back on web") {
		t.Fatalf("Canary error = %v, want ErrCanaryAborted at 10%%", err)
	}
	if diff := cmp.Diff([]string{"web-canary replicas=1", "route 90/10", "route 100/0", "web-canary replicas=0"}, h.get()); diff != "" {
		t.Errorf("traffic and stable writes (-want +got):\n%s", diff)
	}
}

// A canary pod that restarted while its step rolled out is caught before
// the weights move: the route never gives the release a share.
func TestCanaryHTTPRouteRestartedBeforeTheWeightsMove(t *testing.T) {
	r1, r2 := release(1, digest1), release(2, digest2)
	stable, canary := canaryPair(r1)
	cs := newClientset(t, stable, canary, canaryPod("web-canary-a", r2, 1))
	controller(t, cs, becomesAvailable)
	h := recordCanary(t, cs)
	routes := newRoutes(t, h, stableOnly())

	_, err := Canary(context.Background(), kubetest.Adapt(cs), routeTarget(routes), r2, canaryOptions(time.Minute))
	if !errors.Is(err, ErrCanaryAborted) || !strings.HasPrefix(err.Error(), "canary aborted at 10%: pod web-canary-a restarted, exit code 1: Error: boom; traffic is back on web") {
		t.Fatalf("Canary error = %v, want ErrCanaryAborted at 10%%", err)
	}
	if diff := cmp.Diff([]string{"web-canary replicas=1", "web-canary replicas=0"}, h.get()); diff != "" {
		t.Errorf("traffic and stable writes (-want +got):\n%s", diff)
	}
}

func TestCanaryHTTPRouteRefused(t *testing.T) {
	r1, r2 := release(1, digest1), release(2, digest2)
	stable, canary := canaryPair(r1)
	cs := newClientset(t, stable, canary)
	controller(t, cs, becomesAvailable)
	routes := newRoutes(t, nil, httpRoute([]gatewayv1.HTTPBackendRef{ref("web", nil)}))

	_, err := Canary(context.Background(), kubetest.Adapt(cs), routeTarget(routes), r2, canaryOptions(0))
	if !errors.Is(err, ErrRouteInvalid) {
		t.Fatalf("Canary error = %v, want ErrRouteInvalid", err)
	}
	if ps := patches(cs); len(ps) != 0 {
		t.Errorf("sent %d deployment patches, want none", len(ps))
	}
	for _, a := range routes.Actions() {
		if a.GetVerb() != "get" {
			t.Errorf("route action %s, want gets only", a.GetVerb())
		}
	}
}

func TestCanaryHTTPRouteResumeNeverMovesBack(t *testing.T) {
	r1, r2 := release(1, digest1), release(2, digest2)
	stable, canary := canaryPair(r1)
	// Recorded at the first step (10%), the route gives the canary 50%
	// (set by hand): the redelivery leaves it until the promotion.
	canary = progressOn(canary, canaryProgress{Build: r2.BuildID, CreateTime: r2.CreateTime, Image: r2.Image.String(),
		Step: 0, Percent: 10, StepStart: time.Now().Add(-time.Hour), ClaimedAt: time.Now().Add(-time.Hour)})
	cs := newClientset(t, stable, canary)
	controller(t, cs, becomesAvailable)
	h := recordCanary(t, cs)
	routes := newRoutes(t, h, httpRoute([]gatewayv1.HTTPBackendRef{ref("web", weightOf(50)), ref("web-canary", weightOf(50))}))

	if _, err := Canary(context.Background(), kubetest.Adapt(cs), routeTarget(routes), r2, canaryOptions(0)); err != nil {
		t.Fatalf("Canary: %v", err)
	}
	want := []string{"web-canary replicas=1", "web-canary replicas=2", "web image=sha256:2222", "route 100/0", "web-canary replicas=0"}
	if diff := cmp.Diff(want, h.get()); diff != "" {
		t.Errorf("traffic and stable writes (-want +got):\n%s", diff)
	}
}

func TestCanaryHTTPRouteTakesTrafficBackFromAnOlderBuild(t *testing.T) {
	r1, r2, r3 := release(1, digest1), release(2, digest2), release(3, digest3)
	stable, canary := canaryPair(r1)
	canary = progressOn(canary, canaryProgress{Build: r2.BuildID, CreateTime: r2.CreateTime, Image: r2.Image.String(),
		Step: 1, Percent: 50, Holder: "other", ClaimedAt: time.Now()})
	cs := newClientset(t, stable, canary)
	controller(t, cs, becomesAvailable)
	h := recordCanary(t, cs)
	routes := newRoutes(t, h, httpRoute([]gatewayv1.HTTPBackendRef{ref("web", weightOf(50)), ref("web-canary", weightOf(50))}))

	if _, err := Canary(context.Background(), kubetest.Adapt(cs), routeTarget(routes), r3, canaryOptions(0)); err != nil {
		t.Fatalf("Canary: %v", err)
	}
	// build-2's canary loses its share before the canary runs build-3.
	want := []string{"route 100/0", "web-canary replicas=1", "route 90/10", "web-canary replicas=2", "route 50/50",
		"web image=sha256:3333", "route 100/0", "web-canary replicas=0"}
	if diff := cmp.Diff(want, h.get()); diff != "" {
		t.Errorf("traffic and stable writes (-want +got):\n%s", diff)
	}
}

func TestSetWeightsRereadsOnConflict(t *testing.T) {
	h := &history{}
	routes := newRoutes(t, h, stableOnly())
	bumped := false
	routes.PrependReactor("patch", "httproutes", func(action clienttesting.Action) (bool, runtime.Object, error) {
		if !bumped { // Another writer (the Gateway controller's status) first.
			bumped = true
			cur, _ := routes.Tracker().Get(httpRoutesGVR, "prod", "web")
			if err := fakekube.Bump(routes.Tracker(), httpRoutesGVR, "prod", cur, mustMeta(cur).GetResourceVersion()); err != nil {
				t.Fatal(err)
			}
		}
		return false, nil, nil
	})
	got, err := routeTarget(routes).setWeights(context.Background(), 10, true, false, nil)
	if err != nil || got != "web 90, web-canary 10" {
		t.Fatalf("setWeights = %q, %v, want web 90, web-canary 10", got, err)
	}
	if diff := cmp.Diff([]string{"route 90/10"}, h.get()); diff != "" {
		t.Errorf("route writes (-want +got):\n%s", diff)
	}
}

func TestInspectCanaryShowsWeights(t *testing.T) {
	r1 := release(1, digest1)
	stable, canary := canaryPair(r1)
	cs := newClientset(t, stable, canary)
	routes := newRoutes(t, nil, httpRoute([]gatewayv1.HTTPBackendRef{ref("web", weightOf(90)), ref("web-canary", weightOf(10))}))
	s, err := InspectCanary(context.Background(), kubetest.Adapt(cs), routeTarget(routes))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff("httproute/web: web 90, web-canary 10", s.Weights); diff != "" {
		t.Errorf("Weights (-want +got):\n%s", diff)
	}
}

func TestAbortCanaryHTTPRoute(t *testing.T) {
	r1, r2 := release(1, digest1), release(2, digest2)
	stable, canary := canaryPair(r1)
	canary = progressOn(canary, canaryProgress{Build: r2.BuildID, CreateTime: r2.CreateTime, Image: r2.Image.String(),
		Step: 0, Percent: 10, Holder: "other", ClaimedAt: time.Now()})
	one := int32(1)
	canary.Spec.Replicas = &one
	cs := newClientset(t, stable, canary)
	h := recordCanary(t, cs)
	routes := newRoutes(t, h, httpRoute([]gatewayv1.HTTPBackendRef{ref("web", weightOf(90)), ref("web-canary", weightOf(10))}))
	res, err := AbortCanary(context.Background(), kubetest.Adapt(cs), routeTarget(routes), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"route 100/0", "web-canary replicas=0"}, h.get()); diff != "" {
		t.Errorf("writes (-want +got):\n%s", diff)
	}
	if !strings.Contains(res.Reason, "httproute web weighted 100/0, web-canary scaled to 0") {
		t.Errorf("reason %q, want it to say the weights went back", res.Reason)
	}
}

// TestCanaryHTTPRouteNoShareAfterLosingTheClaim: the route changes under a
// weights patch (a Conflict) and, meanwhile, another invocation claims the
// canary: the weights are not written again for a canary no longer this
// invocation's.
func TestCanaryHTTPRouteNoShareAfterLosingTheClaim(t *testing.T) {
	r1, r2 := release(1, digest1), release(2, digest2)
	stable, canary := canaryPair(r1)
	cs := newClientset(t, stable, canary)
	controller(t, cs, becomesAvailable)
	h := recordCanary(t, cs)
	routes := newRoutes(t, h, stableOnly())
	// The first 90/10 patch: another invocation takes the canary over
	// (a newer build's claim), and sets the route to 100/0.
	onFirstShare(routes, func() {
		claimByBuild3(t, cs)
		cur, _ := routes.Tracker().Get(httpRoutesGVR, "prod", "web")
		if err := fakekube.Bump(routes.Tracker(), httpRoutesGVR, "prod", cur, mustMeta(cur).GetResourceVersion()); err != nil {
			t.Fatal(err)
		}
	})

	res, err := Canary(context.Background(), kubetest.Adapt(cs), routeTarget(routes), r2, canaryOptions(0))
	if err != nil || res.Outcome != Skipped || !strings.Contains(res.Reason, "superseded: the newer build build-3") {
		t.Errorf("Canary = %s %q, %v; want skipped, superseded by build-3", res.Outcome, res.Reason, err)
	}
	for _, e := range h.get() {
		if strings.HasPrefix(e, "route ") {
			t.Errorf("route written %q after the canary was claimed by build-3", e)
		}
	}
}

// TestAbortCanaryHTTPRouteWriteInFlight: the invocation driving the canary
// had a weights write in flight (its claim checked before the abort) that
// lands after the abort's reset and before the canary goes to 0: the
// abort still leaves the route at 100/0, never a share on a canary scaled
// to 0.
func TestAbortCanaryHTTPRouteWriteInFlight(t *testing.T) {
	r1, r2 := release(1, digest1), release(2, digest2)
	stable, canary := canaryPair(r1)
	canary = progressOn(canary, canaryProgress{Build: r2.BuildID, CreateTime: r2.CreateTime, Image: r2.Image.String(),
		Step: 0, Percent: 10, Holder: "other", ClaimedAt: time.Now()})
	one := int32(1)
	canary.Spec.Replicas = &one
	cs := newClientset(t, stable, canary)
	routes := newRoutes(t, nil, httpRoute([]gatewayv1.HTTPBackendRef{ref("web", weightOf(90)), ref("web-canary", weightOf(10))}))
	landed := false
	cs.PrependReactor("patch", "deployments", func(action clienttesting.Action) (bool, runtime.Object, error) {
		if landed || action.(clienttesting.PatchActionImpl).GetName() != "web-canary" {
			return false, nil, nil
		}
		landed = true // The invocation's 80/20, just before the canary's patch.
		cur, err := routes.Tracker().Get(httpRoutesGVR, "prod", "web")
		if err != nil {
			t.Fatal(err)
		}
		r := cur.(*gatewayv1.HTTPRoute).DeepCopy()
		r.Spec.Rules[0].BackendRefs[0].Weight, r.Spec.Rules[0].BackendRefs[1].Weight = weightOf(80), weightOf(20)
		if err := fakekube.Bump(routes.Tracker(), httpRoutesGVR, "prod", r, r.ResourceVersion); err != nil {
			t.Fatal(err)
		}
		return false, nil, nil
	})
	if _, err := AbortCanary(context.Background(), kubetest.Adapt(cs), routeTarget(routes), Options{}); err != nil {
		t.Fatal(err)
	}
	if !landed {
		t.Fatal("the canary was never patched")
	}
	if diff := cmp.Diff("web 100, web-canary 0", liveWeights(t, routes)); diff != "" {
		t.Errorf("route weights after the abort (-want +got):\n%s", diff)
	}
}

// TestCanaryHTTPRouteLateWriteTakenBack: another invocation claims the
// canary after this one checked its claim and read the route, and resets
// the route, finding it at 100/0 (no write): this invocation's 90/10 still
// applies. It must take that share back, not leave it on a canary that is
// no longer its own.
func TestCanaryHTTPRouteLateWriteTakenBack(t *testing.T) {
	r1, r2 := release(1, digest1), release(2, digest2)
	stable, canary := canaryPair(r1)
	cs := newClientset(t, stable, canary)
	controller(t, cs, becomesAvailable)
	routes := newRoutes(t, nil, stableOnly())
	// Just before the first 90/10 patch applies, a newer build claims
	// the canary; its reset finds the route at 100/0 and writes nothing.
	reached := onFirstShare(routes, func() { claimByBuild3(t, cs) })

	res, err := Canary(context.Background(), kubetest.Adapt(cs), routeTarget(routes), r2, canaryOptions(0))
	if err != nil || res.Outcome != Skipped || !strings.Contains(res.Reason, "superseded: the newer build build-3") {
		t.Errorf("Canary = %s %q, %v; want skipped, superseded by build-3", res.Outcome, res.Reason, err)
	}
	if !reached() {
		t.Fatal("the route was never weighted 90/10")
	}
	if diff := cmp.Diff("web 100, web-canary 0", liveWeights(t, routes)); diff != "" {
		t.Errorf("route weights once the canary was claimed by build-3 (-want +got):\n%s", diff)
	}
}

// TestAbortCanaryWhileItSteps: the invocation driving the canary records
// its next step between the abort's read and its patch (a Conflict): the
// abort still stops that canary, the same build's, and does not fail
// leaving it to take its next step's share.
func TestAbortCanaryWhileItSteps(t *testing.T) {
	r1, r2 := release(1, digest1), release(2, digest2)
	stable, canary := canaryPair(r1)
	at := func(step, percent int) canaryProgress {
		return canaryProgress{Build: r2.BuildID, CreateTime: r2.CreateTime, Image: r2.Image.String(),
			Step: step, Percent: percent, Holder: "other", ClaimedAt: time.Now()}
	}
	canary = progressOn(canary, at(0, 10))
	one := int32(1)
	canary.Spec.Replicas = &one
	cs := newClientset(t, stable, canary)
	routes := newRoutes(t, nil, httpRoute([]gatewayv1.HTTPBackendRef{ref("web", weightOf(90)), ref("web-canary", weightOf(10))}))
	stepped := false
	cs.PrependReactor("patch", "deployments", func(action clienttesting.Action) (bool, runtime.Object, error) {
		if stepped || action.(clienttesting.PatchActionImpl).GetName() != "web-canary" {
			return false, nil, nil
		}
		stepped = true // The invocation's next step, just before the abort's patch.
		obj, err := cs.Tracker().Get(deploymentsGVR, "prod", "web-canary")
		if err != nil {
			t.Fatal(err)
		}
		d := obj.(*appsv1.Deployment).DeepCopy()
		d.Annotations[AnnotationCanary] = string(mustJSON(at(1, 50)))
		if err := bump(cs.Tracker(), deploymentsGVR, "prod", d, d.ResourceVersion); err != nil {
			t.Fatal(err)
		}
		return false, nil, nil
	})
	if _, err := AbortCanary(context.Background(), kubetest.Adapt(cs), routeTarget(routes), Options{}); err != nil {
		t.Fatalf("AbortCanary while the canary steps: %v", err)
	}
	got, err := cs.AppsV1().Deployments("prod").Get(context.Background(), "web-canary", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff("replicas=0 progress=", fmt.Sprintf("replicas=%d progress=%s", *got.Spec.Replicas, got.Annotations[AnnotationCanary])); diff != "" {
		t.Errorf("canary after the abort (-want +got):\n%s", diff)
	}
}

// onFirstShare calls f, once, when the first patch that gives the canary
// 10% reaches routes, before it applies; reached reports whether it has.
func onFirstShare(routes *gwfake.Clientset, f func()) (reached func() bool) {
	done := false
	routes.PrependReactor("patch", "httproutes", func(action clienttesting.Action) (bool, runtime.Object, error) {
		var ops []struct{ Path, Value any }
		_ = json.Unmarshal(action.(clienttesting.PatchActionImpl).GetPatch(), &ops)
		if done || len(ops) < 3 || fmt.Sprint(ops[len(ops)-1].Value) != "10" {
			return false, nil, nil
		}
		done = true
		f()
		return false, nil, nil
	})
	return func() bool { return done }
}

// claimByBuild3 records, on web-canary, a newer build's claim by another
// invocation, as its takeover does.
func claimByBuild3(t *testing.T, cs *fake.Clientset) {
	obj, err := cs.Tracker().Get(deploymentsGVR, "prod", "web-canary")
	if err != nil {
		t.Fatal(err)
	}
	d := obj.(*appsv1.Deployment).DeepCopy()
	r3 := release(3, digest3)
	d.Annotations[AnnotationCanary] = string(mustJSON(canaryProgress{Build: r3.BuildID, CreateTime: r3.CreateTime, Image: r3.Image.String(),
		Step: 0, Percent: 10, Holder: "other", ClaimedAt: time.Now()}))
	if err := bump(cs.Tracker(), deploymentsGVR, "prod", d, d.ResourceVersion); err != nil {
		t.Fatal(err)
	}
}
