package sandbox

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/onnewimage/onnewimage/internal/rollout"
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
