package sandbox

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/cloudbuild/apiv1/v2/cloudbuildpb"
	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/onnewimage/onnewimage/internal/rollout"
	"github.com/onnewimage/onnewimage/internal/testenv/localcluster"
)

// canaryHistory records, in the order etcd applied them, the changes that
// move traffic or the stable release: web-canary's replica count and web's
// image.
type canaryHistory struct {
	mu     sync.Mutex
	events []string
	at     []time.Time
	// changed is closed, and replaced, at each event.
	changed chan struct{}
}

// until waits until the history holds fact.
func (h *canaryHistory) until(ctx context.Context, fact string) error {
	for {
		h.mu.Lock()
		found := false
		for _, e := range h.events {
			found = found || e == fact
		}
		changed := h.changed
		h.mu.Unlock()
		if found {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("waiting for %q: %w", fact, ctx.Err())
		}
	}
}

func (h *canaryHistory) get() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.events...)
}

// when is when fact was first seen; zero if never.
func (h *canaryHistory) when(fact string) time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, e := range h.events {
		if e == fact {
			return h.at[i]
		}
	}
	return time.Time{}
}

func recordCanary(ctx context.Context, t *testing.T, sb *Sandbox) *canaryHistory {
	t.Helper()
	list, err := sb.Admin.AppsV1().Deployments(Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	last := map[string]string{}
	for _, d := range list.Items {
		last[d.Name] = canaryFact(&d)
	}
	w, err := sb.Admin.AppsV1().Deployments(Namespace).Watch(ctx, metav1.ListOptions{ResourceVersion: list.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	h := &canaryHistory{changed: make(chan struct{})}
	go func() {
		for ev := range w.ResultChan() {
			d, ok := ev.Object.(*appsv1.Deployment)
			if !ok {
				continue
			}
			if f := canaryFact(d); f != last[d.Name] {
				last[d.Name] = f
				h.mu.Lock()
				h.events = append(h.events, f)
				h.at = append(h.at, time.Now())
				close(h.changed)
				h.changed = make(chan struct{})
				h.mu.Unlock()
			}
		}
	}()
	return h
}

// canaryFact is what the history records of d.
func canaryFact(d *appsv1.Deployment) string {
	if d.Name == "web-canary" {
		return fmt.Sprintf("web-canary replicas=%d", *d.Spec.Replicas)
	}
	return "web image=" + webContainer(d)
}

func canarySandbox(t *testing.T) (*Sandbox, context.Context) {
	t.Helper()
	return start(t, Options{
		Manifests:   []string{"k8s/canary/deployments.yaml", "k8s/canary/service.yaml", "k8s/canary/rbac.yaml"},
		FunctionEnv: map[string]string{"STRATEGY": "canary", "CANARY_PAUSE": "2s", "ROLLOUT_TIMEOUT": "30s"},
	}, Deployment)
}

func TestE2ECanaryStepsThenPromotes(t *testing.T) {
	sb, ctx := canarySandbox(t)
	h := recordCanary(ctx, t, sb)
	b1 := load(t, "web-1-success.json")

	line := publish(ctx, t, sb, b1)
	if line["outcome"] != "deployed" || !strings.Contains(line["reason"].(string), "canary 10% (1 replicas beside 3: really 25%), 50% (3 replicas beside 3: really 50%), each held 2s; promoted") {
		t.Fatalf("build 1: %v", line)
	}
	want := []string{"web-canary replicas=1", "web-canary replicas=3", "web image=" + pinned(b1), "web-canary replicas=0"}
	// The history has every change once the last one is in.
	wait, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := h.until(wait, want[len(want)-1]); err != nil {
		t.Fatalf("history %q: %v", h.get(), err)
	}
	if diff := cmp.Diff(want, h.get()); diff != "" {
		t.Errorf("traffic and stable changes (-want +got):\n%s", diff)
	}
	// The stable Deployment changed only after the last step held (2s).
	if held := h.when(want[2]).Sub(h.when(want[1])); held < 2*time.Second {
		t.Errorf("web changed %s after the canary's last step, want after its 2s hold", held)
	}
	c := getDeployment(ctx, t, sb, "web-canary")
	if c.Annotations[rollout.AnnotationCanary] != "" {
		t.Errorf("web-canary still records progress %q", c.Annotations[rollout.AnnotationCanary])
	}
	if line := publish(ctx, t, sb, b1); line["outcome"] != "skipped" {
		t.Errorf("build 1 again: %v, want skipped", line)
	}
}

func TestE2ECanaryAbortsOnRestart(t *testing.T) {
	sb, ctx := canarySandbox(t)
	b1 := load(t, "web-1-success.json")
	// Build 1 crashes: kwok restarts its canary pod's container a second
	// after it runs (exit code 1, the pod's termination message).
	crash(ctx, t, sb, "web-canary", "crashed on purpose")
	h := recordCanary(ctx, t, sb)
	restarted := watchRestarts(ctx, t, sb)
	stableBefore := getDeployment(ctx, t, sb, Deployment)

	line := publish(ctx, t, sb, b1)
	reason, _ := line["reason"].(string)
	if line["outcome"] != "failed" || line["severity"] != "ERROR" || line["retry"] != false ||
		!strings.HasPrefix(reason, "canary aborted at 10%: pod web-canary-") ||
		!strings.Contains(reason, " restarted, exit code 1: Error: crashed on purpose; traffic is back on web") {
		t.Fatalf("crashing build 1: %v, want an ERROR, not retried, naming the step, the pod and why", line)
	}
	wait, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := h.until(wait, "web-canary replicas=0"); err != nil {
		t.Fatalf("history %q: %v", h.get(), err)
	}
	if diff := cmp.Diff([]string{"web-canary replicas=1", "web-canary replicas=0"}, h.get()); diff != "" {
		t.Errorf("traffic and stable changes (-want +got):\n%s", diff)
	}
	at, ok := restarted()
	if !ok {
		t.Fatal("no canary restart was observed")
	}
	back := h.when("web-canary replicas=0").Sub(at)
	t.Logf("traffic back on stable %s after the restart was observed", back)
	if back > time.Second {
		t.Errorf("traffic back on stable %s after the restart was observed, want within a second", back)
	}
	stable := getDeployment(ctx, t, sb, Deployment)
	if webContainer(stable) != webContainer(stableBefore) || stable.Generation != stableBefore.Generation {
		t.Errorf("stable changed: %s (generation %d), want %s untouched (generation %d)",
			webContainer(stable), stable.Generation, webContainer(stableBefore), stableBefore.Generation)
	}
	if got := stable.Labels[rollout.LabelRejectedBuild]; got != b1.GetId() {
		t.Errorf("stable's %s = %q, want the rejected build %s", rollout.LabelRejectedBuild, got, b1.GetId())
	}
	// Redelivered, the rejected build does not start again.
	if line := publish(ctx, t, sb, b1); line["outcome"] != "skipped" {
		t.Errorf("build 1 again: %v, want skipped", line)
	}
}

// watchRestarts watches the canary's pods and returns a function that says
// when a container restart was first observed.
func watchRestarts(ctx context.Context, t *testing.T, sb *Sandbox) func() (time.Time, bool) {
	t.Helper()
	w, err := sb.Admin.CoreV1().Pods(Namespace).Watch(ctx, metav1.ListOptions{LabelSelector: "track=canary"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	var mu sync.Mutex
	var first time.Time
	go func() {
		for ev := range w.ResultChan() {
			p, ok := ev.Object.(*corev1.Pod)
			if !ok {
				continue
			}
			for _, st := range p.Status.ContainerStatuses {
				if st.RestartCount > 0 {
					mu.Lock()
					if first.IsZero() {
						first = time.Now()
					}
					mu.Unlock()
				}
			}
		}
	}()
	return func() (time.Time, bool) {
		mu.Lock()
		defer mu.Unlock()
		return first, !first.IsZero()
	}
}

// crash labels the pod template of deployment name so that kwok restarts
// each of its pods' containers once, a second after they run, with exit
// code 1 and message (see localcluster.RestartLabel).
func crash(ctx context.Context, t *testing.T, sb *Sandbox, name, message string) {
	t.Helper()
	patch := fmt.Sprintf(`{"spec":{"template":{"metadata":{"labels":{%q:"true"},"annotations":{%q:%q}}}}}`,
		localcluster.RestartLabel, localcluster.TerminationMessageAnnotation, message)
	if _, err := sb.Admin.AppsV1().Deployments(Namespace).Patch(ctx, name, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestE2ECanaryDuplicateAndNewerDeliveries(t *testing.T) {
	sb, ctx := canarySandbox(t)
	h := recordCanary(ctx, t, sb)
	claims := recordClaims(ctx, t, sb)
	b1, b2 := load(t, "web-1-success.json"), load(t, "web-2-success.json")
	// Every message ends with a final decision: deployed or skipped (a
	// delivery finding another invocation on the same build's canary fails
	// and is retried until it becomes one of those).
	seen := publishOverlapping(ctx, t, sb, []*cloudbuildpb.Build{b1, b1, b2}, 3*time.Minute, func(l map[string]any) bool { return l["outcome"] != "failed" })
	deployed := deployedInOrder(t, sb.Function.Logs()[seen:], b1, b2)
	if len(deployed) == 0 || deployed[len(deployed)-1] != b2.GetId() {
		t.Fatalf("deployed %v, want build 2 last", deployed)
	}
	wait, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := h.until(wait, "web image="+pinned(b2)); err != nil {
		t.Fatalf("history %q: %v", h.get(), err)
	}
	var promotions []string
	for _, e := range h.get() {
		if strings.HasPrefix(e, "web image=") {
			promotions = append(promotions, e)
		}
	}
	if len(promotions) != len(deployed) {
		t.Errorf("stable changed %d times %q for %d deploys %v: want one promotion per deploy", len(promotions), promotions, len(deployed), deployed)
	}
	c, err := sb.WaitFor(wait, "web-canary", func(d *appsv1.Deployment) bool { return *d.Spec.Replicas == 0 })
	if err != nil {
		t.Fatal(err)
	}
	if p := c.Annotations[rollout.AnnotationCanary]; p != "" {
		t.Errorf("web-canary still records progress %q", p)
	}
	// One canary at a time: once build 2 claimed the canary, build 1 never
	// drove it again.
	got := claims()
	for i := 1; i < len(got); i++ {
		if got[i-1] == b2.GetId() && got[i] == b1.GetId() {
			t.Errorf("the canary was claimed by %v in turn: build 1 came back after build 2", got)
		}
	}
	t.Logf("deployed %v; claims %v; history %q", deployed, got, h.get())
}

// recordClaims records, in order, each change of the build that web-canary's
// progress (rollout.AnnotationCanary) names.
func recordClaims(ctx context.Context, t *testing.T, sb *Sandbox) func() []string {
	t.Helper()
	d := getDeployment(ctx, t, sb, "web-canary")
	w, err := sb.Admin.AppsV1().Deployments(Namespace).Watch(ctx, metav1.ListOptions{ResourceVersion: d.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	var mu sync.Mutex
	var builds []string
	go func() {
		last := ""
		for ev := range w.ResultChan() {
			d, ok := ev.Object.(*appsv1.Deployment)
			if !ok || d.Name != "web-canary" {
				continue
			}
			var p struct{ Build string }
			if raw := d.Annotations[rollout.AnnotationCanary]; raw == "" || json.Unmarshal([]byte(raw), &p) != nil || p.Build == last {
				continue
			}
			last = p.Build
			mu.Lock()
			builds = append(builds, p.Build)
			mu.Unlock()
		}
	}()
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), builds...)
	}
}

func TestE2ECanaryResumesAfterTheFunctionIsKilled(t *testing.T) {
	env := map[string]string{"STRATEGY": "canary", "CANARY_PAUSE": "3s", "ROLLOUT_TIMEOUT": "5s"}
	sb, ctx := start(t, Options{
		Manifests:   []string{"k8s/canary/deployments.yaml", "k8s/canary/service.yaml", "k8s/canary/rbac.yaml"},
		FunctionEnv: env,
	}, Deployment)
	h := recordCanary(ctx, t, sb)
	b1 := load(t, "web-1-success.json")
	if _, err := sb.Publish(ctx, b1); err != nil {
		t.Fatal(err)
	}
	// Kill the function while it holds the first step.
	wait, cancel := context.WithTimeout(ctx, 4*time.Minute)
	defer cancel()
	if _, err := sb.WaitFor(wait, "web-canary", func(d *appsv1.Deployment) bool {
		var p struct {
			Percent   int
			StepStart time.Time
		}
		return json.Unmarshal([]byte(d.Annotations[rollout.AnnotationCanary]), &p) == nil && p.Percent == 10 && !p.StepStart.IsZero()
	}); err != nil {
		t.Fatal(err)
	}
	sb.Function.Stop()
	if err := sb.StartFunction(ctx, env); err != nil {
		t.Fatal(err)
	}
	// The redelivery resumes once the dead invocation's claim has expired.
	line, err := sb.Function.WaitLog(wait, 0, func(l map[string]any) bool {
		return l["buildId"] == b1.GetId() && l["outcome"] != "failed"
	})
	if err != nil {
		t.Fatal(err)
	}
	if reason, _ := line["reason"].(string); line["outcome"] != "deployed" || !strings.HasPrefix(reason, "resumed at 10%; canary 10%") {
		t.Fatalf("redelivery: %v, want deployed, resumed at 10%%", line)
	}
	if err := h.until(wait, "web-canary replicas=0"); err != nil {
		t.Fatalf("history %q: %v", h.get(), err)
	}
	want := []string{"web-canary replicas=1", "web-canary replicas=3", "web image=" + pinned(b1), "web-canary replicas=0"}
	if diff := cmp.Diff(want, h.get()); diff != "" {
		t.Errorf("traffic and stable changes (-want +got): one promotion, no step twice\n%s", diff)
	}
}
