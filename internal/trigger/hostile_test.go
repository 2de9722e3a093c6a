package trigger

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes/fake"

	"github.com/onnewimage/onnewimage/internal/buildevent"
	"github.com/onnewimage/onnewimage/internal/rollout"
)

// build is a SUCCESS build of webRepo created at created, as JSON.
func build(id string, created time.Time, images string) []byte {
	return fmt.Appendf(nil, `{"id":%q,"status":"SUCCESS","createTime":%q,"results":{"images":[%s]}}`,
		id, created.Format(time.RFC3339Nano), images)
}

func webImage(tag string) string {
	return `{"name":"` + webRepo + `:` + tag + `","digest":"sha256:` + strings.Repeat("a", 64) + `"}`
}

// TestHandleRefuses checks the decisions the trigger owns over hostile
// messages: each is refused (failed, not retried) with its sentinel, before
// any cluster call.
func TestHandleRefuses(t *testing.T) {
	success := map[string]string{"buildId": "b", "status": "SUCCESS"}
	tests := []struct {
		name   string
		ev     Event
		want   error
		reason string
	}{
		{"status attribute SUCCESS, build FAILURE",
			event(t, []byte(`{"id":"b","status":"FAILURE","createTime":"2026-11-02T11:00:00Z","results":{"images":[`+webImage("v1")+`]}}`), success, now),
			buildevent.ErrMismatch, `malformed build message: message attributes disagree with the build: status attribute "SUCCESS", build status FAILURE`},
		{"created in 2099", event(t, build("b", time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC), webImage("v1")), success, now),
			ErrFutureBuild, "build created in the future: build b was created at 2099-01-01T00:00:00Z, 632579h59m55s after its event was published (2026-11-02T12:00:05Z); more than 1m0s ahead is refused"},
		{"created 61 seconds after publication", event(t, build("b", now.Add(61*time.Second), webImage("v1")), success, now),
			ErrFutureBuild, "build created in the future: build b was created at 2026-11-02T12:01:06Z, 1m1s after"},
		{"10 MiB of data", Event{Data: []byte(`{"message":{"data":"` + strings.Repeat("A", 10<<20) + `"}}`)},
			buildevent.ErrTooLarge, "malformed build message: message too large: 10485783 bytes, more than 4194304"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn := &connector{client: fake.NewClientset(webDeployment())}
			h := New(testConfig(t, nil), Options{Connector: conn, Now: func() time.Time { return now }})
			rep, err := handleOne(t, h, tt.ev)
			if !errors.Is(err, tt.want) || rep.Outcome != rollout.Failed || !strings.HasPrefix(rep.Reason, tt.reason) {
				t.Errorf("Handle() = %s %q, %v\nwant failed %q, %v", rep.Outcome, rep.Reason, err, tt.reason, tt.want)
			}
			if Retryable(err) {
				t.Errorf("Retryable(%v) = true, want false", err)
			}
			if conn.calls != 0 {
				t.Errorf("connected to the cluster %d times, want 0", conn.calls)
			}
		})
	}
}

// TestHandleCreateTimeTolerance: a createTime up to a minute ahead of the
// publish time (clock skew) is deployed.
func TestHandleCreateTimeTolerance(t *testing.T) {
	conn := &connector{client: fake.NewClientset(webDeployment())}
	h := New(testConfig(t, nil), Options{Connector: conn, Now: func() time.Time { return now }})
	rep, err := handleOne(t, h, event(t, build("b", now.Add(time.Minute), webImage("v1")), map[string]string{"status": "SUCCESS"}, now))
	if err != nil || rep.Outcome != rollout.Deployed {
		t.Errorf("Handle() = %s %q, %v; want deployed", rep.Outcome, rep.Reason, err)
	}
}

// TestHandleShortReasonForManyImages: a build pushing 10,000 other images is
// skipped with a reason that names a few and counts the rest.
func TestHandleShortReasonForManyImages(t *testing.T) {
	imgs := make([]string, 10000)
	for i := range imgs {
		imgs[i] = fmt.Sprintf(`{"name":"gcr.io/other/app%d:v1","digest":"sha256:%064x"}`, i, i)
	}
	conn := &connector{client: fake.NewClientset(webDeployment())}
	h := New(testConfig(t, nil), Options{Connector: conn, Now: func() time.Time { return now }})
	start := time.Now()
	rep, err := handleOne(t, h, event(t, build("b", now.Add(-time.Hour), strings.Join(imgs, ",")), map[string]string{"status": "SUCCESS"}, now))
	t.Logf("10,000 images decided in %v", time.Since(start))
	want := `no pushed image matches "` + webRepo + `" (pushed: gcr.io/other/app0:v1, gcr.io/other/app1:v1, gcr.io/other/app2:v1, gcr.io/other/app3:v1, gcr.io/other/app4:v1 and 9995 more)`
	if err != nil || rep.Outcome != rollout.Skipped || rep.Reason != want {
		t.Errorf("Handle() = %s %.300q, %v\nwant skipped %q", rep.Outcome, rep.Reason, err, want)
	}
	if conn.calls != 0 {
		t.Errorf("connected to the cluster %d times, want 0", conn.calls)
	}
}
