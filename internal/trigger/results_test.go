package trigger

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/onnewimage/onnewimage/internal/result"
)

// publisher records the results published, and fails each with err.
type publisher struct {
	mu   sync.Mutex
	msgs []result.Message
	err  error
}

func (p *publisher) Publish(_ context.Context, m result.Message) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.msgs = append(p.msgs, m)
	return p.err
}

// published returns the results published, by target, in the order of
// each target's publishes.
func (p *publisher) published() []result.Message {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := append([]result.Message(nil), p.msgs...)
	// Targets are done concurrently: order by target, keeping each one's order.
	slices.SortStableFunc(out, func(a, b result.Message) int { return strings.Compare(a.Target, b.Target) })
	return out
}

const web1Digest = "sha256:4edb907ab84acf0d0ee47f6fa49b6dbc2725c7cc0205d2b249c17a64779b5eba"

// A build of main for the team's targets: a result for each of the two
// targets it deploys to, none for the one its rules keep out nor for the one
// whose image it did not push; the reports carry them.
func TestHandlePublishesEachTargetsResult(t *testing.T) {
	fakes := map[string]kubernetes.Interface{
		"staging": fake.NewClientset(deployment("web", "web"), deployment("worker", "worker")),
		"prod":    fake.NewClientset(deployment("web", "web")),
	}
	pub := &publisher{}
	h := New(fileConfig(t, teamTargets), Options{Connect: newClusters(fakes).connect, Now: func() time.Time { return now }, Results: pub})
	reps, err := h.Handle(context.Background(), event(t, teamBuild(t, "main", ""), nil, now))
	if err != nil {
		t.Fatal(err)
	}
	image := webRepo + ":a1b2c3d@" + web1Digest
	msg := func(target, where string) result.Message {
		return result.Message{
			BuildID: "0b1d0000-0000-4000-8000-000000000001", Target: target, Where: where, Image: image,
			PreviousImage: webRepo + ":initial", Strategy: "rolling", Outcome: "deployed",
			Reason: "web rolls from " + webRepo + ":initial to " + image, Commit: "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678",
			Branch: "main", Time: now,
		}
	}
	webMsg, workerMsg := msg("web-staging", "demo-project/us-central1/staging/web/web:web"), msg("worker-staging", "demo-project/us-central1/staging/worker/worker:web")
	workerMsg.Reason = strings.Replace(workerMsg.Reason, "web rolls", "worker rolls", 1)
	if diff := cmp.Diff([]result.Message{webMsg, workerMsg}, pub.published()); diff != "" {
		t.Errorf("results published (-want +got):\n%s", diff)
	}
	var carried []string
	for _, rep := range reps {
		if rep.Result != nil {
			carried = append(carried, rep.TargetName+" "+rep.Result.Outcome)
		}
	}
	if diff := cmp.Diff([]string{"web-staging deployed", "worker-staging deployed"}, carried); diff != "" {
		t.Errorf("reports carrying a result (-want +got):\n%s", diff)
	}
}

// Messages dismissed before any target is concerned publish nothing.
func TestHandlePublishesNothingForADismissedMessage(t *testing.T) {
	web1 := readBuild(t, "web-1-success.json")
	tests := []struct {
		name string
		ev   Event
	}{
		{"queued", event(t, web1, map[string]string{"status": "QUEUED"}, now)},
		{"too old", event(t, web1, nil, now.Add(-2*time.Hour))},
		{"other image", event(t, readBuild(t, "lookalike-web-evil-success.json"), nil, now)},
		{"malformed", Event{ID: "x", Time: now, Data: []byte(`{"message":{}}`)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pub := &publisher{}
			h := New(testConfig(t, nil), Options{Connector: &connector{client: fake.NewClientset(webDeployment())}, Now: func() time.Time { return now }, Results: pub})
			h.Handle(context.Background(), tt.ev)
			if got := pub.published(); len(got) != 0 {
				t.Errorf("published %+v, want nothing", got)
			}
		})
	}
}

// A redelivered event publishes what the redelivery decided, never a
// second "deployed": rolling and blue-green.
func TestHandleRedeliveryPublishesNoSecondDeployed(t *testing.T) {
	available := appsv1.DeploymentStatus{ObservedGeneration: 1, Replicas: 2, UpdatedReplicas: 2, AvailableReplicas: 2}
	tests := []struct {
		name   string
		env    map[string]string
		client func() kubernetes.Interface
		reason string // The redelivery's reason, a prefix.
	}{
		{"rolling", nil, func() kubernetes.Interface { return fake.NewClientset(webDeployment()) }, "already running " + web1Digest},
		{"blue-green", map[string]string{"STRATEGY": "blue-green", "SERVICE": "web", "ROLLOUT_TIMEOUT": "10s"}, func() kubernetes.Interface {
			return fake.NewClientset(routerService("blue"), colourDeployment("blue", "initial", available), colourDeployment("green", "older", available))
		}, "already live: web-green (green) runs " + web1Digest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pub := &publisher{}
			h := New(testConfig(t, tt.env), Options{Connector: &connector{client: tt.client()}, Now: func() time.Time { return now }, Results: pub})
			ev := event(t, readBuild(t, "web-1-success.json"), nil, now)
			for range 2 {
				if _, err := h.Handle(context.Background(), ev); err != nil {
					t.Fatal(err)
				}
			}
			var got []string
			for _, m := range pub.published() {
				got = append(got, m.Outcome)
			}
			if diff := cmp.Diff([]string{"deployed", "skipped"}, got); diff != "" {
				t.Fatalf("outcomes published (-want +got):\n%s", diff)
			}
			if second := pub.published()[1]; !strings.HasPrefix(second.Reason, tt.reason) || second.Strategy != string(h.cfg.Targets[0].Strategy) {
				t.Errorf("redelivery published %s %q (%s), want skipped %q", second.Outcome, second.Reason, second.Strategy, tt.reason)
			}
		})
	}
}

// A failed target publishes "failed" with the reason, and whether Pub/Sub
// will deliver the build again.
func TestHandlePublishesAFailure(t *testing.T) {
	tests := []struct {
		name   string
		client kubernetes.Interface
		reason string
		retry  bool
	}{
		{"missing container (for good)", fake.NewClientset(deployment("default", "web")), `deployment target missing: deployment default/web has no container "api"`, false},
		{"connection refused (retried)", nil, "connection refused", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pub := &publisher{}
			conn := &connector{client: tt.client}
			if tt.client == nil {
				conn.err = errors.New("dial tcp 10.0.0.1:443: connection refused")
			}
			h := New(testConfig(t, map[string]string{"CONTAINER": "api"}), Options{Connector: conn, Now: func() time.Time { return now }, Results: pub})
			h.Handle(context.Background(), event(t, readBuild(t, "web-1-success.json"), nil, now))
			got := pub.published()
			if len(got) != 1 {
				t.Fatalf("published %d results, want 1", len(got))
			}
			m := got[0]
			if m.Outcome != "failed" || !strings.Contains(m.Reason, tt.reason) || m.Retry != tt.retry || m.PreviousImage != "" {
				t.Errorf("published %s %q retry=%v previous=%q, want failed %q retry=%v", m.Outcome, m.Reason, m.Retry, m.PreviousImage, tt.reason, tt.retry)
			}
		})
	}
}

// A result that cannot be published changes nothing about the deploy: the
// same outcome, the same (absent) retry; the report carries the message and
// why it was not published.
func TestHandlePublishFailureChangesNoOutcome(t *testing.T) {
	var reports [2][]Report
	for i, pub := range []*publisher{{}, {err: errors.New("rpc error: code = NotFound desc = Topic not found")}} {
		cs := fake.NewClientset(webDeployment())
		h := New(testConfig(t, nil), Options{Connector: &connector{client: cs}, Now: func() time.Time { return now }, Results: pub})
		reps, err := h.Handle(context.Background(), event(t, readBuild(t, "web-1-success.json"), nil, now))
		if err != nil {
			t.Errorf("publisher %d: Handle() error = %v, want nil", i, err)
		}
		reports[i] = reps
	}
	ignore := cmpopts.IgnoreFields(Report{}, "ResultErr")
	if diff := cmp.Diff(reports[0], reports[1], ignore, cmpopts.EquateErrors()); diff != "" {
		t.Errorf("reports with a working and a failing publisher differ (-working +failing):\n%s", diff)
	}
	if len(reports[1]) != 1 || reports[1][0].ResultErr == nil || reports[1][0].Result == nil || reports[1][0].Result.Outcome != "deployed" {
		t.Errorf("failing publisher: report %+v, want the deployed result and its error", reports[1])
	}
}

// noDigest is web-1 built from branch, its pushed images without a digest.
func noDigest(t *testing.T, branch string) []byte {
	t.Helper()
	var b map[string]any
	if err := json.Unmarshal(teamBuild(t, branch, ""), &b); err != nil {
		t.Fatal(err)
	}
	for _, img := range b["results"].(map[string]any)["images"].([]any) {
		delete(img.(map[string]any), "digest")
	}
	raw, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// A pushed image that cannot be deployed (no digest) is a skipped result
// for the targets whose rules let the build in, and nothing for the others.
func TestHandlePublishesAnUndeployableImageOnlyWhereTheRulesLetItIn(t *testing.T) {
	for _, tt := range []struct {
		branch string
		want   []string
	}{
		{"main", []string{"web-staging skipped", "worker-staging skipped"}},
		{"feature/x", nil},
	} {
		t.Run(tt.branch, func(t *testing.T) {
			fakes := map[string]kubernetes.Interface{"staging": fake.NewClientset(), "prod": fake.NewClientset()}
			pub := &publisher{}
			h := New(fileConfig(t, teamTargets), Options{Connect: newClusters(fakes).connect, Now: func() time.Time { return now }, Results: pub})
			if _, err := h.Handle(context.Background(), event(t, noDigest(t, tt.branch), nil, now)); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, m := range pub.published() {
				got = append(got, m.Target+" "+m.Outcome)
				if !strings.Contains(m.Reason, "digest") {
					t.Errorf("%s: reason %q does not say the digest is missing", m.Target, m.Reason)
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("results (-want +got):\n%s", diff)
			}
		})
	}
}
