package result

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// fake starts a pstest server holding projects/p/topics/results and
// returns it with the client options that reach it.
func fake(t *testing.T, reactors ...pstest.ServerReactorOption) (*pstest.Server, []option.ClientOption) {
	t.Helper()
	srv := pstest.NewServer(reactors...)
	t.Cleanup(func() { srv.Close() })
	if _, err := srv.GServer.CreateTopic(context.Background(), &pubsubpb.Topic{Name: "projects/p/topics/results"}); err != nil {
		t.Fatal(err)
	}
	return srv, []option.ClientOption{
		option.WithEndpoint(srv.Addr),
		option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())),
		option.WithTelemetryDisabled(),
	}
}

var deployed = Message{
	BuildID: "b1", Target: "web-prod", Where: "p/us-central1/prod/default/web:web",
	Image:         "us-docker.pkg.dev/p/apps/web:v1@sha256:" + "ab" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd",
	PreviousImage: "us-docker.pkg.dev/p/apps/web:initial", Strategy: "blue-green",
	Outcome: "deployed", Reason: "switched service web from blue to green", Commit: "c0ffee", Tag: "v1.0.0",
	Time: time.Date(2026, 11, 25, 23, 0, 0, 0, time.UTC),
}

// The data is the schema the README documents, field by field; the
// attributes repeat what subscribers filter on.
func TestPublish(t *testing.T) {
	for _, tt := range []struct {
		name, topic string
		env         map[string]string
	}{
		{"full name", "projects/p/topics/results", nil},
		{"topic ID in the credentials' project", "results", map[string]string{"GOOGLE_CLOUD_PROJECT": "p"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			srv, opts := fake(t)
			p := NewPublisher(tt.topic, Options{ClientOptions: opts})
			defer p.Close()
			if err := p.Publish(context.Background(), deployed); err != nil {
				t.Fatal(err)
			}
			msgs := srv.Messages()
			if len(msgs) != 1 {
				t.Fatalf("%d messages published, want 1", len(msgs))
			}
			var data map[string]any
			if err := json.Unmarshal(msgs[0].Data, &data); err != nil {
				t.Fatal(err)
			}
			wantData := map[string]any{
				"buildId": "b1", "target": "web-prod", "where": "p/us-central1/prod/default/web:web",
				"image": deployed.Image, "previousImage": "us-docker.pkg.dev/p/apps/web:initial", "strategy": "blue-green",
				"outcome": "deployed", "reason": "switched service web from blue to green", "commit": "c0ffee", "tag": "v1.0.0",
				"time": "2026-11-25T23:00:00Z",
			}
			if diff := cmp.Diff(wantData, data); diff != "" {
				t.Errorf("data (-want +got):\n%s", diff)
			}
			wantAttrs := map[string]string{"outcome": "deployed", "target": "web-prod", "buildId": "b1"}
			if diff := cmp.Diff(wantAttrs, msgs[0].Attributes); diff != "" {
				t.Errorf("attributes (-want +got):\n%s", diff)
			}
		})
	}
}

// A failed result says whether Pub/Sub will deliver the build again.
func TestMessageDataFailed(t *testing.T) {
	m := Message{BuildID: "b1", Target: "default", Where: "w", Image: "i", Strategy: "rolling", Outcome: "failed",
		Reason: "forbidden", Retry: true, DryRun: true, Branch: "main", Time: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)}
	want := `{"buildId":"b1","target":"default","where":"w","image":"i","strategy":"rolling","outcome":"failed","reason":"forbidden","retry":true,"dryRun":true,"branch":"main","time":"2026-01-02T03:04:05.000000006Z"}`
	if diff := cmp.Diff(want, string(m.Data())); diff != "" {
		t.Errorf("data (-want +got):\n%s", diff)
	}
}

// failFirst fails the first n Publish calls with Unavailable.
type failFirst struct {
	mu    sync.Mutex
	n     int
	calls int
}

func (f *failFirst) React(any) (bool, any, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.calls <= f.n {
		return true, nil, status.Error(codes.Unavailable, "injected")
	}
	return false, nil, nil
}

// A transient refusal is retried within the Publish: the message is
// published once.
func TestPublishRetriesTransientFailures(t *testing.T) {
	ff := &failFirst{n: 2}
	srv, opts := fake(t, pstest.ServerReactorOption{FuncName: "Publish", Reactor: ff})
	p := NewPublisher("projects/p/topics/results", Options{ClientOptions: opts})
	defer p.Close()
	if err := p.Publish(context.Background(), deployed); err != nil {
		t.Fatalf("Publish after 2 transient failures: %v", err)
	}
	if got := len(srv.Messages()); got != 1 {
		t.Errorf("%d messages published, want 1", got)
	}
	if ff.calls != 3 {
		t.Errorf("%d Publish calls, want 3 (2 refused, then 1 accepted)", ff.calls)
	}
}

// Failures end with an error, within the timeout: a missing topic at once,
// an unreachable server once the timeout has passed; and the client is
// kept once made.
func TestPublishFails(t *testing.T) {
	t.Run("topic missing", func(t *testing.T) {
		_, opts := fake(t)
		p := NewPublisher("projects/p/topics/missing", Options{ClientOptions: opts})
		defer p.Close()
		err := p.Publish(context.Background(), deployed)
		if status.Code(errors.Unwrap(err)) != codes.NotFound {
			t.Errorf("Publish to a missing topic: %v, want NotFound", err)
		}
	})
	t.Run("server unreachable", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close() // Nobody listens there now: a stopped emulator.
		p := NewPublisher("projects/p/topics/results", Options{Timeout: time.Second, ClientOptions: []option.ClientOption{
			option.WithEndpoint(addr), option.WithoutAuthentication(),
			option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())),
		}})
		defer p.Close()
		begin := time.Now()
		if err := p.Publish(context.Background(), deployed); err == nil {
			t.Fatal("Publish to a stopped server succeeded")
		}
		if took := time.Since(begin); took > 30*time.Second {
			t.Errorf("Publish took %s with a 1s timeout", took)
		}
		client := p.client
		if client == nil {
			t.Fatal("no client kept after the first Publish")
		}
		p.Publish(context.Background(), deployed)
		if p.client != client {
			t.Error("the second Publish made another client")
		}
	})
}

func TestCheckTopic(t *testing.T) {
	for _, tt := range []struct {
		topic string
		ok    bool
	}{
		{"deploy-results", true},
		{"projects/my-project/topics/deploy-results", true},
		{"projects/example.com:p/topics/r.x~y+z%_1", true},
		{"ab", false},
		{"1results", false},
		{"goog-results", false},
		{"results!", false},
		{"projects/p/topics/", false},
		{"projects//topics/results", false},
		{"projects/p/subscriptions/results", false},
		{"topics/results", false},
	} {
		if err := CheckTopic(tt.topic); (err == nil) != tt.ok {
			t.Errorf("CheckTopic(%q) = %v, want ok=%v", tt.topic, err, tt.ok)
		}
	}
}

// The README's subscription filter picks the failures by attribute alone.
func TestAttributesServeTheREADMEsFilter(t *testing.T) {
	srv, opts := fake(t)
	ctx := context.Background()
	if _, err := srv.GServer.CreateSubscription(ctx, &pubsubpb.Subscription{Name: "projects/p/subscriptions/failures",
		Topic: "projects/p/topics/results", Filter: `attributes.outcome = "failed"`}); err != nil {
		t.Fatal(err)
	}
	p := NewPublisher("projects/p/topics/results", Options{ClientOptions: opts})
	defer p.Close()
	failed := deployed
	failed.Target, failed.Outcome, failed.Reason, failed.Retry = "worker", "failed", "forbidden", true
	for _, m := range []Message{deployed, failed} {
		if err := p.Publish(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := srv.GServer.Pull(ctx, &pubsubpb.PullRequest{Subscription: "projects/p/subscriptions/failures", MaxMessages: 10})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range resp.ReceivedMessages {
		got = append(got, m.GetMessage().GetAttributes()["target"]+" "+m.GetMessage().GetAttributes()["outcome"])
	}
	if diff := cmp.Diff([]string{"worker failed"}, got); diff != "" {
		t.Errorf("messages through the filter (-want +got):\n%s", diff)
	}
}
