package onnewimage

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/onnewimage/onnewimage/internal/buildevent"
)

// msg is one message of a burst and the answer it calls for.
type msg struct {
	id, body string
	outcome  string // "" for ours: deployed, or skipped as not newer.
	reason   string
}

// TestBurst delivers 1,000 messages in the proportions of a busy
// cloud-builds topic (mostly QUEUED and WORKING, some failures and other
// images' builds, a few of ours, each of those twice) and checks every
// answer: one log line per message with the decision its kind calls for,
// and the Deployment ending on our newest build. cmd/bench times a burst.
func TestBurst(t *testing.T) {
	now := time.Now().Add(-time.Minute)
	hex := strings.Repeat("cd", 32)
	var msgs []msg
	add := func(build, status, outcome, reason string) {
		id := fmt.Sprintf("m%04d", len(msgs))
		if b, err := buildevent.DecodeBuild([]byte(build)); err == nil && status == "SUCCESS" {
			cloudBuild.Register(b) // Cloud Build knows each build it announces.
		}
		body := `{"message":` + strings.ReplaceAll(message(b64(build), status, "b", now), `"4242"`, `"`+id+`"`) + `,"subscription":"projects/demo/subscriptions/s"}`
		msgs = append(msgs, msg{id, body, outcome, reason})
	}
	ok := knativeWith(t, func(map[string]any) {})
	other := knativeWith(t, withImages("gcr.io/other/app:v1", "sha256:"+hex))
	for i := range 960 {
		switch {
		case i%24 == 0:
			add(ok, "FAILURE", "skipped", "build status is FAILURE, not SUCCESS")
		case i%24 == 1:
			add(other, "SUCCESS", "skipped", `no pushed image matches "`+sampleRepo+`"`)
		case i%2 == 0:
			add(ok, "QUEUED", "skipped", "build status is QUEUED, not SUCCESS")
		default:
			add(ok, "WORKING", "skipped", "build status is WORKING, not SUCCESS")
		}
	}
	var newest string
	for i := range 20 { // 10 builds of ours, each delivered twice.
		n := i / 2
		newest = fmt.Sprintf("%s:v%d@sha256:%064x", sampleRepo, n, n)
		add(knativeWith(t, func(b map[string]any) {
			b["id"] = fmt.Sprintf("ours-%d", n)
			b["createTime"] = now.Add(time.Duration(n-20) * time.Minute).Format(time.RFC3339Nano)
			withImages(fmt.Sprintf("%s:v%d", sampleRepo, n), fmt.Sprintf("sha256:%064x", n))(b)
		}), "SUCCESS", "", "")
	}
	// Spread ours through the burst.
	for i := range 20 {
		j := 960 + i
		k := 40 + i*45
		msgs[j], msgs[k] = msgs[k], msgs[j]
	}

	// Over real HTTP one at a time: the functions framework's CloudEvent
	// receiver (cloudevents/sdk-go's EventReceiver) can leave a request
	// unanswered until the next one arrives when several are in flight
	// (cloudevents/sdk-go#1224), so an instance must serve one request at a
	// time, the platform's default. Then 20 at a time through OnNewImage, to
	// hold the function's own code to concurrency.
	for _, tt := range []struct {
		name    string
		workers int
		deliver func(m msg) int
	}{
		{"HTTP", 1, func(m msg) int {
			resp, err := http.Post(functionURL+"projects/demo/topics/cloud-builds", "application/json", strings.NewReader(m.body))
			if err != nil {
				t.Error(err)
				return 0
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return resp.StatusCode
		}},
		{"20 at a time", 20, func(m msg) int {
			e := event.New()
			e.SetID(m.id)
			e.SetType("google.cloud.pubsub.topic.v1.messagePublished")
			e.SetSource("//pubsub.googleapis.com/projects/demo/topics/cloud-builds")
			e.SetTime(now)
			if err := e.SetData(event.ApplicationJSON, []byte(m.body)); err != nil {
				t.Error(err)
			}
			if err := OnNewImage(t.Context(), e); err != nil {
				return http.StatusInternalServerError
			}
			return http.StatusOK
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			burst(t, msgs, tt.workers, tt.deliver, newest)
		})
	}
}

// burst delivers msgs with workers at a time and checks every answer.
func burst(t *testing.T, msgs []msg, workers int, deliver func(msg) int, newest string) {
	tg := newTarget(t)
	use(t, env(), tg)
	logs.take()
	codes := make([]int, len(msgs))
	var wg sync.WaitGroup
	next := make(chan int)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				codes[i] = deliver(msgs[i])
			}
		}()
	}
	for i := range msgs {
		next <- i
	}
	close(next)
	wg.Wait()

	lines := map[string][]map[string]any{}
	for _, l := range logs.take() {
		id := fmt.Sprint(l["messageId"])
		lines[id] = append(lines[id], l)
	}
	deployed := 0
	var retry []int
	for i, m := range msgs {
		ls := lines[m.id]
		if len(ls) != 1 {
			t.Errorf("message %s: %d log lines, want 1", m.id, len(ls))
			continue
		}
		l := ls[0]
		if m.outcome == "" { // Ours.
			switch {
			case l["outcome"] == "deployed" && codes[i] == http.StatusOK:
				deployed++
			case l["outcome"] == "skipped" && codes[i] == http.StatusOK:
			case l["outcome"] == "failed" && l["retry"] == true && codes[i] != http.StatusOK:
				retry = append(retry, i) // Lost a race with a concurrent deploy.
			default:
				t.Errorf("message %s (ours): HTTP %d, %v %v", m.id, codes[i], l["outcome"], l["reason"])
			}
			continue
		}
		got := []any{codes[i], l["outcome"], strings.HasPrefix(fmt.Sprint(l["reason"]), m.reason)}
		if diff := cmp.Diff([]any{http.StatusOK, m.outcome, true}, got); diff != "" {
			t.Errorf("message %s: answer (-want +got):\n%s\nreason: %v", m.id, diff, l["reason"])
		}
	}
	if deployed == 0 {
		t.Errorf("none of our builds was deployed")
	}
	// Pub/Sub redelivers what asked for it; then the newest build is live.
	for _, i := range retry {
		if code := deliver(msgs[i]); code != http.StatusOK {
			t.Errorf("redelivered %s: HTTP %d", msgs[i].id, code)
		}
	}
	d, err := tg.client.AppsV1().Deployments("prod").Get(t.Context(), "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := d.Spec.Template.Spec.Containers[0].Image; got != newest {
		t.Errorf("deployment runs %s, want the newest build's %s", got, newest)
	}
}
