package sandbox

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/cloudbuild/apiv1/v2/cloudbuildpb"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/onnewimage/onnewimage/internal/rollout"
)

// needKubectl skips a test that runs the real kubectl where it is not
// installed, with the reason, except under CI, which never skips.
func needKubectl(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("kubectl"); err != nil && os.Getenv("CI") == "" {
		t.Skipf("end-to-end: runs the real kubectl, which is not installed (%v); CI never skips", err)
	}
}

// kubectl runs the installed kubectl as the cluster admin, as an operator
// would, and returns its output.
func kubectl(ctx context.Context, t *testing.T, sb *Sandbox, args ...string) string {
	t.Helper()
	out, err := exec.CommandContext(ctx, "kubectl", append([]string{"--kubeconfig", sb.Cluster.AdminKubeconfig, "-n", Namespace}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// asOperator is the environment of our commands run with the operator's
// identity (the admin kubeconfig) rather than the function's.
func asOperator(sb *Sandbox, env map[string]string) map[string]string {
	out := map[string]string{"CLUSTER": "", "KUBECONFIG": sb.Cluster.AdminKubeconfig}
	for k, v := range env {
		out[k] = v
	}
	return out
}

// deployedLine publishes b and fails the test unless the function deploys it.
func mustDeploy(ctx context.Context, t *testing.T, sb *Sandbox, b *cloudbuildpb.Build) {
	t.Helper()
	if line := publish(ctx, t, sb, b); line["outcome"] != "deployed" {
		t.Fatalf("build %s: %v, want deployed", b.GetId(), line)
	}
}

// A rollback by hand (kubectl rollout undo) or by our command sticks: the
// rolled-back build, delivered again, is skipped; a newer build deploys.
func TestE2ERollingRollbackSticks(t *testing.T) {
	needKubectl(t)
	sb, ctx := start(t, Options{})
	b1, b2, b3 := load(t, "web-1-success.json"), load(t, "web-2-success.json"), load(t, "web-3-success.json")
	mustDeploy(ctx, t, sb, b1)
	waitLive(ctx, t, sb, pinned(b1))
	mustDeploy(ctx, t, sb, b2)
	waitLive(ctx, t, sb, pinned(b2))

	kubectl(ctx, t, sb, "rollout", "undo", "deployment/"+Deployment)
	d := waitLive(ctx, t, sb, pinned(b1))
	if got := d.Annotations[rollout.AnnotationBuildID]; got != b1.GetId() {
		t.Fatalf("after kubectl rollout undo the deployment records %s, want build 1 (undo restores its annotations)", got)
	}
	line := publish(ctx, t, sb, b2)
	if reason, _ := line["reason"].(string); line["outcome"] != "skipped" || !strings.Contains(reason, "rolled back") {
		t.Errorf("build 2 delivered again after kubectl rollout undo: %v, want skipped as rolled back", line)
	}
	if got := webContainer(getWeb(ctx, t, sb)); got != pinned(b1) {
		t.Errorf("after the redelivery the deployment runs %s, want build 1", got)
	}
	mustDeploy(ctx, t, sb, b3)
	waitLive(ctx, t, sb, pinned(b3))

	// Our command does what kubectl rollout undo does, with the operator's
	// identity, and prints one line.
	out, err := sb.Run(ctx, "onnewimage", asOperator(sb, map[string]string{"STRATEGY": "rolling", "IMAGE": ""}), "rollback")
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSpace(string(out)), "\n"); len(lines) != 1 || !strings.HasPrefix(lines[0], "deployed: ") {
		t.Errorf("rollback printed %q, want one line saying it rolled back", out)
	}
	t.Logf("rollback said: %s", out)
	d = waitLive(ctx, t, sb, pinned(b1))
	if got := d.Annotations[rollout.AnnotationBuildID]; got != b1.GetId() {
		t.Errorf("after rollback the deployment records %s, want build 1", got)
	}
	if line := publish(ctx, t, sb, b3); line["outcome"] != "skipped" {
		t.Errorf("build 3 delivered again after rollback: %v, want skipped", line)
	}
	if got := webContainer(getWeb(ctx, t, sb)); got != pinned(b1) {
		t.Errorf("after the redelivery the deployment runs %s, want build 1", got)
	}
	b4 := FreshBuild(b3)
	mustDeploy(ctx, t, sb, b4)
	waitLive(ctx, t, sb, pinned(b4))
}

// A router switched back by hand (kubectl patch service) sticks: the build
// it took out of traffic, delivered again, is skipped and said to be rolled
// back; a newer build deploys.
func TestE2EBlueGreenManualRouterRollbackSticks(t *testing.T) {
	needKubectl(t)
	sb, ctx := blueGreen(t, "service", nil)
	b1, b2, b3 := load(t, "web-1-success.json"), load(t, "web-2-success.json"), load(t, "web-3-success.json")
	mustDeploy(ctx, t, sb, b1) // To green.
	mustDeploy(ctx, t, sb, b2) // To blue.
	kubectl(ctx, t, sb, "patch", "service", "web", "-p", `{"spec":{"selector":{"version":"green"}}}`)

	line := publish(ctx, t, sb, b2)
	if reason, _ := line["reason"].(string); line["outcome"] != "skipped" || !strings.Contains(reason, "rolled back") {
		t.Errorf("build 2 delivered again after the router was switched back by hand: %v, want skipped as rolled back", line)
	}
	if live, _ := router(ctx, t, sb, "service"); live != green {
		t.Errorf("the redelivery moved traffic to %s, want it left on %s", live, green)
	}
	mustDeploy(ctx, t, sb, b3)
	if live, ann := router(ctx, t, sb, "service"); live != blue || ann[rollout.AnnotationBuildID] != b3.GetId() {
		t.Errorf("after build 3: router on %s recording %s, want blue with build 3", live, ann[rollout.AnnotationBuildID])
	}
}

// The idle colour already runs the release's digest under another name (a
// retag, a reproducible rebuild): the release is switched to once, with a
// bounded number of writes.
func TestE2EBlueGreenIdleRunsTheDigestUnderAnotherName(t *testing.T) {
	sb, ctx := blueGreen(t, "service", nil)
	b1 := load(t, "web-1-success.json")
	retagged := Image + ":retagged@" + b1.GetResults().GetImages()[0].GetDigest()
	patch := fmt.Sprintf(`{"spec":{"template":{"spec":{"containers":[{"name":"web","image":%q}]}}}}`, retagged)
	if _, err := sb.Admin.AppsV1().Deployments(Namespace).Patch(ctx, green, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	waitRolledOutOn(ctx, t, sb, green, retagged)
	h := record(ctx, t, sb)
	seen := len(sb.Function.Logs())

	mustDeploy(ctx, t, sb, b1)
	if live, ann := router(ctx, t, sb, "service"); live != green || ann[rollout.AnnotationBuildID] != b1.GetId() {
		t.Errorf("router on %s recording %s, want green with build 1", live, ann[rollout.AnnotationBuildID])
	}
	if got := webContainer(getDeployment(ctx, t, sb, green)); got != retagged {
		t.Errorf("green runs %s, want it left on %s (same digest: no new rollout)", got, retagged)
	}
	h.catchUp(ctx, t, sb)
	if got := h.checkSwitchOrder(t); fmt.Sprint(got) != fmt.Sprint([]string{green}) {
		t.Errorf("traffic went to %v, want [web-green]", got)
	}
	// The writes: the claim and the switch on the router, one patch of green.
	routerWrites, claims := 0, map[string]bool{}
	for _, c := range h.sorted() {
		switch o := c.obj.(type) {
		case *corev1.Service:
			routerWrites++
		case *appsv1.Deployment:
			if v := o.Annotations[rollout.AnnotationClaim]; o.Name == green && v != "" {
				claims[v] = true
			}
		}
	}
	if routerWrites != 2 || len(claims) != 1 {
		t.Errorf("%d router writes and %d claims recorded on green, want 2 (claim, switch) and 1", routerWrites, len(claims))
	}
	var decisions []string
	for _, l := range sb.Function.Logs()[seen:] {
		if l["buildId"] == b1.GetId() {
			decisions = append(decisions, fmt.Sprint(l["outcome"]))
		}
	}
	if fmt.Sprint(decisions) != "[deployed]" {
		t.Errorf("decisions %v, want exactly one: deployed", decisions)
	}
}

// A claim left behind by an invocation that died is expired once older than
// the per-event budget: rollback takes over, saying so. A fresh claim still
// stops it.
func TestE2EBlueGreenRollbackTakesOverAStaleClaim(t *testing.T) {
	sb, ctx := blueGreen(t, "service", nil)
	b1 := load(t, "web-1-success.json")
	mustDeploy(ctx, t, sb, b1) // Green live, blue idle.
	claim := func(at time.Time) {
		t.Helper()
		patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, rollout.AnnotationDeploying,
			"0b1d0000-0000-4000-8000-000000000009 to blue at "+at.UTC().Format(time.RFC3339))
		if _, err := sb.Admin.CoreV1().Services(Namespace).Patch(ctx, "web", types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	env := map[string]string{"STRATEGY": "blue-green", "SERVICE": "web", "ROLLOUT_TIMEOUT": "1m"}

	claim(time.Now())
	out, err := sb.Run(ctx, "onnewimage", env, "rollback")
	if err == nil || !strings.Contains(string(out), "a release may be on its way") {
		t.Errorf("rollback with a fresh claim: %v %s, want it refused", err, out)
	}
	if live, _ := router(ctx, t, sb, "service"); live != green {
		t.Fatalf("router on %s after a refused rollback", live)
	}

	claim(time.Now().Add(-time.Hour))
	out, err = sb.Run(ctx, "onnewimage", env, "rollback")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "expired") {
		t.Errorf("rollback said %q, want it to say it took over an expired claim", out)
	}
	t.Logf("rollback said: %s", out)
	if live, ann := router(ctx, t, sb, "service"); live != blue || ann[rollout.AnnotationDeploying] != "" {
		t.Errorf("after rollback: router on %s with claim %q, want blue and no claim", live, ann[rollout.AnnotationDeploying])
	}
	d := getDeployment(ctx, t, sb, blue)
	if _, done, err := rollout.Status(d); webContainer(d) != initial || !done || err != nil {
		t.Errorf("blue runs %s (rolled out: %v, %v), want the initial release, rolled out", webContainer(d), done, err)
	}
}
