package sandbox

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/cloudbuild/apiv1/v2/cloudbuildpb"
	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"

	"github.com/onnewimage/onnewimage/internal/rollout"
	"github.com/onnewimage/onnewimage/internal/testenv/localcluster"
)

const (
	blue, green = "web-blue", "web-green"
	initial     = Image + ":initial"
)

// blueGreen starts a sandbox laid out as k8s/blue-green/ with the given
// router, and the function configured for it.
func blueGreen(t *testing.T, router string, env map[string]string) (*Sandbox, context.Context) {
	t.Helper()
	manifests := []string{"k8s/blue-green/deployments.yaml", "k8s/blue-green/service.yaml", "k8s/blue-green/rbac.yaml"}
	fenv := map[string]string{"STRATEGY": "blue-green", "ROLLOUT_TIMEOUT": "20s"}
	switch router {
	case "service":
		fenv["SERVICE"] = "web"
	case "ingress":
		manifests = append(manifests, "k8s/blue-green/ingress.yaml")
		fenv["INGRESS"] = "web"
	}
	for k, v := range env {
		fenv[k] = v
	}
	return start(t, Options{Manifests: manifests, FunctionEnv: fenv}, blue, green)
}

// history records, in the order etcd applied them, every change to the
// namespace's Deployments, Services and Ingresses from the moment it starts.
// resourceVersions come from one etcd, so they order changes across kinds.
type history struct {
	start   int64  // the resourceVersion recording started after
	initial string // the colour the router sent traffic to then
	// colours are the two Deployments as they were then.
	colours map[string]*appsv1.Deployment
	mu      sync.Mutex
	events  []change
}

type change struct {
	rv   int64
	kind string
	obj  runtime.Object
	// at is when the watch delivered it.
	at time.Time
}

func record(ctx context.Context, t *testing.T, sb *Sandbox) *history {
	t.Helper()
	h := &history{}
	watchers := map[string]func(metav1.ListOptions) (watch.Interface, error){
		"Deployment": func(o metav1.ListOptions) (watch.Interface, error) {
			return sb.Admin.AppsV1().Deployments(Namespace).Watch(ctx, o)
		},
		"Service": func(o metav1.ListOptions) (watch.Interface, error) {
			return sb.Admin.CoreV1().Services(Namespace).Watch(ctx, o)
		},
		"Ingress": func(o metav1.ListOptions) (watch.Interface, error) {
			return sb.Admin.NetworkingV1().Ingresses(Namespace).Watch(ctx, o)
		},
	}
	list, err := sb.Admin.CoreV1().ConfigMaps(Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h.start, _ = strconv.ParseInt(list.ResourceVersion, 10, 64)
	h.colours = map[string]*appsv1.Deployment{}
	for _, name := range []string{blue, green} {
		if d := lookDeployment(ctx, t, sb, name); d != nil { // None with the rolling layout.
			h.colours[name] = d
		}
	}
	if ing, err := sb.Admin.NetworkingV1().Ingresses(Namespace).Get(ctx, "web", metav1.GetOptions{}); err == nil {
		h.initial = routedTo(ing)
	} else if svc, err := sb.Admin.CoreV1().Services(Namespace).Get(ctx, "web", metav1.GetOptions{}); err == nil {
		h.initial = routedTo(svc)
	}
	for kind, w := range watchers {
		wi, err := w(metav1.ListOptions{ResourceVersion: list.ResourceVersion})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(wi.Stop)
		go func() {
			for ev := range wi.ResultChan() {
				m, err := metaOf(ev.Object)
				if err != nil {
					continue
				}
				rv, _ := strconv.ParseInt(m.GetResourceVersion(), 10, 64)
				h.mu.Lock()
				h.events = append(h.events, change{rv: rv, kind: kind, obj: ev.Object, at: time.Now()})
				h.mu.Unlock()
			}
		}()
	}
	return h
}

func metaOf(o runtime.Object) (metav1.Object, error) {
	switch v := o.(type) {
	case *appsv1.Deployment:
		return v, nil
	case *corev1.Service:
		return v, nil
	case *networkingv1.Ingress:
		return v, nil
	}
	return nil, fmt.Errorf("unexpected %T", o)
}

// catchUp waits until the history has seen the current version of the two
// colours and of every router, so that what it is asked next is complete.
func (h *history) catchUp(ctx context.Context, t *testing.T, sb *Sandbox) {
	t.Helper()
	want := map[string]string{}
	for _, name := range []string{blue, green, Deployment} {
		if d := lookDeployment(ctx, t, sb, name); d != nil {
			want["Deployment/"+name] = d.ResourceVersion
		}
	}
	if svc, err := sb.Admin.CoreV1().Services(Namespace).Get(ctx, "web", metav1.GetOptions{}); err == nil {
		want["Service/web"] = svc.ResourceVersion
	}
	if ing, err := sb.Admin.NetworkingV1().Ingresses(Namespace).Get(ctx, "web", metav1.GetOptions{}); err == nil {
		want["Ingress/web"] = ing.ResourceVersion
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		seen := map[string]int64{}
		for _, c := range h.sorted() {
			m, _ := metaOf(c.obj)
			seen[c.kind+"/"+m.GetName()] = c.rv
		}
		behind := ""
		for k, rv := range want {
			n, _ := strconv.ParseInt(rv, 10, 64)
			// An object unchanged since recording began has no event: the
			// history is complete for it at any version below the start.
			if seen[k] < n && n > h.start {
				behind = k
			}
		}
		if behind == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the recorded history never caught up with %s", behind)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (h *history) sorted() []change {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := append([]change(nil), h.events...)
	sort.Slice(out, func(i, j int) bool { return out[i].rv < out[j].rv })
	return out
}

// routedTo reads the colour a router object sends traffic to.
func routedTo(o runtime.Object) string {
	switch r := o.(type) {
	case *corev1.Service:
		if r.Name == "web" {
			return "web-" + r.Spec.Selector["version"]
		}
	case *networkingv1.Ingress:
		if r.Spec.DefaultBackend != nil && r.Spec.DefaultBackend.Service != nil {
			return strings.TrimSuffix(r.Spec.DefaultBackend.Service.Name, "-svc")
		}
		for _, rule := range r.Spec.Rules {
			for _, p := range rule.HTTP.Paths {
				return strings.TrimSuffix(p.Backend.Service.Name, "-svc")
			}
		}
	}
	return ""
}

// checkSwitchOrder asserts, from the recorded history, that traffic moved
// to a colour only after that colour was fully rolled out on the image it
// was given, and returns the colours traffic went to, in order.
func (h *history) checkSwitchOrder(t *testing.T) []string {
	t.Helper()
	latest := map[string]*appsv1.Deployment{}
	for name, d := range h.colours {
		latest[name] = d
	}
	var switches []string
	routed := h.initial
	for _, c := range h.sorted() {
		if d, ok := c.obj.(*appsv1.Deployment); ok {
			latest[d.Name] = d
			continue
		}
		to := routedTo(c.obj)
		if to == "" || to == routed {
			continue
		}
		if status := statusOf(latest[to]); status != fmt.Sprintf("deployment %q successfully rolled out", to) {
			t.Errorf("traffic switched to %s at resourceVersion %d before it was rolled out (last seen: %s)", to, c.rv, status)
		}
		switches = append(switches, to)
		routed = to
	}
	return switches
}

// statusOf is what rollout.Status says of d.
func statusOf(d *appsv1.Deployment) string {
	if d == nil {
		return "never seen"
	}
	status, _, err := rollout.Status(d)
	if err != nil {
		return err.Error()
	}
	return status
}

func router(ctx context.Context, t *testing.T, sb *Sandbox, kind string) (string, map[string]string) {
	t.Helper()
	var o runtime.Object
	var err error
	var ann map[string]string
	if kind == "ingress" {
		var ing *networkingv1.Ingress
		ing, err = sb.Admin.NetworkingV1().Ingresses(Namespace).Get(ctx, "web", metav1.GetOptions{})
		o = ing
		if ing != nil {
			ann = ing.Annotations
		}
	} else {
		var svc *corev1.Service
		svc, err = sb.Admin.CoreV1().Services(Namespace).Get(ctx, "web", metav1.GetOptions{})
		o = svc
		if svc != nil {
			ann = svc.Annotations
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	return routedTo(o), ann
}

// lookDeployment returns the Deployment name, or nil when there is none.
func lookDeployment(ctx context.Context, t *testing.T, sb *Sandbox, name string) *appsv1.Deployment {
	t.Helper()
	d, err := sb.Admin.AppsV1().Deployments(Namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func getDeployment(ctx context.Context, t *testing.T, sb *Sandbox, name string) *appsv1.Deployment {
	t.Helper()
	d, err := sb.Admin.AppsV1().Deployments(Namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestE2EBlueGreenSwitchesOnlyWhenAvailable(t *testing.T) {
	for _, kind := range []string{"service", "ingress"} {
		t.Run(kind, func(t *testing.T) {
			sb, ctx := blueGreen(t, kind, nil)
			if live, _ := router(ctx, t, sb, kind); live != blue {
				t.Fatalf("router starts on %s, want %s", live, blue)
			}
			h := record(ctx, t, sb)
			b1, b2 := load(t, "web-1-success.json"), load(t, "web-2-success.json")

			line := publish(ctx, t, sb, b1)
			if line["outcome"] != "deployed" || !strings.Contains(line["reason"].(string), "green") {
				t.Fatalf("build 1: %v", line)
			}
			if live, ann := router(ctx, t, sb, kind); live != green || ann[rollout.AnnotationBuildID] != b1.GetId() ||
				ann[rollout.AnnotationPreviousColour] != "blue" || ann[rollout.AnnotationImage] != pinned(b1) {
				t.Errorf("after build 1: router on %s with %v", live, ann)
			}
			if got := webContainer(getDeployment(ctx, t, sb, blue)); got != initial {
				t.Errorf("the old colour changed to %s: it must stay as it was, for rollback", got)
			}

			line = publish(ctx, t, sb, b2)
			if line["outcome"] != "deployed" {
				t.Fatalf("build 2: %v", line)
			}
			if live, _ := router(ctx, t, sb, kind); live != blue {
				t.Errorf("after build 2: router on %s, want %s", live, blue)
			}
			if got := webContainer(getDeployment(ctx, t, sb, blue)); got != pinned(b2) {
				t.Errorf("blue runs %s, want build 2", got)
			}

			// The same build again, and an older one: nothing moves.
			for _, b := range []*cloudbuildpb.Build{b2, b1} {
				if line := publish(ctx, t, sb, b); line["outcome"] != "skipped" {
					t.Errorf("redelivered build %s: %v, want skipped", b.GetId(), line)
				}
			}
			if got := webContainer(getDeployment(ctx, t, sb, green)); got != pinned(b1) {
				t.Errorf("green runs %s after the stale delivery, want build 1 untouched", got)
			}
			h.catchUp(ctx, t, sb)
			if got := h.checkSwitchOrder(t); fmt.Sprint(got) != fmt.Sprint([]string{green, blue}) {
				t.Errorf("traffic went to %v, want [web-green web-blue]", got)
			}
		})
	}
}

func TestE2EBlueGreenNeverSwitchesToABrokenRelease(t *testing.T) {
	sb, ctx := blueGreen(t, "service", nil)
	b1, b2 := load(t, "web-1-success.json"), load(t, "web-2-success.json")
	if line := publish(ctx, t, sb, b1); line["outcome"] != "deployed" {
		t.Fatalf("build 1: %v", line)
	}
	// Build 2 is broken: its pods start but never pass readiness. The idle
	// colour (blue) is labelled so that kwok keeps its new pods unready.
	patch := fmt.Sprintf(`{"spec":{"template":{"metadata":{"labels":{%q:"true"}}}}}`, localcluster.NeverReadyLabel)
	if _, err := sb.Admin.AppsV1().Deployments(Namespace).Patch(ctx, blue, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	h := record(ctx, t, sb)
	line := publish(ctx, t, sb, b2)
	if line["outcome"] != "failed" || line["severity"] != "ERROR" {
		t.Fatalf("broken build 2: %v, want a failure logged as ERROR", line)
	}
	t.Logf("broken release: %v", line["reason"])
	if live, ann := router(ctx, t, sb, "service"); live != green || ann[rollout.AnnotationBuildID] != b1.GetId() {
		t.Errorf("router on %s recording %s: live traffic must stay on build 1 (green)", live, ann[rollout.AnnotationBuildID])
	}
	h.catchUp(ctx, t, sb)
	if got := h.checkSwitchOrder(t); len(got) != 0 {
		t.Errorf("traffic moved %v during a broken release", got)
	}
	if d := getDeployment(ctx, t, sb, green); webContainer(d) != pinned(b1) || statusOf(d) != `deployment "web-green" successfully rolled out` {
		t.Errorf("the live colour changed: %s (%s)", webContainer(d), statusOf(d))
	}
}

func TestE2EBlueGreenRollback(t *testing.T) {
	sb, ctx := blueGreen(t, "service", map[string]string{"SCALE_DOWN_OLD": "true"})
	b1 := load(t, "web-1-success.json")
	if line := publish(ctx, t, sb, b1); line["outcome"] != "deployed" {
		t.Fatalf("build 1: %v", line)
	}
	wait, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if _, err := sb.WaitFor(wait, blue, func(d *appsv1.Deployment) bool { return *d.Spec.Replicas == 0 && d.Status.Replicas == 0 }); err != nil {
		t.Fatalf("SCALE_DOWN_OLD: the old colour was not scaled to zero: %v", err)
	}
	h := record(ctx, t, sb)

	out, err := sb.Run(ctx, "onnewimage", map[string]string{"STRATEGY": "blue-green", "SERVICE": "web", "SCALE_DOWN_OLD": "true", "ROLLOUT_TIMEOUT": "1m"}, "rollback")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("rollback said: %s", out)
	if live, _ := router(ctx, t, sb, "service"); live != blue {
		t.Fatalf("after rollback: router on %s, want %s", live, blue)
	}
	d := getDeployment(ctx, t, sb, blue)
	if webContainer(d) != initial || *d.Spec.Replicas != 3 || statusOf(d) != `deployment "web-blue" successfully rolled out` {
		t.Errorf("blue after rollback: %s, %d replicas, %s; want the previous release back at full size, rolled out", webContainer(d), *d.Spec.Replicas, statusOf(d))
	}
	h.catchUp(ctx, t, sb)
	if got := h.checkSwitchOrder(t); fmt.Sprint(got) != fmt.Sprint([]string{blue}) {
		t.Errorf("traffic went to %v, want [web-blue] only after it was back up", got)
	}
	// The rolled-back build is not switched to again when redelivered.
	if line := publish(ctx, t, sb, b1); line["outcome"] != "skipped" {
		t.Errorf("redelivered rolled-back build: %v, want skipped", line)
	}
	if live, _ := router(ctx, t, sb, "service"); live != blue {
		t.Errorf("a redelivery undid the rollback: router on %s", live)
	}
}

func TestE2EBlueGreenRacingAndDuplicateEvents(t *testing.T) {
	sb, ctx := blueGreen(t, "service", nil)
	h := record(ctx, t, sb)
	b1, b2, b3 := load(t, "web-1-success.json"), load(t, "web-2-success.json"), load(t, "web-3-success.json")
	order := []*cloudbuildpb.Build{b2, b1, b3, b2, b3, b1}
	// Every message ends with a final decision: deployed or skipped
	// (failures are retried until they become one of those).
	seen := publishOverlapping(ctx, t, sb, order, 3*time.Minute, func(l map[string]any) bool { return l["outcome"] != "failed" })
	live, ann := router(ctx, t, sb, "service")
	if ann[rollout.AnnotationBuildID] != b3.GetId() || webContainer(getDeployment(ctx, t, sb, live)) != pinned(b3) {
		t.Errorf("router on %s recording build %s: want the newest build (3) live", live, ann[rollout.AnnotationBuildID])
	}
	deployed := deployedInOrder(t, sb.Function.Logs()[seen:], b1, b2, b3)
	h.catchUp(ctx, t, sb)
	if switches := h.checkSwitchOrder(t); len(switches) != len(deployed) {
		t.Errorf("traffic switched %d times (%v) for %d deploys %v: want exactly one switch per deploy", len(switches), switches, len(deployed), deployed)
	}
	t.Logf("%d messages, deployed %v", len(order), deployed)
}

// waitRouted watches the router Service until it sends traffic to colour.
func waitRouted(ctx context.Context, t *testing.T, sb *Sandbox, colour string) {
	t.Helper()
	wait, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	lw := cache.NewListWatchFromClient(sb.Admin.CoreV1().RESTClient(), "services", Namespace, fields.OneTermEqualSelector("metadata.name", "web"))
	if _, err := watchtools.UntilWithSync(wait, lw, &corev1.Service{}, nil, func(ev watch.Event) (bool, error) {
		return routedTo(ev.Object) == colour, nil
	}); err != nil {
		t.Fatalf("waiting for the router to send traffic to %s: %v", colour, err)
	}
}

// blueReplicas lists, from the recorded history, every change of blue's
// replica count as "RV: SPEC/AVAILABLE", starting with blue as it was.
func (h *history) blueReplicas() []string {
	d := h.colours[blue]
	out := []string{fmt.Sprintf("start: %d/%d", *d.Spec.Replicas, d.Status.AvailableReplicas)}
	last := out[0][len("start: "):]
	for _, c := range h.sorted() {
		if d, ok := c.obj.(*appsv1.Deployment); ok && d.Name == blue {
			if s := fmt.Sprintf("%d/%d", *d.Spec.Replicas, d.Status.AvailableReplicas); s != last {
				out = append(out, fmt.Sprintf("%d: %s", c.rv, s))
				last = s
			}
		}
	}
	return out
}

// With SCALE_DOWN_OLD, the old colour keeps serving (its replicas stay
// available) after the router switch until SCALE_DOWN_DELAY has passed, and
// is scaled to zero only then.
func TestE2EBlueGreenScaleDownDelay(t *testing.T) {
	const delay = 4 * time.Second
	sb, ctx := blueGreen(t, "service", map[string]string{"SCALE_DOWN_OLD": "true", "SCALE_DOWN_DELAY": delay.String()})
	h := record(ctx, t, sb)
	b1 := load(t, "web-1-success.json")
	line := publish(ctx, t, sb, b1)
	if line["outcome"] != "deployed" || !strings.Contains(line["reason"].(string), "scaled web-blue to 0") {
		t.Fatalf("build 1: %v, want deployed and blue scaled down", line)
	}
	h.catchUp(ctx, t, sb)

	var switched, scaled *change
	routed := h.initial
	for _, c := range h.sorted() {
		if to := routedTo(c.obj); to != "" && to != routed {
			routed = to
			if to == green && switched == nil {
				switched = &c
			}
			continue
		}
		d, ok := c.obj.(*appsv1.Deployment)
		if !ok || d.Name != blue || switched == nil {
			continue
		}
		if *d.Spec.Replicas == 0 {
			scaled = &c
			break
		}
		if d.Status.AvailableReplicas != 3 {
			t.Errorf("blue had %d available replicas at resourceVersion %d, after the switch and before its scale-down: want all 3 still serving", d.Status.AvailableReplicas, c.rv)
		}
	}
	if switched == nil || scaled == nil {
		t.Fatalf("history: switch to green %v, scale-down of blue %v; want both (blue: %v)", switched != nil, scaled != nil, h.blueReplicas())
	}
	// The scale-down patch itself finds every old replica available: blue
	// served until that moment.
	if diff := cmp.Diff([]string{"start: 3/3", fmt.Sprintf("%d: 0/3", scaled.rv)}, h.blueReplicas()[:2]); diff != "" {
		t.Errorf("blue's replicas, spec/available (-want +got):\n%s", diff)
	}
	// Not before the delay. The two times are when two watches delivered
	// the changes: allow them a little skew.
	gap := scaled.at.Sub(switched.at)
	if gap < delay-time.Second {
		t.Errorf("blue was scaled down %s after the switch, want no sooner than SCALE_DOWN_DELAY=%s", gap, delay)
	}
	t.Logf("blue was scaled down %s after the switch (%s)", gap.Round(time.Millisecond), line["reason"])
	if got := h.checkSwitchOrder(t); fmt.Sprint(got) != fmt.Sprint([]string{green}) {
		t.Errorf("traffic went to %v, want [web-green]", got)
	}
}

// A rollback run during SCALE_DOWN_DELAY finds the old colour still up and
// switches straight back to it; the delayed scale-down then leaves it alone,
// because it is live again.
func TestE2EBlueGreenRollbackWithinScaleDownDelay(t *testing.T) {
	sb, ctx := blueGreen(t, "service", map[string]string{"SCALE_DOWN_OLD": "true", "SCALE_DOWN_DELAY": "20s"})
	rollbackEnv := map[string]string{"STRATEGY": "blue-green", "SERVICE": "web", "ROLLOUT_TIMEOUT": "1m"}
	// Build cmd/onnewimage now (sb.Run builds it once), so that the rollback
	// below takes seconds, well within the delay.
	if out, err := sb.Run(ctx, "onnewimage", rollbackEnv, "rollback", "-dry-run"); err != nil {
		t.Fatal(err)
	} else {
		t.Logf("rollback -dry-run said: %s", out)
	}
	h := record(ctx, t, sb)
	b1 := load(t, "web-1-success.json")
	seen := len(sb.Function.Logs())
	if _, err := sb.Publish(ctx, b1); err != nil {
		t.Fatal(err)
	}
	waitRouted(ctx, t, sb, green)

	out, err := sb.Run(ctx, "onnewimage", rollbackEnv, "rollback")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("rollback said: %s", out)
	if live, _ := router(ctx, t, sb, "service"); live != blue {
		t.Fatalf("after rollback: router on %s, want %s", live, blue)
	}

	wait, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	line, err := sb.Function.WaitLog(wait, seen, func(l map[string]any) bool { return l["buildId"] == b1.GetId() })
	if err != nil {
		t.Fatal(err)
	}
	if line["outcome"] != "deployed" || !strings.Contains(line["reason"].(string), "left web-blue running: traffic went back to it") {
		t.Errorf("build 1: %v, want deployed, and blue left running because traffic went back to it", line)
	}
	if live, _ := router(ctx, t, sb, "service"); live != blue {
		t.Errorf("router on %s after the delayed scale-down, want %s", live, blue)
	}
	h.catchUp(ctx, t, sb)
	// Blue was never scaled down, so the rollback did not have to scale it up.
	if diff := cmp.Diff([]string{"start: 3/3"}, h.blueReplicas()); diff != "" {
		t.Errorf("blue's replicas, spec/available (-want +got):\n%s", diff)
	}
	if got := h.checkSwitchOrder(t); fmt.Sprint(got) != fmt.Sprint([]string{green, blue}) {
		t.Errorf("traffic went to %v, want [web-green web-blue]", got)
	}
}
