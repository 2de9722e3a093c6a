package trigger

import (
	"context"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes/fake"
)

// BenchmarkDismissByAttribute measures the common case: a QUEUED or WORKING
// message, dismissed from its status attribute without decoding the Build
// and without a network call. Run: go test -bench . -benchmem ./internal/trigger
func BenchmarkDismissByAttribute(b *testing.B) {
	conn := &connector{}
	h := New(testConfig(b, nil), Options{Connector: conn, Now: func() time.Time { return now }})
	ev := event(b, readBuild(b, "web-1-success.json"), map[string]string{"buildId": "x", "status": "WORKING"}, now)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if rep, _ := h.Handle(ctx, ev); rep.Outcome != "skipped" {
			b.Fatal(rep)
		}
	}
	if conn.calls != 0 {
		b.Fatalf("connected %d times", conn.calls)
	}
}

// BenchmarkDecideSuccessOtherImage measures a SUCCESS build of another
// image: the Build is decoded and matched, and dismissed without a network
// call (the function's own redeploy build, other services' builds).
func BenchmarkDecideSuccessOtherImage(b *testing.B) {
	conn := &connector{}
	h := New(testConfig(b, nil), Options{Connector: conn, Now: func() time.Time { return now }})
	ev := event(b, readBuild(b, "lookalike-web-evil-success.json"), map[string]string{"status": "SUCCESS"}, now)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if rep, _ := h.Handle(ctx, ev); rep.Outcome != "skipped" {
			b.Fatal(rep)
		}
	}
}

// BenchmarkDuplicateDelivery measures a redelivered SUCCESS build already
// running: decode, match, one Get of the Deployment (fake), skip.
func BenchmarkDuplicateDelivery(b *testing.B) {
	conn := &connector{client: fake.NewClientset(webDeployment())}
	h := New(testConfig(b, nil), Options{Connector: conn, Now: func() time.Time { return now }})
	ev := event(b, readBuild(b, "web-1-success.json"), nil, now)
	ctx := context.Background()
	if rep, err := h.Handle(ctx, ev); err != nil || rep.Outcome != "deployed" {
		b.Fatal(rep, err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if rep, _ := h.Handle(ctx, ev); rep.Outcome != "skipped" {
			b.Fatal(rep)
		}
	}
}
