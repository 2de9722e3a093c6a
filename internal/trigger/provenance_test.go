package trigger

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/cloudbuild/apiv1/v2/cloudbuildpb"
	"github.com/google/go-cmp/cmp"
	"github.com/googleapis/gax-go/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/onnewimage/onnewimage/internal/buildevent"
	"github.com/onnewimage/onnewimage/internal/config"
	"github.com/onnewimage/onnewimage/internal/provenance"
	"github.com/onnewimage/onnewimage/internal/rollout"
)

// cloudBuild plays the Cloud Build API: GetBuild answers with the build
// stored under the ID asked for, or err. It counts the calls.
type cloudBuild struct {
	mu     sync.Mutex
	builds map[string]*cloudbuildpb.Build
	err    error
	calls  []*cloudbuildpb.GetBuildRequest
}

func (c *cloudBuild) GetBuild(_ context.Context, req *cloudbuildpb.GetBuildRequest, _ ...gax.CallOption) (*cloudbuildpb.Build, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = append(c.calls, req)
	if c.err != nil {
		return nil, c.err
	}
	b, ok := c.builds[req.GetId()]
	if !ok || b.GetProjectId() != req.GetProjectId() {
		return nil, status.Errorf(codes.NotFound, "build %q not found", req.GetId())
	}
	return b, nil
}

// verifiedConfig is testConfig with confirmation on.
func verifiedConfig(t testing.TB) config.Config {
	return testConfig(t, map[string]string{"VERIFY_BUILD": "true"})
}

// decoded decodes a build fixture; edit, when given, changes it.
func decoded(t testing.TB, name string, edit func(*cloudbuildpb.Build)) *cloudbuildpb.Build {
	t.Helper()
	b, err := buildevent.DecodeBuild(readBuild(t, name))
	if err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(b)
	}
	return b
}

const otherDigest = "sha256:" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// TestHandleConfirmsTheBuild: with confirmation on, a SUCCESS message of a
// target's image is deployed only as Cloud Build's copy of the build says,
// and a forged one is refused before any cluster call, acknowledged.
func TestHandleConfirmsTheBuild(t *testing.T) {
	web1 := readBuild(t, "web-1-success.json")
	genuine := decoded(t, "web-1-success.json", nil)
	tests := []struct {
		name    string
		api     *cloudbuildpb.Build // What Cloud Build holds; nil: nothing.
		apiErr  error
		msg     []byte
		outcome rollout.Outcome
		reason  string
		retry   bool
		calls   int
	}{
		{"genuine", genuine, nil, web1, rollout.Deployed, "web rolls from " + webRepo + ":initial to " + webRepo + ":a1b2c3d@sha256:4edb", false, 1},
		{"wrong digest", decoded(t, "web-1-success.json", func(b *cloudbuildpb.Build) {
			for _, img := range b.Results.Images {
				img.Digest = otherDigest
			}
		}), nil, web1, rollout.Refused,
			"build refused: cloud build's copy of build 0b1d0000-0000-4000-8000-000000000001 pushed no " + webRepo + "@sha256:4edb907ab84acf0d0ee47f6fa49b6dbc2725c7cc0205d2b249c17a64779b5eba (it pushed: " + webRepo + ":a1b2c3d@" + otherDigest,
			false, 1},
		{"wrong status", decoded(t, "web-1-success.json", func(b *cloudbuildpb.Build) { b.Status = cloudbuildpb.Build_FAILURE }), nil, web1, rollout.Refused,
			"build refused: cloud build says build 0b1d0000-0000-4000-8000-000000000001 is FAILURE, not SUCCESS", false, 1},
		{"still working", decoded(t, "web-1-success.json", func(b *cloudbuildpb.Build) { b.Status = cloudbuildpb.Build_WORKING }), nil, web1, rollout.Refused,
			"build refused: cloud build says build 0b1d0000-0000-4000-8000-000000000001 is WORKING, not SUCCESS", false, 1},
		{"unknown build", nil, nil, web1, rollout.Refused,
			"build refused: cloud build has no build 0b1d0000-0000-4000-8000-000000000001 in project demo-project", false, 1},
		{"foreign project", genuine, nil, []byte(strings.Replace(string(web1), `"projectId": "demo-project"`, `"projectId": "evil-project"`, 1)), rollout.Refused,
			`build refused: build 0b1d0000-0000-4000-8000-000000000001 is of project "evil-project", not one of BUILD_PROJECTS (demo-project)`, false, 0},
		{"no project", genuine, nil, []byte(strings.Replace(string(web1), `"projectId": "demo-project",`, ``, 1)), rollout.Refused,
			`build refused: build 0b1d0000-0000-4000-8000-000000000001 names no projectId`, false, 0},
		{"cloud build unavailable", genuine, status.Error(codes.Unavailable, "connection refused"), web1, rollout.Failed,
			"build not confirmed with cloud build: getting build 0b1d0000-0000-4000-8000-000000000001 of project demo-project: rpc error: code = Unavailable", true, 1},
		{"cloud build too slow", genuine, status.Error(codes.DeadlineExceeded, "deadline"), web1, rollout.Failed,
			"build not confirmed with cloud build: getting build", true, 1},
		{"permission denied", genuine, status.Error(codes.PermissionDenied, "cloudbuild.builds.get denied"), web1, rollout.Failed,
			"build not confirmed with cloud build: getting build 0b1d0000-0000-4000-8000-000000000001 of project demo-project: rpc error: code = PermissionDenied desc = cloudbuild.builds.get denied: grant the function's service account roles/cloudbuild.builds.viewer on project demo-project",
			true, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api := &cloudBuild{builds: map[string]*cloudbuildpb.Build{}, err: tt.apiErr}
			if tt.api != nil {
				api.builds[tt.api.GetId()] = tt.api
			}
			conn := &connector{client: fake.NewClientset(webDeployment())}
			pub := &publisher{}
			h := New(verifiedConfig(t), Options{Connector: conn, Builds: api, Now: func() time.Time { return now }, Results: pub})
			rep, err := handleOne(t, h, event(t, tt.msg, map[string]string{"status": "SUCCESS"}, now))
			if rep.Outcome != tt.outcome || !strings.HasPrefix(rep.Reason, tt.reason) {
				t.Errorf("Handle() = %s %q\nwant %s %q", rep.Outcome, rep.Reason, tt.outcome, tt.reason)
			}
			if got := Retryable(err); got != tt.retry {
				t.Errorf("Retryable(%v) = %v, want %v", err, got, tt.retry)
			}
			if tt.outcome == rollout.Refused && !errors.Is(err, provenance.ErrRefused) {
				t.Errorf("Handle() error = %v, want one wrapping provenance.ErrRefused", err)
			}
			if strings.Contains(rep.Reason, "container.clusterViewer") {
				t.Errorf("reason %q names the Container API's role for a Cloud Build failure", rep.Reason)
			}
			if tt.outcome == rollout.Deployed && !rep.Confirmed {
				t.Errorf("Confirmed = false with outcome deployed: the log line would say confirmation is off")
			}
			if len(api.calls) != tt.calls {
				t.Errorf("%d GetBuild calls, want %d", len(api.calls), tt.calls)
			}
			// Refused and unconfirmed builds are results too.
			var outcomes []string
			for _, m := range pub.published() {
				outcomes = append(outcomes, m.Outcome)
			}
			if diff := cmp.Diff([]string{string(tt.outcome)}, outcomes); diff != "" {
				t.Errorf("results published (-want +got):\n%s", diff)
			}
			if want := tt.outcome == rollout.Deployed; (conn.calls > 0) != want {
				t.Errorf("connected to the cluster %d times; want a connection: %v", conn.calls, want)
			}
		})
	}
}

// TestHandleDecidesOnCloudBuildsCopy: every decision after confirmation is
// made on Cloud Build's copy, not the message's: the createTime recorded
// (which orders releases), the commit, and the tag deployed.
func TestHandleDecidesOnCloudBuildsCopy(t *testing.T) {
	genuine := decoded(t, "web-1-success.json", nil)
	// The message claims the build is an hour newer than it is, from
	// another commit: a replayed old build dressed up as a new one.
	claimed := proto.Clone(genuine).(*cloudbuildpb.Build)
	claimed.CreateTime = timestamppb.New(now.Add(-time.Minute))
	claimed.Substitutions["COMMIT_SHA"] = strings.Repeat("f", 40)
	claimed.SourceProvenance = nil
	msg, err := protojson.Marshal(claimed)
	if err != nil {
		t.Fatal(err)
	}
	api := &cloudBuild{builds: map[string]*cloudbuildpb.Build{genuine.GetId(): genuine}}
	cs := fake.NewClientset(webDeployment())
	h := New(verifiedConfig(t), Options{Connector: &connector{client: cs}, Builds: api, Now: func() time.Time { return now }})
	rep, err := handleOne(t, h, event(t, msg, nil, now))
	if err != nil || rep.Outcome != rollout.Deployed {
		t.Fatalf("Handle() = %s %q, %v; want deployed", rep.Outcome, rep.Reason, err)
	}
	d, err := cs.AppsV1().Deployments("default").Get(context.Background(), "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{
		rollout.AnnotationBuildCreateTime: d.Annotations[rollout.AnnotationBuildCreateTime],
		rollout.AnnotationCommit:          d.Annotations[rollout.AnnotationCommit],
	}
	want := map[string]string{
		rollout.AnnotationBuildCreateTime: "2026-11-02T10:00:00.123456789Z",
		rollout.AnnotationCommit:          "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("recorded release (-want +got):\n%s", diff)
	}
}

// TestHandleAppliesTheRulesToCloudBuildsCopy: a when rule reads the
// substitutions of Cloud Build's copy: a feature-branch build whose message
// claims main is not deployed.
func TestHandleAppliesTheRulesToCloudBuildsCopy(t *testing.T) {
	genuine := decoded(t, "web-1-success.json", func(b *cloudbuildpb.Build) { b.Substitutions["BRANCH_NAME"] = "feature/x" })
	msg := readBuild(t, "web-1-success.json") // BRANCH_NAME main.
	api := &cloudBuild{builds: map[string]*cloudbuildpb.Build{genuine.GetId(): genuine}}
	path := filepath.Join(t.TempDir(), "targets.yaml")
	if err := os.WriteFile(path, []byte("targets:\n"+strings.Replace(webTarget, "}\n", ", when: {branch: main}}\n", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(func(k string) string { return map[string]string{"TARGETS": path}[k] })
	if err != nil {
		t.Fatal(err)
	}
	conn := &connector{client: fake.NewClientset(webDeployment())}
	rep, err := handleOne(t, New(cfg, Options{Connector: conn, Builds: api, Now: func() time.Time { return now }}), event(t, msg, nil, now))
	if diff := cmp.Diff([]any{rollout.Skipped, `when.branch "main" does not match BRANCH_NAME "feature/x"`, error(nil), 1, 0},
		[]any{rep.Outcome, rep.Reason, err, len(api.calls), conn.calls}, cmp.Comparer(func(a, b error) bool { return a == b })); diff != "" {
		t.Errorf("Handle (outcome, reason, error, GetBuild calls, cluster connections) (-want +got):\n%s", diff)
	}
}

// TestHandleConfirmsOncePerMessage: a build for several targets costs one
// GetBuild call, and a refusal yields one refused report per target
// concerned, with no cluster connection.
func TestHandleConfirmsOncePerMessage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "targets.yaml")
	if err := os.WriteFile(path, []byte("targets:\n"+teamTargets), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(func(k string) string { return map[string]string{"TARGETS": path}[k] })
	if err != nil {
		t.Fatal(err)
	}
	raw := teamBuild(t, "main", "")
	genuine, err := buildevent.DecodeBuild(raw)
	if err != nil {
		t.Fatal(err)
	}
	noTag := `when.tag "v[0-9]+\\.[0-9]+\\.[0-9]+": the build has no TAG_NAME`
	unknown := "build refused: cloud build has no build 0b1d0000-0000-4000-8000-000000000001 in project demo-project"
	for _, tt := range []struct {
		name     string
		api      map[string]*cloudbuildpb.Build
		want     []outcome
		connects int
	}{
		{"genuine", map[string]*cloudbuildpb.Build{genuine.GetId(): genuine}, []outcome{
			{"web-staging: web/web:web", "deployed", "", false},
			{"worker-staging: worker/worker:web", "deployed", "", false},
			{"web-prod: web/web:web", "skipped", noTag, false},
		}, 1},
		{"unknown build", map[string]*cloudbuildpb.Build{}, []outcome{
			{"web-staging: web/web:web", "refused", unknown, false},
			{"worker-staging: worker/worker:web", "refused", unknown, false},
			{"web-prod: web/web:web", "refused", unknown, false},
		}, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			api := &cloudBuild{builds: tt.api}
			cl := newClusters(map[string]kubernetes.Interface{
				"staging": fake.NewClientset(deployment("web", "web"), deployment("worker", "worker")),
				"prod":    fake.NewClientset(deployment("web", "web")),
			})
			reps, err := New(cfg, Options{Connect: cl.connect, Builds: api, Now: func() time.Time { return now }}).Handle(context.Background(), event(t, raw, nil, now))
			if err != nil {
				t.Errorf("Handle() error = %v, want nil", err)
			}
			if diff := cmp.Diff(tt.want, brief(reps), prefix); diff != "" {
				t.Errorf("reports (-want +got):\n%s", diff)
			}
			if len(api.calls) != 1 || len(cl.connects) != tt.connects {
				t.Errorf("%d GetBuild calls and %d clusters connected, want 1 and %d", len(api.calls), len(cl.connects), tt.connects)
			}
		})
	}
}

// TestDismissedWithoutACall: what is dismissed before a target's cluster is
// concerned never reaches Cloud Build either, and neither does what the
// hostile-input checks refuse.
func TestDismissedWithoutACall(t *testing.T) {
	success := map[string]string{"status": "SUCCESS"}
	web1 := readBuild(t, "web-1-success.json")
	for _, tt := range []struct {
		name string
		ev   Event
	}{
		{"queued", event(t, []byte("not even json"), map[string]string{"status": "QUEUED"}, now)},
		{"working in the body", event(t, []byte(`{"id":"x","status":"WORKING"}`), nil, now)},
		{"too old", event(t, web1, success, now.Add(-2*time.Hour))},
		{"another image", event(t, readBuild(t, "lookalike-web-evil-success.json"), success, now)},
		{"no image", event(t, readBuild(t, "onnewimage-redeploy-success.json"), success, now)},
		{"no digest", event(t, []byte(`{"id":"nd","projectId":"demo-project","status":"SUCCESS","createTime":"2026-11-02T12:00:00Z","results":{"images":[{"name":"`+webRepo+`"}]}}`), success, now)},
		{"undecodable", event(t, []byte(`{"status":"SUCCESS"}`), success, now)},
		{"no publish time", event(t, web1, success, time.Time{})},
		{"created in 2099", event(t, build("b", time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC), webImage("v1")), success, now)},
		{"no createTime", event(t, []byte(`{"id":"nt","projectId":"demo-project","status":"SUCCESS","results":{"images":[{"name":"`+webRepo+`","digest":"sha256:`+strings.Repeat("a", 64)+`"}]}}`), success, now)},
		{"status attribute SUCCESS, build FAILURE", event(t, []byte(strings.Replace(string(web1), `"status": "SUCCESS"`, `"status": "FAILURE"`, 1)), success, now)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			api := &cloudBuild{builds: map[string]*cloudbuildpb.Build{}}
			conn := &connector{client: fake.NewClientset(webDeployment())}
			rep, _ := handleOne(t, New(verifiedConfig(t), Options{Connector: conn, Builds: api, Now: func() time.Time { return now }}), tt.ev)
			if rep.Outcome == rollout.Deployed || rep.Outcome == rollout.Refused {
				t.Errorf("Handle() = %s %q, want it dismissed", rep.Outcome, rep.Reason)
			}
			if len(api.calls) != 0 || conn.calls != 0 {
				t.Errorf("%d GetBuild calls and %d cluster connections, want none", len(api.calls), conn.calls)
			}
		})
	}
}
