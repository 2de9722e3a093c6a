package sandbox

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/cloudbuild/apiv1/v2/cloudbuildpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/onnewimage/onnewimage/internal/rollout"
)

// push delivers b to the function as the push subscription does (a raw push
// body on the topic's path), without Pub/Sub, and returns the HTTP status:
// a 2xx is what acknowledges a push delivery.
func push(ctx context.Context, t *testing.T, sb *Sandbox, b *cloudbuildpb.Build) int {
	t.Helper()
	data, err := protojson.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	body, err := json.Marshal(map[string]any{
		"message": map[string]any{
			"data":        base64.StdEncoding.EncodeToString(data),
			"attributes":  map[string]string{"buildId": b.GetId(), "status": b.GetStatus().String()},
			"messageId":   "direct-" + b.GetId(),
			"publishTime": time.Now().UTC().Format(time.RFC3339Nano),
		},
		"subscription": "projects/" + Project + "/subscriptions/" + Subscription,
	})
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, sb.Function.URL+"projects/"+Project+"/topics/"+Topic, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// linesOf returns the log lines of build id.
func linesOf(sb *Sandbox, id string) []map[string]any {
	var out []map[string]any
	for _, l := range sb.Function.Logs() {
		if l["buildId"] == id {
			out = append(out, l)
		}
	}
	return out
}

// TestE2EForgedMessagesAreRefused publishes forged cloud-builds messages
// (as anyone allowed to publish on the topic could) while build 2 is live:
// each is refused with one ERROR line naming the reason, acknowledged, and
// changes nothing in the cluster; a genuine old build replayed is skipped
// as stale. Then a genuine newer build still deploys.
func TestE2EForgedMessagesAreRefused(t *testing.T) {
	sb, ctx := start(t, Options{})
	b1, b2, b3 := load(t, "web-1-success.json"), load(t, "web-2-success.json"), load(t, "web-3-success.json")
	mustDeploy(ctx, t, sb, b2)
	waitLive(ctx, t, sb, pinned(b2))
	before := getWeb(ctx, t, sb)

	otherDigest := "sha256:" + strings.Repeat("0", 64)
	wrongDigest := proto.Clone(b3).(*cloudbuildpb.Build)
	for _, img := range wrongDigest.Results.Images {
		img.Digest = otherDigest
	}
	unknown := FreshBuild(b3)
	foreign := FreshBuild(b3)
	foreign.ProjectId = "evil-project"
	tests := []struct {
		name     string
		register *cloudbuildpb.Build // What Cloud Build holds for the ID; nil: nothing.
		forged   *cloudbuildpb.Build
		reason   string
		calls    int
	}{
		{"wrong digest", b3, wrongDigest,
			"build refused: cloud build's copy of build " + b3.GetId() + " pushed no " + Image + "@" + otherDigest, 1},
		{"wrong status", WithStatus(b3, cloudbuildpb.Build_FAILURE), b3,
			"build refused: cloud build says build " + b3.GetId() + " is FAILURE, not SUCCESS", 1},
		{"unknown build", nil, unknown,
			"build refused: cloud build has no build " + unknown.GetId() + " in project " + Project, 1},
		{"foreign project", nil, foreign,
			`build refused: build ` + foreign.GetId() + ` is of project "evil-project", not one of BUILD_PROJECTS (` + Project + `)`, 0},
	}
	for _, tt := range tests {
		if tt.register != nil {
			sb.CloudBuild.Forge(tt.register)
		}
		calls, seen := sb.CloudBuild.Calls(), len(sb.Function.Logs())
		id, err := sb.PublishForged(ctx, tt.forged)
		if err != nil {
			t.Fatal(err)
		}
		line := waitLine(ctx, t, sb, seen, tt.forged.GetId(), func(l map[string]any) bool { return l["messageId"] == id })
		reason, _ := line["reason"].(string)
		if line["severity"] != "ERROR" || line["outcome"] != "refused" || !strings.HasPrefix(reason, tt.reason) {
			t.Errorf("%s: %v\nwant an ERROR refused line with the reason %q", tt.name, line, tt.reason)
		}
		if got := sb.CloudBuild.Calls() - calls; got != tt.calls {
			t.Errorf("%s: %d GetBuild calls, want %d", tt.name, got, tt.calls)
		}
		// A 2xx acknowledges a push delivery: the same forgery, pushed
		// straight to the function, is acknowledged.
		if code := push(ctx, t, sb, tt.forged); code < 200 || code > 299 {
			t.Errorf("%s: pushed directly, HTTP %d, want a 2xx so that Pub/Sub does not redeliver", tt.name, code)
		}
		// Its line may be read after the answer: wait for it, so that the
		// next case's lines come after it.
		waitLine(ctx, t, sb, seen, tt.forged.GetId(), func(l map[string]any) bool { return l["messageId"] == "direct-"+tt.forged.GetId() })
	}

	// A genuine old build, replayed: Cloud Build confirms it, and it is stale.
	sb.CloudBuild.Register(b1)
	seen := len(sb.Function.Logs())
	if _, err := sb.PublishForged(ctx, b1); err != nil {
		t.Fatal(err)
	}
	line := waitLine(ctx, t, sb, seen, b1.GetId(), func(map[string]any) bool { return true })
	if reason, _ := line["reason"].(string); line["outcome"] != "skipped" || !strings.HasPrefix(reason, "stale: build "+b1.GetId()) {
		t.Errorf("replayed build 1: %v, want skipped as stale", line)
	}

	// Its status may still change as pods settle; its spec and record may not.
	if after := getWeb(ctx, t, sb); after.Generation != before.Generation || webContainer(after) != webContainer(before) ||
		after.Annotations[rollout.AnnotationBuildID] != before.Annotations[rollout.AnnotationBuildID] {
		t.Errorf("the deployment changed (generation %d→%d): %s", before.Generation, after.Generation, webContainer(after))
	}

	// The genuine build 3 deploys: Publish registers its true copy again.
	mustDeploy(ctx, t, sb, b3)
	waitLive(ctx, t, sb, pinned(b3))
	for _, tt := range tests {
		if tt.forged.GetId() == b3.GetId() {
			continue // Counted below.
		}
		lines := linesOf(sb, tt.forged.GetId())
		if len(lines) != 2 { // One by Pub/Sub, one pushed directly.
			t.Errorf("%s: %d lines, want 2 (no redelivery): %v", tt.name, len(lines), lines)
		}
	}
	if lines := linesOf(sb, b3.GetId()); len(lines) != 5 {
		t.Errorf("build 3: %d lines, want 5 (two forgeries delivered twice, one deploy): %v", len(lines), lines)
	}
	if n := revisions(ctx, t, sb); n != 3 {
		t.Errorf("%d ReplicaSets, want 3 (initial, build 2, build 3)", n)
	}
}

// TestE2ECloudBuildUnavailableThenCleared publishes builds 1 and 2 while
// the Cloud Build API is unavailable: each is failed with retry, nothing
// changes, and once the API is back build 2, the newest, is deployed
// exactly once, and nothing after it.
func TestE2ECloudBuildUnavailableThenCleared(t *testing.T) {
	sb, ctx := start(t, Options{})
	b1, b2 := load(t, "web-1-success.json"), load(t, "web-2-success.json")
	before := getWeb(ctx, t, sb)
	sb.CloudBuild.Fail(status.Error(codes.Unavailable, "cloud build is down"))
	seen := len(sb.Function.Logs())
	for _, b := range []*cloudbuildpb.Build{b1, b2} {
		if _, err := sb.Publish(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	// Each fails, asking for redelivery, and fails again when redelivered.
	failed := func(l map[string]any) bool { return l["outcome"] == "failed" }
	waitCount(ctx, t, sb, seen, b1.GetId(), 2, failed)
	waitCount(ctx, t, sb, seen, b2.GetId(), 2, failed)
	for _, l := range sb.Function.Logs()[seen:] {
		reason, _ := l["reason"].(string)
		if l["severity"] != "ERROR" || l["outcome"] != "failed" || l["retry"] != true || !strings.Contains(reason, "code = Unavailable desc = cloud build is down") {
			t.Errorf("while cloud build is down: %v, want a failure asking for redelivery", l)
		}
	}
	if after := getWeb(ctx, t, sb); after.Generation != before.Generation || webContainer(after) != webContainer(before) {
		t.Errorf("the deployment changed while no build could be confirmed (generation %d→%d)", before.Generation, after.Generation)
	}

	sb.CloudBuild.Fail(nil)
	cleared := len(sb.Function.Logs())
	waitLine(ctx, t, sb, cleared, b2.GetId(), func(l map[string]any) bool { return l["outcome"] == "deployed" })
	waitLine(ctx, t, sb, cleared, b1.GetId(), func(l map[string]any) bool { return l["outcome"] != "failed" })
	waitLive(ctx, t, sb, pinned(b2))

	lines := sb.Function.Logs()[seen:]
	deployed := deployedInOrder(t, lines, b1, b2)
	if n := strings.Count(fmt.Sprint(deployed), b2.GetId()); n != 1 || deployed[len(deployed)-1] != b2.GetId() {
		t.Errorf("deployed %v, want build 2 exactly once, last", deployed)
	}
	if n := revisions(ctx, t, sb); n != 1+len(deployed) {
		t.Errorf("%d ReplicaSets for %d deploys", n, len(deployed))
	}
}

// waitCount waits until, after the first seen lines, n lines of build id
// satisfy match.
func waitCount(ctx context.Context, t *testing.T, sb *Sandbox, seen int, id string, n int, match func(map[string]any) bool) {
	t.Helper()
	wait, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for {
		lines := sb.Function.Logs()
		count := 0
		for _, l := range lines[seen:] {
			if l["buildId"] == id && match(l) {
				count++
			}
		}
		if count >= n {
			return
		}
		if _, err := sb.Function.WaitLog(wait, len(lines), func(map[string]any) bool { return true }); err != nil {
			t.Fatalf("build %s: %d of %d lines: %v", id, count, n, err)
		}
	}
}
