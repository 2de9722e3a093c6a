package sandbox

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/cloudbuild/apiv1/v2/cloudbuildpb"
	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// readmeSubscription returns the filter and the push endpoint's path of the
// subscription README.md's "Invocations per build" creates, so that what
// the test runs is what the README tells users to run.
func readmeSubscription(t *testing.T) (filter, path string) {
	t.Helper()
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := bytes.Cut(readme, []byte("\n### Invocations per build\n"))
	if !ok {
		t.Fatal(`README.md has no section "### Invocations per build"`)
	}
	section, _, _ = bytes.Cut(section, []byte("\n#"))
	filters := regexp.MustCompile(`--message-filter='([^']*)'`).FindAllSubmatch(section, -1)
	endpoints := regexp.MustCompile(`--push-endpoint="\$URL([^"]*)"`).FindAllSubmatch(section, -1)
	if len(filters) != 1 || len(endpoints) != 1 {
		t.Fatalf("README.md's Invocations per build has %d --message-filter='...' and %d --push-endpoint=\"$URL...\", want one each", len(filters), len(endpoints))
	}
	return string(filters[0][1]), string(endpoints[0][1])
}

// pushed is one POST of a pusher: the message's ID and attributes, and the
// function's HTTP status.
type pushed struct {
	ID, BuildID, Status string
	Code                int
}

// pusher plays a push subscription for a pstest server, which has none: it
// pulls what the subscription passes (pstest evaluates the filter) and POSTs
// each message to the function as the raw push body Pub/Sub sends, then acks
// on a 2xx answer and nacks otherwise, as Pub/Sub does with a push (whose
// redelivery then waits for the retry policy; a nack here is redelivered at
// once).
type pusher struct {
	url, subscription string

	mu      sync.Mutex
	pushes  []pushed
	err     error         // The first POST that got no answer.
	changed chan struct{} // Closed and replaced on every push.
}

// startPusher pulls from the subscription sub of srv until the test ends.
func startPusher(t *testing.T, srv *pstest.Server, sub, url string) *pusher {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	client, err := pubsub.NewClient(ctx, Project, option.WithEndpoint(srv.Addr), option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())))
	if err != nil {
		t.Fatal(err)
	}
	p := &pusher{url: url, subscription: sub, changed: make(chan struct{})}
	done := make(chan error, 1)
	go func() {
		done <- client.Subscriber(sub).Receive(ctx, func(ctx context.Context, m *pubsub.Message) {
			code, err := p.post(ctx, m)
			p.mu.Lock()
			if err != nil && p.err == nil {
				p.err = err
				t.Logf("pusher: %v", err)
			}
			p.pushes = append(p.pushes, pushed{ID: m.ID, BuildID: m.Attributes["buildId"], Status: m.Attributes["status"], Code: code})
			close(p.changed)
			p.changed = make(chan struct{})
			p.mu.Unlock()
			if code >= 200 && code <= 299 {
				m.Ack()
			} else {
				m.Nack()
			}
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("pusher: %v", err)
		}
		client.Close()
	})
	return p
}

// post sends m as Pub/Sub's push body (wrapped, both spellings of the ID and
// the publish time, as Pub/Sub writes them) and returns the HTTP status; 0
// when nothing answered.
func (p *pusher) post(ctx context.Context, m *pubsub.Message) (int, error) {
	published := m.PublishTime.UTC().Format(time.RFC3339Nano)
	body, err := json.Marshal(map[string]any{
		"message": map[string]any{
			"data":         base64.StdEncoding.EncodeToString(m.Data),
			"attributes":   m.Attributes,
			"messageId":    m.ID,
			"message_id":   m.ID,
			"publishTime":  published,
			"publish_time": published,
		},
		"subscription": p.subscription,
	})
	if err != nil {
		return 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// of returns the pushes of build id, in order.
func (p *pusher) of(id string) []pushed {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []pushed
	for _, x := range p.pushes {
		if x.BuildID == id {
			out = append(out, x)
		}
	}
	return out
}

// wait waits until build id's message with the status given has been
// pushed and answered with a 2xx: it is acknowledged, it will not come
// again. It returns the build's pushes.
func (p *pusher) wait(ctx context.Context, t *testing.T, id, status string) []pushed {
	t.Helper()
	wait, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for {
		p.mu.Lock()
		changed := p.changed
		p.mu.Unlock()
		got := p.of(id)
		if slices.ContainsFunc(got, func(x pushed) bool { return x.Status == status && x.Code >= 200 && x.Code <= 299 }) {
			return got
		}
		select {
		case <-changed:
		case <-wait.Done():
			t.Fatalf("build %s never acknowledged: %d pushes, the last %v", id, len(got), got[max(0, len(got)-3):])
		}
	}
}

// filtered is the shape README's "Invocations per build" offers: a
// subscription on cloud-builds with the README's filter, on pstest, pushed
// to the function by a pusher.
type filtered struct {
	srv    *pstest.Server
	push   *pusher
	sb     *Sandbox
	topic  string
	msgIDs map[string]string // By build ID and status ("id status").
}

func startFiltered(t *testing.T, sb *Sandbox) *filtered {
	t.Helper()
	filter, path := readmeSubscription(t)
	srv := pstest.NewServer()
	t.Cleanup(func() { srv.Close() })
	f := &filtered{srv: srv, sb: sb, topic: "projects/" + Project + "/topics/" + Topic, msgIDs: map[string]string{}}
	sub := "projects/" + Project + "/subscriptions/onnewimage-success"
	ctx := context.Background()
	if _, err := srv.GServer.CreateTopic(ctx, &pubsubpb.Topic{Name: f.topic}); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.GServer.CreateSubscription(ctx, &pubsubpb.Subscription{Name: sub, Topic: f.topic, Filter: filter, AckDeadlineSeconds: 600}); err != nil {
		t.Fatalf("creating the subscription with the README's filter %q: %v", filter, err)
	}
	url := strings.TrimSuffix(sb.Function.URL, "/") + strings.ReplaceAll(path, "PROJECT", Project)
	t.Logf("filtered shape: %s with filter %s pushed to %s", sub, filter, url)
	f.push = startPusher(t, srv, sub, url)
	return f
}

// publish publishes the messages Cloud Build sends for b (QUEUED, WORKING,
// then b's own status) to the filtered topic; register says whether the
// Cloud Build API stand-in learns of b first, as it does of a real build.
func (f *filtered) publish(t *testing.T, b *cloudbuildpb.Build, register bool) {
	t.Helper()
	for _, st := range []cloudbuildpb.Build_Status{cloudbuildpb.Build_QUEUED, cloudbuildpb.Build_WORKING, b.GetStatus()} {
		m := WithStatus(b, st)
		if st == b.GetStatus() {
			m = b
		}
		if register {
			f.sb.CloudBuild.Register(m)
		}
		data, attrs, err := Message(m)
		if err != nil {
			t.Fatal(err)
		}
		f.msgIDs[b.GetId()+" "+st.String()] = f.srv.Publish(f.topic, data, attrs)
	}
}

// deliveries returns how often pstest delivered each message of build id,
// by status.
func (f *filtered) deliveries(id string) map[string]int {
	out := map[string]int{}
	for _, st := range []string{"QUEUED", "WORKING", "SUCCESS"} {
		if msgID, ok := f.msgIDs[id+" "+st]; ok {
			out[st] = f.srv.Message(msgID).Deliveries
		}
	}
	return out
}

// invocations is how a build reached the function: the statuses of its
// messages the function logged (one line per invocation with one target),
// and the outcomes.
type invocations struct {
	Statuses []string
	Outcomes []string
}

func invoked(sb *Sandbox, id string) invocations {
	var got invocations
	for _, l := range linesOf(sb, id) {
		s, _ := l["status"].(string)
		o, _ := l["outcome"].(string)
		got.Statuses = append(got.Statuses, s)
		got.Outcomes = append(got.Outcomes, o)
	}
	slices.Sort(got.Statuses)
	slices.Sort(got.Outcomes)
	return got
}

// TestE2EInvocationsPerBuild counts the function's invocations per build in
// the two shapes README's "Invocations per build" describes, on one
// sandbox: the function runs as cmd/local (functions framework, real HTTP).
//
// With --trigger-topic (the sandbox's emulator push subscription, which
// pushes every message) a build's QUEUED, WORKING and SUCCESS messages each
// invoke it: 3 invocations, one deploy. With a subscription filtered on
// attributes.status = "SUCCESS" (the README's filter and push path, read from
// it) only the SUCCESS message does: 1 invocation, the same deploy.
//
// The emulator ignores filters, so the filtered subscription is on pstest,
// which evaluates them; pstest has no push, so the pusher here is ours: it
// pulls and POSTs Pub/Sub's raw push body, acking on a 2xx and nacking
// otherwise. This proves what the filter passes and that the function,
// reached at the README's path, decides as before (a retryable failure is
// answered non-2xx and redelivered, then deployed once; another image's
// SUCCESS is dismissed; a forged build is refused, all by the same rules).
// It does not prove Google's push itself: its OIDC token (checked by Cloud
// Run before the function runs), its retry delays, nor that Pub/Sub's
// filter dialect is pstest's. The path matters: pushed to the function's
// bare URL, the framework's warning that the path names no topic is printed
// in front of the function's JSON line, and no line of the build is read.
func TestE2EInvocationsPerBuild(t *testing.T) {
	sb, ctx := start(t, Options{})
	template := load(t, "web-1-success.json")
	want := map[string]invocations{}

	t.Run("trigger topic: every message invokes", func(t *testing.T) {
		b := FreshBuild(template)
		seen := len(sb.Function.Logs())
		for _, st := range []cloudbuildpb.Build_Status{cloudbuildpb.Build_QUEUED, cloudbuildpb.Build_WORKING, cloudbuildpb.Build_SUCCESS} {
			if _, err := sb.Publish(ctx, WithStatus(b, st)); err != nil {
				t.Fatal(err)
			}
		}
		waitCount(ctx, t, sb, seen, b.GetId(), 3, func(map[string]any) bool { return true })
		waitLive(ctx, t, sb, pinned(b))
		want[b.GetId()] = invocations{Statuses: []string{"QUEUED", "SUCCESS", "WORKING"}, Outcomes: []string{"deployed", "skipped", "skipped"}}
		if diff := cmp.Diff(want[b.GetId()], invoked(sb, b.GetId())); diff != "" {
			t.Errorf("invocations (-want +got):\n%s", diff)
		}
	})

	f := startFiltered(t, sb)
	// A genuine SUCCESS build whose message has no attributes: the filter
	// never passes it. The messages published after it are delivered
	// after pstest has applied the filter to it.
	bare := FreshBuild(template)
	sb.CloudBuild.Register(bare)
	data, _, err := Message(bare)
	if err != nil {
		t.Fatal(err)
	}
	f.msgIDs[bare.GetId()+" SUCCESS"] = f.srv.Publish(f.topic, data, nil)
	want[bare.GetId()] = invocations{}
	tests := []struct {
		name     string
		build    *cloudbuildpb.Build
		register bool
		before   func()
		// What the function was invoked with and answered, and the
		// messages of the build pstest delivered.
		pushes     []pushed
		invoked    invocations
		deliveries map[string]int
		getBuilds  int
		live       bool // The build is live after.
	}{
		{name: "one invocation, the same deploy", build: FreshBuild(template), register: true,
			pushes:     []pushed{{Status: "SUCCESS", Code: http.StatusOK}},
			invoked:    invocations{Statuses: []string{"SUCCESS"}, Outcomes: []string{"deployed"}},
			deliveries: map[string]int{"QUEUED": 0, "WORKING": 0, "SUCCESS": 1}, getBuilds: 1, live: true},
		{name: "a retryable failure is answered non-2xx, redelivered, then deployed once", build: FreshBuild(template), register: true,
			before:     func() { sb.CloudBuild.FailN(1, status.Error(codes.Unavailable, "cloud build is down")) },
			pushes:     []pushed{{Status: "SUCCESS", Code: http.StatusInternalServerError}, {Status: "SUCCESS", Code: http.StatusOK}},
			invoked:    invocations{Statuses: []string{"SUCCESS", "SUCCESS"}, Outcomes: []string{"deployed", "failed"}},
			deliveries: map[string]int{"QUEUED": 0, "WORKING": 0, "SUCCESS": 2}, getBuilds: 2, live: true},
		{name: "another image's build is dismissed", build: load(t, "lookalike-web-evil-success.json"), register: true,
			pushes:     []pushed{{Status: "SUCCESS", Code: http.StatusOK}},
			invoked:    invocations{Statuses: []string{"SUCCESS"}, Outcomes: []string{"skipped"}},
			deliveries: map[string]int{"QUEUED": 0, "WORKING": 0, "SUCCESS": 1}},
		{name: "a forged build is refused", build: FreshBuild(template), register: false,
			pushes:     []pushed{{Status: "SUCCESS", Code: http.StatusOK}},
			invoked:    invocations{Statuses: []string{"SUCCESS"}, Outcomes: []string{"refused"}},
			deliveries: map[string]int{"QUEUED": 0, "WORKING": 0, "SUCCESS": 1}, getBuilds: 1},
	}
	for _, tt := range tests {
		t.Run("filtered: "+tt.name, func(t *testing.T) {
			before := getWeb(ctx, t, sb)
			if tt.before != nil {
				tt.before()
			}
			getBuilds := sb.CloudBuild.Calls()
			f.publish(t, tt.build, tt.register)
			got := f.push.wait(ctx, t, tt.build.GetId(), tt.build.GetStatus().String())
			for i := range got {
				got[i].ID, got[i].BuildID = "", ""
			}
			if diff := cmp.Diff(tt.pushes, got); diff != "" {
				t.Errorf("pushes (-want +got):\n%s", diff)
			}
			// The function wrote each line before it answered; the
			// sandbox reads them from its output meanwhile.
			waitCount(ctx, t, sb, 0, tt.build.GetId(), len(tt.invoked.Statuses), func(map[string]any) bool { return true })
			if diff := cmp.Diff(tt.invoked, invoked(sb, tt.build.GetId())); diff != "" {
				t.Errorf("invocations (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.deliveries, f.deliveries(tt.build.GetId())); diff != "" {
				t.Errorf("messages delivered by the filtered subscription (-want +got):\n%s", diff)
			}
			if got := sb.CloudBuild.Calls() - getBuilds; got != tt.getBuilds {
				t.Errorf("%d GetBuild calls, want %d", got, tt.getBuilds)
			}
			if tt.live {
				waitLive(ctx, t, sb, pinned(tt.build))
			} else if after := getWeb(ctx, t, sb); after.Generation != before.Generation || webContainer(after) != webContainer(before) {
				t.Errorf("the deployment changed (generation %d→%d): %s", before.Generation, after.Generation, webContainer(after))
			}
			want[tt.build.GetId()] = tt.invoked
		})
	}

	// Counted again at the end: nothing came late, nothing came twice.
	if diff := cmp.Diff(map[string]int{"SUCCESS": 0}, f.deliveries(bare.GetId())); diff != "" {
		t.Errorf("a message without attributes, delivered by the filtered subscription (-want +got):\n%s", diff)
	}
	got := map[string]invocations{}
	for id := range want {
		got[id] = invoked(sb, id)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("invocations per build at the end (-want +got):\n%s", diff)
	}
	t.Logf("invocations per build: %s", fmt.Sprint(got))
}
