package onnewimage

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"k8s.io/client-go/rest"

	"github.com/onnewimage/onnewimage/internal/cluster"
	"github.com/onnewimage/onnewimage/internal/config"
	"github.com/onnewimage/onnewimage/internal/kube"
	"github.com/onnewimage/onnewimage/internal/kube/kubetest"
	"github.com/onnewimage/onnewimage/internal/result"
	"github.com/onnewimage/onnewimage/internal/trigger"
)

// useResults makes the function serve against tg as use does, publishing
// results to topic on a fake Pub/Sub server that holds projects/demo/topics/results.
func useResults(t *testing.T, tg *target, topic string) *pstest.Server {
	t.Helper()
	srv := pstest.NewServer()
	t.Cleanup(func() { srv.Close() })
	if _, err := srv.GServer.CreateTopic(context.Background(), &pubsubpb.Topic{Name: "projects/demo/topics/results"}); err != nil {
		t.Fatal(err)
	}
	pub := result.NewPublisher(topic, result.Options{ClientOptions: []option.ClientOption{
		option.WithEndpoint(srv.Addr), option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())),
	}})
	t.Cleanup(func() { pub.Close() })
	cfg, err := config.Load(env())
	if err != nil {
		t.Fatal(err)
	}
	h := trigger.New(cfg, trigger.Options{Results: pub, Cluster: cluster.Options{
		EmulatorHost: containerAPI.Addr,
		TokenSource:  staticToken{},
		NewClientset: func(*rest.Config) (kube.Interface, error) { return kubetest.Adapt(tg.client), nil },
	}})
	prev := handler
	handler = func() (*trigger.Handler, error) { return h, nil }
	t.Cleanup(func() { handler = prev })
	return srv
}

// A result that cannot be published (its topic is missing) is logged at
// WARNING with the message's content, after the deploy's own line, which
// is unchanged; the event is acknowledged. Published, it adds no line.
func TestResultPublishFailureIsAWarning(t *testing.T) {
	for _, tt := range []struct {
		topic     string
		lines     []string // Each line's severity and outcome.
		published int
	}{
		{"projects/demo/topics/results", []string{"NOTICE deployed"}, 1},
		{"projects/demo/topics/missing", []string{"NOTICE deployed", "WARNING deployed"}, 0},
	} {
		t.Run(tt.topic, func(t *testing.T) {
			tg := newTarget(t)
			srv := useResults(t, tg, tt.topic)
			published := time.Now()
			code, lines := deliver(t, deliveries["raw push body"](t, envelope(sample(t, knative), "SUCCESS", published), published))
			if code != http.StatusOK {
				t.Errorf("HTTP status %d, want 200 (acknowledged)", code)
			}
			var got []string
			for _, l := range lines {
				got = append(got, l["severity"].(string)+" "+l["outcome"].(string))
			}
			if diff := cmp.Diff(tt.lines, got); diff != "" {
				t.Fatalf("log lines (-want +got):\n%s\n%v", diff, lines)
			}
			if n := len(srv.Messages()); n != tt.published {
				t.Errorf("%d messages published, want %d", n, tt.published)
			}
			if len(lines) < 2 {
				return
			}
			warning, deployed := lines[1], lines[0]
			res, _ := warning["result"].(map[string]any)
			want := map[string]any{"buildId": deployed["buildId"], "target": "default", "image": deployed["image"], "outcome": "deployed",
				"reason": deployed["reason"], "previousImage": deployed["previousImage"]}
			got2 := map[string]any{"buildId": res["buildId"], "target": res["target"], "image": res["image"], "outcome": res["outcome"],
				"reason": res["reason"], "previousImage": res["previousImage"]}
			if diff := cmp.Diff(want, got2); diff != "" {
				t.Errorf("WARNING line's result (-want +got):\n%s\n%v", diff, warning)
			}
			if msg, _ := warning["message"].(string); !strings.Contains(msg, tt.topic) || !strings.Contains(msg, "NotFound") {
				t.Errorf("WARNING line's message %q: want the topic and why", msg)
			}
		})
	}
}
