package trigger

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/oauth2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/onnewimage/onnewimage/internal/buildevent"
	"github.com/onnewimage/onnewimage/internal/cluster"
	"github.com/onnewimage/onnewimage/internal/config"
	"github.com/onnewimage/onnewimage/internal/emulator"
	"github.com/onnewimage/onnewimage/internal/kube"
	"github.com/onnewimage/onnewimage/internal/kube/kubetest"
	"github.com/onnewimage/onnewimage/internal/provenance"
	"github.com/onnewimage/onnewimage/internal/rollout"
	"github.com/onnewimage/onnewimage/internal/target"
)

const webRepo = "us-docker.pkg.dev/demo-project/apps/web"

// connector hands out a fake clientset and counts what it is asked. It is
// safe for concurrent use; read its fields once the Handler is done.
type connector struct {
	client    kubernetes.Interface
	err       error
	mu        sync.Mutex
	calls     int
	deadline  time.Time
	forgotten []error
}

func (c *connector) Clientset(ctx context.Context) (kube.Interface, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	c.deadline, _ = ctx.Deadline()
	return kubetest.Adapt(c.client), c.err
}

func (c *connector) Forget(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.forgotten = append(c.forgotten, err)
	}
}

// handleOne handles ev with h, which must report exactly once, and returns
// that report and its failure. Handle's own error must be that failure
// exactly when it is retryable.
func handleOne(t testing.TB, h *Handler, ev Event) (Report, error) {
	t.Helper()
	reps, err := h.Handle(context.Background(), ev)
	if len(reps) != 1 {
		t.Fatalf("Handle() made %d reports, want 1: %+v", len(reps), reps)
	}
	rep := reps[0]
	if (err != nil) != Retryable(rep.Err) || (err != nil && !errors.Is(err, rep.Err)) {
		t.Errorf("Handle() error = %v with the report's failure %v (retryable %v): want it exactly when retryable", err, rep.Err, Retryable(rep.Err))
	}
	return rep, rep.Err
}

func testConfig(t testing.TB, extra map[string]string) config.Config {
	t.Helper()
	e := map[string]string{
		"PROJECT": "demo-project", "LOCATION": "us-central1", "CLUSTER": "prod",
		"NAMESPACE": "default", "DEPLOYMENT": "web", "CONTAINER": "web", "IMAGE": webRepo,
		// These tests are about the decisions after confirmation: see
		// provenance_test.go for the confirmation itself.
		"VERIFY_BUILD": "false",
	}
	for k, v := range extra {
		e[k] = v
	}
	cfg, err := config.Load(func(k string) string { return e[k] })
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func webDeployment() *appsv1.Deployment {
	labels := map[string]string{"app": "web"}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: webRepo + ":initial"}}},
			},
		},
	}
}

func readBuild(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "builds", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// event wraps a build in a messagePublished envelope published at published.
func event(t testing.TB, build []byte, attrs map[string]string, published time.Time) Event {
	t.Helper()
	msg := map[string]any{"data": base64.StdEncoding.EncodeToString(build), "messageId": "m-1", "message_id": "m-1"}
	if attrs != nil {
		msg["attributes"] = attrs
	}
	if !published.IsZero() {
		msg["publishTime"] = published.Format(time.RFC3339Nano)
	}
	data, err := json.Marshal(map[string]any{"message": msg, "subscription": "projects/demo-project/subscriptions/s"})
	if err != nil {
		t.Fatal(err)
	}
	return Event{ID: "ce-1", Time: published, Data: data}
}

// withEventTime sets the CloudEvent's time of ev, leaving the message alone.
func withEventTime(ev Event, t time.Time) Event {
	ev.Time = t
	return ev
}

var now = time.Date(2026, 11, 2, 12, 0, 5, 0, time.UTC)

func TestHandle(t *testing.T) {
	web1 := readBuild(t, "web-1-success.json")
	success := map[string]string{"buildId": "0b1d0000-0000-4000-8000-000000000001", "status": "SUCCESS"}
	tests := []struct {
		name      string
		ev        Event
		outcome   rollout.Outcome
		reason    string
		connected bool
	}{
		{"deploys a matching success", event(t, web1, success, now), rollout.Deployed,
			"web rolls from " + webRepo + ":initial to " + webRepo + ":a1b2c3d@sha256:", true},
		{"status attribute dismisses before decoding", event(t, []byte("not even json"), map[string]string{"status": "QUEUED"}, now),
			rollout.Skipped, "build status is QUEUED, not SUCCESS", false},
		{"status read from the body without attributes", event(t, []byte(`{"id":"x","status":"WORKING"}`), nil, now),
			rollout.Skipped, "build status is WORKING, not SUCCESS", false},
		{"too old", event(t, web1, success, now.Add(-2*time.Hour)), rollout.Skipped,
			"event published 2h0m0s ago, older than MAX_EVENT_AGE=1h0m0s", false},
		{"own redeploy build pushes no image", event(t, readBuild(t, "onnewimage-redeploy-success.json"), success, now),
			rollout.Skipped, `no pushed image matches "` + webRepo + `" (pushed: none)`, false},
		{"lookalike repository", event(t, readBuild(t, "lookalike-web-evil-success.json"), success, now),
			rollout.Skipped, `no pushed image matches "` + webRepo + `" (pushed: ` + webRepo + `-evil:c3d4e5f, ` + webRepo + `-evil:latest)`, false},
		{"no digest", event(t, []byte(`{"id":"nd","status":"SUCCESS","createTime":"2026-11-02T12:00:00Z","results":{"images":[{"name":"`+webRepo+`"}]}}`), success, now),
			rollout.Skipped, "matching image has no digest: " + webRepo, false},
		{"undecodable build", event(t, []byte(`{"status":"SUCCESS"}`), success, now), rollout.Failed,
			"malformed build message: build has no id", false},
		{"no createTime", event(t, []byte(`{"id":"nt","status":"SUCCESS","results":{"images":[{"name":"`+webRepo+`","digest":"sha256:`+strings.Repeat("a", 64)+`"}]}}`), success, now),
			rollout.Failed, "build cannot be ordered: build nt has no createTime", false},
		{"not an envelope", Event{Data: []byte(`{"hello":"world"}`)}, rollout.Failed,
			`malformed build message: envelope has no "message"`, false},
		{"no publish time at all", event(t, web1, success, time.Time{}), rollout.Failed,
			"event has no publish time: neither message.publishTime nor the CloudEvent time is set, so MAX_EVENT_AGE cannot bound its redeliveries", false},
		{"no publish time, status in the body only", event(t, web1, nil, time.Time{}), rollout.Failed,
			"event has no publish time", false},
		{"no publish time, not a success", event(t, []byte(`{"id":"w","status":"WORKING"}`), nil, time.Time{}),
			rollout.Skipped, "build status is WORKING, not SUCCESS", false},
		{"no publish time, another image", event(t, readBuild(t, "lookalike-web-evil-success.json"), success, time.Time{}),
			rollout.Skipped, `no pushed image matches "` + webRepo + `"`, false},
		{"CloudEvent time only", withEventTime(event(t, web1, success, time.Time{}), now.Add(-2*time.Hour)), rollout.Skipped,
			"event published 2h0m0s ago, older than MAX_EVENT_AGE=1h0m0s", false},
		{"publishTime only", withEventTime(event(t, web1, success, now.Add(-3*time.Hour)), time.Time{}), rollout.Skipped,
			"event published 3h0m0s ago, older than MAX_EVENT_AGE=1h0m0s", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn := &connector{client: fake.NewClientset(webDeployment())}
			h := New(testConfig(t, nil), Options{Connector: conn, Now: func() time.Time { return now }})
			rep, err := handleOne(t, h, tt.ev)
			if rep.Outcome != tt.outcome || !strings.HasPrefix(rep.Reason, tt.reason) {
				t.Errorf("Handle() = %s %q, want %s %q", rep.Outcome, rep.Reason, tt.outcome, tt.reason)
			}
			if (err != nil) != (tt.outcome == rollout.Failed) {
				t.Errorf("Handle() error = %v with outcome %s", err, rep.Outcome)
			}
			if Retryable(err) {
				t.Errorf("Retryable(%v) = true, want false: redelivery cannot change this", err)
			}
			if got := conn.calls > 0; got != tt.connected {
				t.Errorf("connected to the cluster: %v, want %v", got, tt.connected)
			}
		})
	}
}

func TestHandleReportsTheDeploy(t *testing.T) {
	raw := readBuild(t, "web-2-success.json")
	build, err := buildevent.DecodeBuild(raw)
	if err != nil {
		t.Fatal(err)
	}
	conn := &connector{client: fake.NewClientset(webDeployment())}
	h := New(testConfig(t, nil), Options{Connector: conn, Now: func() time.Time { return now }})
	rep, err := handleOne(t, h, event(t, raw, nil, now))
	if err != nil {
		t.Fatal(err)
	}
	want := Report{
		MessageID:  "m-1",
		BuildID:    "0b1d0000-0000-4000-8000-000000000002",
		Status:     "SUCCESS",
		Image:      webRepo + ":b2c3d4e@" + build.GetResults().GetImages()[0].GetDigest(),
		Previous:   webRepo + ":initial",
		TargetName: "default",
		Target:     "default/web:web",
		Outcome:    rollout.Deployed,
		Reason:     "web rolls from " + webRepo + ":initial to " + webRepo + ":b2c3d4e@" + build.GetResults().GetImages()[0].GetDigest(),
	}
	if diff := cmp.Diff(want, rep); diff != "" {
		t.Errorf("Handle() (-want +got):\n%s", diff)
	}
}

// TestReportTarget checks how each strategy names its target in the log,
// and that a message dismissed before any target is concerned names none.
func TestReportTarget(t *testing.T) {
	queued, err := handleOne(t, New(testConfig(t, nil), Options{Connector: &connector{}, Now: func() time.Time { return now }}),
		event(t, []byte("{}"), map[string]string{"status": "QUEUED"}, now))
	if queued.Target != "" || queued.TargetName != "" || err != nil {
		t.Errorf("a QUEUED build: target %q (%q), %v; want no target", queued.Target, queued.TargetName, err)
	}
	down := &connector{err: errors.New("down")}
	for _, tt := range []struct {
		env  map[string]string
		want string
	}{
		{nil, "default/web:web"},
		{map[string]string{"STRATEGY": "rolling"}, "default/web:web"},
		{map[string]string{"STRATEGY": "blue-green", "SERVICE": "web"}, "default/web-{blue,green}:web via service/web"},
		{map[string]string{"STRATEGY": "blue-green", "INGRESS": "web.public"}, "default/web-{blue,green}:web via ingress/web.public"},
		{map[string]string{"STRATEGY": "canary"}, "default/web(+web-canary):web"},
	} {
		h := New(testConfig(t, tt.env), Options{Connector: down, Now: func() time.Time { return now }})
		rep, _ := handleOne(t, h, event(t, readBuild(t, "web-1-success.json"), nil, now))
		if rep.Target != tt.want {
			t.Errorf("%v: target %q, want %q", tt.env, rep.Target, tt.want)
		}
	}
}

func TestHandleDryRun(t *testing.T) {
	cs := fake.NewClientset(webDeployment())
	h := New(testConfig(t, map[string]string{"DRY_RUN": "true"}), Options{Connector: &connector{client: cs}, Now: func() time.Time { return now }})
	rep, err := handleOne(t, h, event(t, readBuild(t, "web-1-success.json"), nil, now))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Outcome != rollout.Skipped || !rep.DryRun || !strings.Contains(rep.Patch, `"image":"`+webRepo+`:a1b2c3d@sha256:`) {
		t.Errorf("Handle(dry run) = %+v, want skipped with the patch", rep)
	}
}

func TestHandleBoundsTheClusterWork(t *testing.T) {
	for _, tt := range []struct {
		env  map[string]string
		want time.Duration
	}{
		{nil, target.RollingBudget},
		{map[string]string{"STRATEGY": "blue-green", "SERVICE": "web", "ROLLOUT_TIMEOUT": "3m"}, target.RollingBudget + 3*time.Minute},
		{map[string]string{"STRATEGY": "blue-green", "SERVICE": "web", "ROLLOUT_TIMEOUT": "3m", "SCALE_DOWN_OLD": "true", "SCALE_DOWN_DELAY": "45s"},
			target.RollingBudget + 3*time.Minute + 45*time.Second},
		{map[string]string{"STRATEGY": "canary", "CANARY_STEPS": "5,20,50", "CANARY_PAUSE": "30s", "ROLLOUT_TIMEOUT": "40s"},
			target.RollingBudget + 3*(40*time.Second+30*time.Second) + 40*time.Second},
	} {
		conn := &connector{client: fake.NewClientset(webDeployment())}
		h := New(testConfig(t, tt.env), Options{Connector: conn, Now: func() time.Time { return now }})
		begin := time.Now()
		handleOne(t, h, event(t, readBuild(t, "web-1-success.json"), nil, now))
		if got := conn.deadline.Sub(begin); got < tt.want-time.Second || got > tt.want+time.Second {
			t.Errorf("strategy %v: cluster work deadline in %s, want %s", tt.env["STRATEGY"], got, tt.want)
		}
	}
}

func TestHandleConnectionFailureIsRetried(t *testing.T) {
	conn := &connector{err: fmt.Errorf("getting cluster: %w", status.Error(codes.Unavailable, "down"))}
	h := New(testConfig(t, nil), Options{Connector: conn, Now: func() time.Time { return now }})
	rep, err := handleOne(t, h, event(t, readBuild(t, "web-1-success.json"), nil, now))
	if rep.Outcome != rollout.Failed || !Retryable(err) {
		t.Errorf("Handle() = %s, %v (retryable %v); want a retryable failure", rep.Outcome, err, Retryable(err))
	}
}

func TestHandleForgetsBrokenConnections(t *testing.T) {
	cs := fake.NewClientset() // No deployment: the Get fails.
	conn := &connector{client: cs}
	h := New(testConfig(t, nil), Options{Connector: conn, Now: func() time.Time { return now }})
	_, err := handleOne(t, h, event(t, readBuild(t, "web-1-success.json"), nil, now))
	if !apierrors.IsNotFound(err) || Retryable(err) {
		t.Fatalf("missing deployment: error = %v, want a permanent NotFound", err)
	}
	if len(conn.forgotten) != 1 {
		t.Errorf("Forget was told of %d errors, want the rollout's", len(conn.forgotten))
	}
}

func TestRetryable(t *testing.T) {
	gr := schema.GroupResource{Group: "apps", Resource: "deployments"}
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"malformed message", fmt.Errorf("x: %w", buildevent.ErrMalformed), false},
		{"invalid configuration", fmt.Errorf("x: %w", config.ErrInvalid), false},
		{"container missing", fmt.Errorf("x: %w", rollout.ErrTargetMissing), false},
		{"router on neither colour", fmt.Errorf("x: %w", rollout.ErrRouterUnknown), false},
		{"progress deadline exceeded", fmt.Errorf("x: %w", rollout.ErrProgressDeadline), false},
		{"rollout timeout", fmt.Errorf("x: %w", rollout.ErrRolloutTimeout), true},
		{"canary aborted", fmt.Errorf("x: %w", rollout.ErrCanaryAborted), false},
		{"httproute that cannot split", fmt.Errorf("x: %w", rollout.ErrRouteInvalid), false},
		{"canary driven by another invocation", fmt.Errorf("x: %w", rollout.ErrCanaryBusy), true},
		{"no createTime", fmt.Errorf("x: %w", ErrUnorderable), false},
		{"no publish time", fmt.Errorf("x: %w", ErrNoPublishTime), false},
		{"remote emulator", fmt.Errorf("x: %w", emulator.ErrNotLoopback), false},
		{"malformed emulator host", fmt.Errorf("x: %w", emulator.ErrMalformed), false},
		{"cluster lacks the chosen endpoint", fmt.Errorf("x: %w", cluster.ErrNoEndpoint), false},
		{"unreadable release record", fmt.Errorf("x: %w", rollout.ErrRecordUnreadable), false},
		{"build ID not a label value", fmt.Errorf("x: %w", rollout.ErrBuildIDInvalid), false},
		{"release gate failed", fmt.Errorf("x: %w", rollout.ErrGateFailed), false},
		{"release gate cannot run", fmt.Errorf("x: %w", rollout.ErrGateInvalid), false},
		{"release gate not done in time", fmt.Errorf("x: %w", rollout.ErrGateTimeout), true},
		{"build refused by cloud build", fmt.Errorf("x: %w", provenance.ErrRefused), false},
		{"cloud build permission denied", fmt.Errorf("%w: x: %w", provenance.ErrUnconfirmed, status.Error(codes.PermissionDenied, "denied")), true},
		{"cloud build unavailable", fmt.Errorf("%w: x: %w", provenance.ErrUnconfirmed, status.Error(codes.Unavailable, "down")), true},
		{"deployment not found", fmt.Errorf("getting: %w", apierrors.NewNotFound(gr, "web")), false},
		{"invalid patch", apierrors.NewInvalid(schema.GroupKind{Group: "apps", Kind: "Deployment"}, "web", nil), false},
		{"bad request", apierrors.NewBadRequest("no"), false},
		{"conflict", fmt.Errorf("patching: %w", apierrors.NewConflict(gr, "web", errors.New("modified"))), true},
		{"too many requests", apierrors.NewTooManyRequests("slow down", 1), true},
		{"internal error", apierrors.NewInternalError(errors.New("etcd")), true},
		{"service unavailable", apierrors.NewServiceUnavailable("starting"), true},
		{"server timeout", apierrors.NewServerTimeout(gr, "patch", 1), true},
		{"timeout", apierrors.NewTimeoutError("slow", 1), true},
		{"unauthorized", apierrors.NewUnauthorized("token"), true},
		{"forbidden", apierrors.NewForbidden(gr, "web", errors.New("rbac")), true},
		{"grpc unavailable", fmt.Errorf("getting cluster: %w", status.Error(codes.Unavailable, "x")), true},
		{"grpc deadline", status.Error(codes.DeadlineExceeded, "x"), true},
		{"grpc resource exhausted", status.Error(codes.ResourceExhausted, "quota"), true},
		{"grpc permission denied", status.Error(codes.PermissionDenied, "iam"), true},
		{"grpc unauthenticated", status.Error(codes.Unauthenticated, "adc"), true},
		{"grpc not found", fmt.Errorf("getting cluster: %w", status.Error(codes.NotFound, "x")), false},
		{"grpc invalid argument", status.Error(codes.InvalidArgument, "x"), false},
		{"context deadline", fmt.Errorf("watch: %w", context.DeadlineExceeded), true},
		{"connection refused", &url.Error{Op: "Get", URL: "https://x", Err: &net.OpError{Op: "dial", Err: errors.New("connection refused")}}, true},
		{"tls", &url.Error{Op: "Get", URL: "https://x", Err: x509.UnknownAuthorityError{}}, true},
		{"token service", &url.Error{Op: "Get", URL: "https://x", Err: &oauth2.RetrieveError{ErrorCode: "backend_error"}}, true},
		{"token service hung", &url.Error{Op: "Patch", URL: "https://x", Err: fmt.Errorf("%w: %w", cluster.ErrNoToken, context.DeadlineExceeded)}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Retryable(tt.err); got != tt.want {
				t.Errorf("Retryable(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

func TestExplainSaysWhatToGrant(t *testing.T) {
	gr := schema.GroupResource{Group: "apps", Resource: "deployments"}
	forbidden := apierrors.NewForbidden(gr, "web", errors.New(`User "deployer@demo-project.iam.gserviceaccount.com" cannot patch resource "deployments"`))
	if got := explain(forbidden); !strings.Contains(got, "cannot patch resource") || !strings.Contains(got, "k8s/rbac.yaml") {
		t.Errorf("explain(forbidden) = %q", got)
	}
	if got := explain(status.Error(codes.PermissionDenied, "denied")); !strings.Contains(got, "roles/container.clusterViewer") {
		t.Errorf("explain(PermissionDenied) = %q", got)
	}
}

// TestExplainBlamesWhatFailed: the reason names the service that failed, so
// that an operator looks in the right place.
func TestExplainBlamesWhatFailed(t *testing.T) {
	noToken := &url.Error{Op: "Patch", URL: "https://x", Err: fmt.Errorf("%w: %w", cluster.ErrNoToken, context.DeadlineExceeded)}
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"cluster too slow", fmt.Errorf("getting deployment: %w", context.DeadlineExceeded), "getting deployment: context deadline exceeded: the cluster did not answer in time"},
		{"token service too slow", noToken, `Patch "https://x": no access token: context deadline exceeded: Application Default Credentials gave no token for the cluster in time`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, explain(tt.err)); diff != "" {
				t.Errorf("explain(%v) (-want +got):\n%s", tt.err, diff)
			}
		})
	}
}

// colourDeployment is web-<colour>, fully rolled out on webRepo:<tag>, with
// status as the controller would report it.
func colourDeployment(colour, tag string, status appsv1.DeploymentStatus) *appsv1.Deployment {
	d := webDeployment()
	d.Name = "web-" + colour
	labels := map[string]string{"app": "web", "version": colour}
	d.Spec.Selector.MatchLabels, d.Spec.Template.Labels = labels, labels
	d.Spec.Template.Spec.Containers[0].Image = webRepo + ":" + tag
	replicas := int32(2)
	d.Spec.Replicas = &replicas
	d.Generation, d.ResourceVersion = 1, "1"
	d.Status = status
	return d
}

func routerService(colour string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default", ResourceVersion: "1"},
		Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": "web", "version": colour}},
	}
}

func TestHandleBlueGreen(t *testing.T) {
	available := appsv1.DeploymentStatus{ObservedGeneration: 1, Replicas: 2, UpdatedReplicas: 2, AvailableReplicas: 2}
	deadline := appsv1.DeploymentStatus{ObservedGeneration: 1, Replicas: 3, UpdatedReplicas: 1, AvailableReplicas: 2,
		Conditions: []appsv1.DeploymentCondition{{Type: appsv1.DeploymentProgressing, Reason: "ProgressDeadlineExceeded"}}}
	tests := []struct {
		name      string
		router    string // The colour the Service selects.
		green     appsv1.DeploymentStatus
		outcome   rollout.Outcome
		reason    string
		retryable bool
		live      string // The colour the Service selects afterwards.
		previous  string
	}{
		{"switches once the idle colour is available", "blue", available, rollout.Deployed,
			`switched service web from blue to green after deployment "web-green" successfully rolled out`, false, "green", webRepo + ":initial"},
		// A failure's report has no previous image: only a Result says what
		// ran, and a Result comes only without an error.
		{"a release past its progress deadline is not switched to", "blue", deadline, rollout.Failed,
			`deployment "web-green" exceeded its progress deadline`, false, "blue", ""},
		{"a router on neither colour", "canary", available, rollout.Failed,
			`router points at no single colour: service default/web selects version="canary"`, false, "canary", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cs := fake.NewClientset(routerService(tt.router), colourDeployment("blue", "initial", available), colourDeployment("green", "older", tt.green))
			cfg := testConfig(t, map[string]string{"STRATEGY": "blue-green", "SERVICE": "web", "ROLLOUT_TIMEOUT": "10s"})
			h := New(cfg, Options{Connector: &connector{client: cs}, Now: func() time.Time { return now }})
			rep, err := handleOne(t, h, event(t, readBuild(t, "web-1-success.json"), nil, now))
			if rep.Outcome != tt.outcome || !strings.HasPrefix(rep.Reason, tt.reason) {
				t.Errorf("Handle() = %s %q, want %s %q", rep.Outcome, rep.Reason, tt.outcome, tt.reason)
			}
			if (err != nil) != (tt.outcome == rollout.Failed) || Retryable(err) != tt.retryable {
				t.Errorf("Handle() error = %v (retryable %v), want retryable %v", err, Retryable(err), tt.retryable)
			}
			got := []string{rep.Target, rep.Previous}
			if diff := cmp.Diff([]string{"default/web-{blue,green}:web via service/web", tt.previous}, got); diff != "" {
				t.Errorf("target, previous (-want +got):\n%s", diff)
			}
			svc, err := cs.CoreV1().Services("default").Get(context.Background(), "web", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if got := svc.Spec.Selector["version"]; got != tt.live {
				t.Errorf("service selects version=%s, want %s", got, tt.live)
			}
		})
	}
}

func TestRollback(t *testing.T) {
	available := appsv1.DeploymentStatus{ObservedGeneration: 1, Replicas: 2, UpdatedReplicas: 2, AvailableReplicas: 2}
	router := routerService("green")
	// A claim left by an invocation that died an hour ago: older than the
	// budget of one event (RollingBudget + ROLLOUT_TIMEOUT), so expired.
	stale := "b9 to blue at " + time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	router.Annotations = map[string]string{rollout.AnnotationDeploying: stale}
	cs := fake.NewClientset(router, colourDeployment("blue", "initial", available), colourDeployment("green", "newer", available))
	cfg := testConfig(t, map[string]string{"STRATEGY": "blue-green", "SERVICE": "web"})
	res, err := New(cfg, Options{Connector: &connector{client: cs}}).Rollback(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	want := `rolled back service web from green to blue after deployment "web-blue" successfully rolled out; it runs ` + webRepo + ":initial" +
		"; took over the expired claim onnewimage.dev/deploying=\"" + stale + "\" on service web (older than 6m0s, the longest an event may take: the invocation that made it is gone)"
	if res.Outcome != rollout.Deployed || res.Reason != want {
		t.Errorf("Rollback() = %s %q, want deployed %q", res.Outcome, res.Reason, want)
	}
}

// With the rolling strategy, Rollback does what kubectl rollout undo does.
func TestRollbackRolling(t *testing.T) {
	d := webDeployment()
	d.UID, d.ResourceVersion = "web-uid", "7"
	d.Annotations = map[string]string{"deployment.kubernetes.io/revision": "2"}
	d.Spec.Template.Spec.Containers[0].Image = webRepo + ":v2"
	var objs []runtime.Object
	for rev, tag := range []string{"v1", "v2"} {
		rs := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: "web-" + tag, Namespace: "default", Labels: map[string]string{"app": "web"},
			Annotations:     map[string]string{"deployment.kubernetes.io/revision": fmt.Sprint(rev + 1)},
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(d, appsv1.SchemeGroupVersion.WithKind("Deployment"))}}}
		rs.Spec.Template = *d.Spec.Template.DeepCopy()
		rs.Spec.Template.Spec.Containers[0].Image = webRepo + ":" + tag
		objs = append(objs, rs)
	}
	cs := fake.NewClientset(append(objs, d)...)
	cfg, err := config.LoadTarget(func(k string) string {
		return map[string]string{"KUBECONFIG": "/dev/null", "DEPLOYMENT": "web", "CONTAINER": "web"}[k]
	})
	if err != nil {
		t.Fatalf("LoadTarget without IMAGE: %v", err)
	}
	res, err := New(cfg, Options{Connector: &connector{client: cs}}).Rollback(context.Background(), "")
	want := "rolled web back from revision 2 (no recorded build) to revision 1 (no recorded build); it runs " + webRepo + ":v1"
	if err != nil || res.Outcome != rollout.Deployed || res.Reason != want {
		t.Errorf("Rollback() = %s %q, %v; want deployed %q", res.Outcome, res.Reason, err, want)
	}
}

// TestRollbackOneOfSeveralTargets checks that Rollback acts on the target
// named, and on nothing when no name, or an unknown one, picks a target.
func TestRollbackOneOfSeveralTargets(t *testing.T) {
	available := appsv1.DeploymentStatus{ObservedGeneration: 1, Replicas: 2, UpdatedReplicas: 2, AvailableReplicas: 2}
	cfg := fileConfig(t, webTarget+
		"  - {name: web-prod, image: "+webRepo+", cluster: {kubeconfig: /k}, deployment: web, container: web, strategy: blue-green, service: web}\n")
	tests := []struct {
		target string
		want   string // The outcome and reason, or the error.
		live   string // The colour the router selects afterwards.
	}{
		{"web-prod", "deployed: rolled back service web from green to blue after deployment \"web-blue\" successfully rolled out; it runs " + webRepo + ":initial", "blue"},
		{"", cfg.TargetsFile + " has 2 targets: name one of web, web-prod", "green"},
		{"prod", `no target "prod" in ` + cfg.TargetsFile + ": name one of web, web-prod", "green"},
	}
	for _, tt := range tests {
		t.Run(tt.target, func(t *testing.T) {
			cs := fake.NewClientset(routerService("green"), colourDeployment("blue", "initial", available), colourDeployment("green", "newer", available))
			res, err := New(cfg, Options{Connector: &connector{client: cs}}).Rollback(context.Background(), tt.target)
			got := fmt.Sprintf("%s: %s", res.Outcome, res.Reason)
			if err != nil {
				got = err.Error()
				if !errors.Is(err, config.ErrNoTarget) {
					t.Errorf("Rollback(%q) = %v, want config.ErrNoTarget", tt.target, err)
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Rollback(%q) (-want +got):\n%s", tt.target, diff)
			}
			svc, err := cs.CoreV1().Services("default").Get(context.Background(), "web", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if got := svc.Spec.Selector["version"]; got != tt.live {
				t.Errorf("service selects version=%s, want %s", got, tt.live)
			}
		})
	}
}

// TestRollbackConnectsToTheTargetsCluster checks that Rollback reaches the
// cluster of the target named, not another target's.
func TestRollbackConnectsToTheTargetsCluster(t *testing.T) {
	dir := t.TempDir()
	cfg := fileConfig(t, "  - {name: a, image: web, cluster: {kubeconfig: "+dir+"/a}, deployment: web, container: web}\n"+
		"  - {name: b, image: web, cluster: {kubeconfig: "+dir+"/b}, deployment: web, container: web}\n")
	_, err := New(cfg, Options{}).Rollback(context.Background(), "b")
	if err == nil || !strings.Contains(err.Error(), "loading kubeconfig "+dir+"/b:") {
		t.Errorf("Rollback(b) = %v, want it loading b's kubeconfig", err)
	}
}

// fileConfig loads a targets file holding targets.
func fileConfig(t *testing.T, targets string) config.Config {
	t.Helper()
	path := filepath.Join(t.TempDir(), "targets.yaml")
	if err := os.WriteFile(path, []byte("targets:\n"+targets), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(func(k string) string { return map[string]string{"TARGETS": path, "VERIFY_BUILD": "false"}[k] })
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

const webTarget = "  - {name: web, image: " + webRepo + ", cluster: {project: demo-project, location: us-central1, name: prod}, deployment: web, container: web}\n"

// TestHandleOneTargetOfAFile checks that a targets file of one target
// deploys as the single-target variables naming the same target do.
func TestHandleOneTargetOfAFile(t *testing.T) {
	var got []Report
	for _, cfg := range []config.Config{testConfig(t, nil), fileConfig(t, webTarget)} {
		cs := fake.NewClientset(webDeployment())
		rep, err := handleOne(t, New(cfg, Options{Connector: &connector{client: cs}, Now: func() time.Time { return now }}),
			event(t, readBuild(t, "web-1-success.json"), nil, now))
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, rep)
	}
	if got[0].Outcome != rollout.Deployed {
		t.Fatalf("variables: %+v, want deployed", got[0])
	}
	names := []string{got[0].TargetName, got[0].Target, got[1].TargetName, got[1].Target}
	if diff := cmp.Diff([]string{"default", "default/web:web", "web", "web: default/web:web"}, names); diff != "" {
		t.Errorf("target names (-want +got):\n%s", diff)
	}
	got[1].TargetName, got[1].Target = got[0].TargetName, got[0].Target
	if diff := cmp.Diff(got[0], got[1]); diff != "" {
		t.Errorf("a one-target file's report differs from the variables' but for the target's name (-variables +file):\n%s", diff)
	}
}

// TestHandleAppliesTheRules checks that the one target of a file deploys
// only the builds its when rules select (web-1 is built from branch main),
// and that a skip names the rule and the build's value.
func TestHandleAppliesTheRules(t *testing.T) {
	tests := []struct {
		when    string
		outcome rollout.Outcome
		reason  string
	}{
		{"{branch: main}", rollout.Deployed, ""},
		{"{branch: 'release/.*'}", rollout.Skipped, `when.branch "release/.*" does not match BRANCH_NAME "main"`},
		{"{tag: 'v.*'}", rollout.Skipped, `when.tag "v.*": the build has no TAG_NAME`},
	}
	for _, tt := range tests {
		t.Run(tt.when, func(t *testing.T) {
			cfg := fileConfig(t, strings.Replace(webTarget, "}\n", ", when: "+tt.when+"}\n", 1))
			cs := fake.NewClientset(webDeployment())
			rep, err := handleOne(t, New(cfg, Options{Connector: &connector{client: cs}, Now: func() time.Time { return now }}),
				event(t, readBuild(t, "web-1-success.json"), nil, now))
			if err != nil {
				t.Fatal(err)
			}
			got := []any{rep.Outcome, rep.Reason}
			if tt.outcome == rollout.Deployed {
				got[1] = ""
			}
			if diff := cmp.Diff([]any{tt.outcome, tt.reason}, got); diff != "" {
				t.Errorf("Handle (-want +got):\n%s", diff)
			}
		})
	}
}

// With the canary strategy, Rollback aborts the canary in progress, and
// Inspect shows it.
func TestRollbackCanary(t *testing.T) {
	canary := webDeployment()
	canary.Name = "web-canary"
	canary.Annotations = map[string]string{rollout.AnnotationCanary: `{"build":"b2","createTime":"2026-11-02T10:00:00Z","step":0,"percent":10,"holder":"x","claimedAt":"2026-11-02T10:00:00Z"}`}
	cs := fake.NewClientset(webDeployment(), canary)
	cfg, err := config.LoadTarget(func(k string) string {
		return map[string]string{"KUBECONFIG": "/dev/null", "STRATEGY": "canary", "DEPLOYMENT": "web", "CONTAINER": "web"}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	h := New(cfg, Options{Connector: &connector{client: cs}})
	s, err := h.Inspect(context.Background(), "")
	if err != nil || !strings.HasPrefix(s.Deploying, "build b2 at 10% on web-canary") {
		t.Errorf("Inspect() deploying %q, %v; want the canary in progress", s.Deploying, err)
	}
	res, err := h.Rollback(context.Background(), "")
	if err != nil || res.Outcome != rollout.Deployed || !strings.HasPrefix(res.Reason, "aborted the canary of build b2 at 10%") {
		t.Errorf("Rollback() = %s %q, %v; want the canary aborted", res.Outcome, res.Reason, err)
	}
}
