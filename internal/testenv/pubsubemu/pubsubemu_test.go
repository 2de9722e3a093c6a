package pubsubemu

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestEmulator(t *testing.T) {
	e := startEmulator(t)

	t.Run("push", func(t *testing.T) {
		t.Run("delivers the wrapped push body", func(t *testing.T) {
			t.Parallel()
			testPushBody(t, e)
		})
		t.Run("redelivers after a 500 until a 2xx acks", func(t *testing.T) {
			t.Parallel()
			testRedelivery(t, e)
		})
		t.Run("spaces redeliveries by the retry policy", func(t *testing.T) {
			t.Parallel()
			testRetryPolicy(t, e)
		})
		t.Run("ignores a message filter", func(t *testing.T) {
			t.Parallel()
			testFilter(t, e)
		})
	})

	// Stop kills everything it started and cleans up after itself.
	pgid := e.cmd.Process.Pid
	if err := e.Stop(); err != nil {
		t.Fatalf("Stop() = %v", err)
	}
	if err := e.Stop(); err != nil {
		t.Errorf("second Stop() = %v, want nil", err)
	}
	if err := syscall.Kill(-pgid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("signal 0 to process group %d after Stop = %v, want ESRCH", pgid, err)
	}
	if _, err := os.Stat(e.dir); !os.IsNotExist(err) {
		t.Errorf("stat %s after Stop = %v, want not exist", e.dir, err)
	}
	if c, err := net.DialTimeout("tcp", e.Host, time.Second); err == nil {
		c.Close()
		t.Errorf("%s still accepts connections after Stop", e.Host)
	}
}

// testPushBody publishes a Cloud Build-like message and compares the whole
// body the emulator POSTs to the push endpoint.
func testPushBody(t *testing.T, e *Emulator) {
	ctx := context.Background()
	srv := newPushServer(t, func(int) int { return http.StatusNoContent })
	const topic, sub = "cloud-builds", "deploy-trigger"
	if err := e.CreateTopic(ctx, topic); err != nil {
		t.Fatal(err)
	}
	if err := e.CreatePushSubscription(ctx, PushSubscription{
		ID: sub, Topic: topic, Endpoint: srv.URL + "/push", AckDeadline: 10 * time.Second,
	}); err != nil {
		t.Fatal(err)
	}
	data := []byte(`{"id":"b-123","status":"SUCCESS","images":["images.example/team/web:v2"]}`)
	attrs := map[string]string{"buildId": "b-123", "status": "SUCCESS"}
	before := time.Now()
	id, err := e.Publish(ctx, topic, data, attrs)
	if err != nil {
		t.Fatal(err)
	}
	if id == "" {
		t.Fatal("Publish returned an empty message ID")
	}

	d := srv.next(t, 10*time.Second)
	if d.path != "/push" {
		t.Errorf("push path = %q, want /push", d.path)
	}
	if got := d.header.Get("Content-Type"); got != "application/json" {
		t.Errorf("push Content-Type = %q, want application/json", got)
	}
	var got map[string]any
	if err := json.Unmarshal(d.body, &got); err != nil {
		t.Fatalf("decoding push body %s: %v", d.body, err)
	}
	// The publish time is the only value not known in advance: check it is
	// a sane timestamp, then expect it in both spellings.
	msg, _ := got["message"].(map[string]any)
	publishTime, _ := msg["publishTime"].(string)
	pt, err := time.Parse(time.RFC3339Nano, publishTime)
	if err != nil {
		t.Errorf("message.publishTime = %q: %v", publishTime, err)
	} else if pt.Before(before.Add(-time.Second)) || pt.After(d.at.Add(time.Second)) {
		t.Errorf("message.publishTime = %v, want between publish (%v) and delivery (%v)", pt, before, d.at)
	}
	want := map[string]any{
		"subscription": e.SubscriptionName(sub),
		"message": map[string]any{
			"data":         base64.StdEncoding.EncodeToString(data),
			"attributes":   map[string]any{"buildId": "b-123", "status": "SUCCESS"},
			"messageId":    id,
			"message_id":   id,
			"publishTime":  publishTime,
			"publish_time": publishTime,
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("push body mismatch (-want +got):\n%s", diff)
	}

	// What a function does with it: base64 data back to the published bytes.
	var push struct {
		Message struct {
			Data       []byte            `json:"data"`
			Attributes map[string]string `json:"attributes"`
			MessageID  string            `json:"messageId"`
		} `json:"message"`
		Subscription string `json:"subscription"`
	}
	if err := json.Unmarshal(d.body, &push); err != nil {
		t.Fatalf("decoding push body %s: %v", d.body, err)
	}
	if string(push.Message.Data) != string(data) {
		t.Errorf("message.data decodes to %s, want %s", push.Message.Data, data)
	}
	if diff := cmp.Diff(attrs, push.Message.Attributes); diff != "" {
		t.Errorf("message.attributes mismatch (-want +got):\n%s", diff)
	}
	t.Logf("push body: %s", d.body)
}

// testRedelivery answers the first push with 500, as a function that
// returns an error does, and expects the same message again; the 2xx that
// follows must end deliveries.
func testRedelivery(t *testing.T, e *Emulator) {
	ctx := context.Background()
	srv := newPushServer(t, func(n int) int {
		if n == 1 {
			return http.StatusInternalServerError
		}
		return http.StatusNoContent
	})
	const topic, sub = "redelivery", "redelivery-push"
	if err := e.CreateTopic(ctx, topic); err != nil {
		t.Fatal(err)
	}
	if err := e.CreatePushSubscription(ctx, PushSubscription{
		ID: sub, Topic: topic, Endpoint: srv.URL, AckDeadline: 10 * time.Second,
	}); err != nil {
		t.Fatal(err)
	}
	id, err := e.Publish(ctx, topic, []byte(`{"id":"b-retry"}`), map[string]string{"buildId": "b-retry"})
	if err != nil {
		t.Fatal(err)
	}

	first := srv.next(t, 10*time.Second)
	second := srv.next(t, 10*time.Second)
	if string(second.body) != string(first.body) {
		t.Errorf("redelivered body = %s, want the first delivery's %s", second.body, first.body)
	}
	if got := messageID(t, second.body); got != id {
		t.Errorf("redelivered messageId = %q, want %q", got, id)
	}
	t.Logf("redelivery after a 500 came %v after the first push", second.at.Sub(first.at).Round(time.Millisecond))

	// Redeliveries come about once a second; three seconds of silence
	// means the 204 acked the message.
	srv.none(t, 3*time.Second)
}

// testRetryPolicy checks that a retry policy's backoff spaces redeliveries
// out beyond the default of about a second.
func testRetryPolicy(t *testing.T, e *Emulator) {
	ctx := context.Background()
	const backoff = 3 * time.Second
	srv := newPushServer(t, func(n int) int {
		if n <= 3 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	const topic, sub = "backoff", "backoff-push"
	if err := e.CreateTopic(ctx, topic); err != nil {
		t.Fatal(err)
	}
	if err := e.CreatePushSubscription(ctx, PushSubscription{
		ID: sub, Topic: topic, Endpoint: srv.URL, AckDeadline: 10 * time.Second,
		MinBackoff: backoff, MaxBackoff: backoff,
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Publish(ctx, topic, []byte(`{}`), nil); err != nil {
		t.Fatal(err)
	}
	var at []time.Time
	for range 3 {
		at = append(at, srv.next(t, 10*time.Second).at)
	}
	gap1, gap2 := at[1].Sub(at[0]), at[2].Sub(at[1])
	t.Logf("with backoff %v: redeliveries after %v, then %v", backoff,
		gap1.Round(time.Millisecond), gap2.Round(time.Millisecond))
	// The emulator ignores the policy for the first redelivery.
	if gap2 < backoff-500*time.Millisecond {
		t.Errorf("second redelivery came %v after the first, want at least about %v", gap2, backoff)
	}
}

func startEmulator(t *testing.T) *Emulator {
	t.Helper()
	if testing.Short() {
		t.Skip("skipped in -short mode: starts the Pub/Sub emulator, a JVM")
	}
	if _, err := exec.LookPath("gcloud"); err != nil {
		t.Skip("skipped: gcloud is not on PATH; the Pub/Sub emulator ships with the Google Cloud CLI")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e, err := Start(ctx, Options{Log: testWriter{t}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.Stop(); err != nil {
			t.Errorf("Stop() = %v", err)
		}
	})
	if e.Project != DefaultProject {
		t.Errorf("Project = %q, want %q", e.Project, DefaultProject)
	}
	return e
}

// TestStartPortTaken makes Start lose the race for its port: the JVM that
// cannot bind keeps running, so Start must see the bind failure in the log
// and retry on another port rather than wait or talk to the port's owner.
func TestStartPortTaken(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short mode: starts the Pub/Sub emulator, a JVM")
	}
	if _, err := exec.LookPath("gcloud"); err != nil {
		t.Skip("skipped: gcloud is not on PATH; the Pub/Sub emulator ships with the Google Cloud CLI")
	}
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	takenPort := taken.Addr().(*net.TCPAddr).Port
	calls := 0
	pickPort = func() (int, error) {
		calls++
		if calls == 1 {
			return takenPort, nil
		}
		return freePort()
	}
	t.Cleanup(func() { pickPort = freePort })

	var log strings.Builder
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e, err := Start(ctx, Options{Log: &log})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Stop()
	t.Logf("progress:\n%s", log.String())
	if calls != 2 {
		t.Errorf("Start picked a port %d times, want 2", calls)
	}
	if e.Host == taken.Addr().String() {
		t.Errorf("Host = %s, the taken port", e.Host)
	}
	if !strings.Contains(log.String(), "retrying on another port") {
		t.Errorf("progress log does not mention the retry:\n%s", log.String())
	}
	if err := e.CreateTopic(ctx, "cloud-builds"); err != nil {
		t.Errorf("CreateTopic on the emulator started by the retry: %v", err)
	}
}

// TestStartTimeout gives startup too little time: the error says why and
// quotes the emulator's log, and nothing is left running.
func TestStartTimeout(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short mode: starts the Pub/Sub emulator, a JVM")
	}
	if _, err := exec.LookPath("gcloud"); err != nil {
		t.Skip("skipped: gcloud is not on PATH; the Pub/Sub emulator ships with the Google Cloud CLI")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	e, err := Start(ctx, Options{})
	if err == nil {
		e.Stop()
		t.Fatal("Start with a 300ms deadline succeeded")
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Start with a 300ms deadline = %v, want an error wrapping context.DeadlineExceeded", err)
	}
	t.Logf("Start error: %v", err)
	if !strings.Contains(err.Error(), "emulator log tail:") {
		t.Errorf("Start error does not quote the emulator log: %v", err)
	}
}

func TestStartWithoutGcloud(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	e, err := Start(context.Background(), Options{})
	if err == nil {
		e.Stop()
		t.Fatal("Start with no gcloud on PATH succeeded")
	}
	if !errors.Is(err, ErrNotInstalled) {
		t.Errorf("Start with no gcloud on PATH = %v, want an error wrapping ErrNotInstalled", err)
	}
}

// delivery is one request the push endpoint received.
type delivery struct {
	at     time.Time
	path   string
	header http.Header
	body   []byte
}

// pushServer is a push endpoint that records deliveries and answers each
// with the status its policy picks for the n-th delivery (from 1).
type pushServer struct {
	*httptest.Server
	deliveries chan delivery
}

func newPushServer(t *testing.T, status func(n int) int) *pushServer {
	t.Helper()
	s := &pushServer{deliveries: make(chan delivery, 100)}
	var n atomic.Int32
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.deliveries <- delivery{at: time.Now(), path: r.URL.Path, header: r.Header.Clone(), body: body}
		w.WriteHeader(status(int(n.Add(1))))
	}))
	t.Cleanup(s.Close)
	return s
}

// next returns the next delivery, failing the test after timeout.
func (s *pushServer) next(t *testing.T, timeout time.Duration) delivery {
	t.Helper()
	select {
	case d := <-s.deliveries:
		return d
	case <-time.After(timeout):
		t.Fatalf("no push delivery within %v", timeout)
		return delivery{}
	}
}

// none fails the test if a delivery arrives within d.
func (s *pushServer) none(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case got := <-s.deliveries:
		t.Errorf("unexpected push delivery: %s", got.body)
	case <-time.After(d):
	}
}

func messageID(t *testing.T, body []byte) string {
	t.Helper()
	var push struct {
		Message struct {
			MessageID string `json:"messageId"`
		} `json:"message"`
	}
	if err := json.Unmarshal(body, &push); err != nil {
		t.Fatalf("decoding push body %s: %v", body, err)
	}
	return push.Message.MessageID
}

// testWriter sends progress lines to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Logf("%s", p)
	return len(p), nil
}

// testFilter publishes a build's three messages to a topic with a push
// subscription filtered on the status attribute, the shape README's
// Performance section offers. The emulator accepts the filter and ignores
// it: it pushes every message. This pins that, so that the README's word
// on it stays true; the day the emulator honours filters, this fails and
// TestE2EInvocationsPerBuild (sandbox) can use the emulator instead of
// pstest for that shape.
func testFilter(t *testing.T, e *Emulator) {
	ctx := context.Background()
	srv := newPushServer(t, func(int) int { return http.StatusNoContent })
	const topic, sub = "cloud-builds-filtered", "success-only"
	if err := e.CreateTopic(ctx, topic); err != nil {
		t.Fatal(err)
	}
	if err := e.CreatePushSubscription(ctx, PushSubscription{
		ID: sub, Topic: topic, Endpoint: srv.URL + "/push", Filter: `attributes.status = "SUCCESS"`,
	}); err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, status := range []string{"QUEUED", "WORKING", "SUCCESS"} {
		id, err := e.Publish(ctx, topic, []byte(`{}`), map[string]string{"buildId": "b-1", "status": status})
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, id)
	}
	var got []string
	for range want {
		got = append(got, messageID(t, srv.next(t, 10*time.Second).body))
	}
	slices.Sort(want)
	slices.Sort(got)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("pushed messages (-want +got):\n%s", diff)
	}
}
