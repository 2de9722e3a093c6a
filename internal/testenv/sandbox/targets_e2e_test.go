package sandbox

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/cloudbuild/apiv1/v2/cloudbuildpb"
	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The targets end-to-end test's layout (testdata/targets): staging targets
// web and worker in the default namespace, production blue-green in prod.
const (
	targetsDir  = "internal/testenv/sandbox/testdata/targets/"
	prodNS      = "prod"
	workerRBAC  = targetsDir + "worker-rbac.yaml"
	targetsFile = targetsDir + "targets.yaml"
)

// watched are the test's Deployments, as namespace/name.
var watched = []string{"default/web", "default/worker", "prod/web-blue", "prod/web-green"}

// snapshot reads every watched Deployment.
func snapshot(ctx context.Context, t *testing.T, sb *Sandbox) map[string]*appsv1.Deployment {
	t.Helper()
	out := map[string]*appsv1.Deployment{}
	for _, key := range watched {
		ns, name, _ := strings.Cut(key, "/")
		d, err := sb.Admin.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		out[key] = d
	}
	return out
}

// publishAll publishes b and waits for one log line of b per target named,
// after the lines already written; it returns them by target name.
func publishAll(ctx context.Context, t *testing.T, sb *Sandbox, b *cloudbuildpb.Build, names ...string) map[string]map[string]any {
	t.Helper()
	seen := len(sb.Function.Logs())
	if _, err := sb.Publish(ctx, b); err != nil {
		t.Fatal(err)
	}
	return waitLines(ctx, t, sb, seen, b, names...)
}

// waitLines waits, after the first seen lines, for the first line of b
// for each target named.
func waitLines(ctx context.Context, t *testing.T, sb *Sandbox, seen int, b *cloudbuildpb.Build, names ...string) map[string]map[string]any {
	t.Helper()
	wait, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	out := map[string]map[string]any{}
	for _, name := range names {
		line, err := sb.Function.WaitLog(wait, seen, func(l map[string]any) bool {
			return l["buildId"] == b.GetId() && l["targetName"] == name
		})
		if err != nil {
			t.Fatalf("no line for target %s: %v", name, err)
		}
		out[name] = line
	}
	return out
}

// outcomes reduces lines to target → outcome, reason (a prefix is enough
// for a deploy, whose reason names ReplicaSets or colours), and retry.
func outcomes(lines map[string]map[string]any) map[string]string {
	out := map[string]string{}
	for name, l := range lines {
		reason, _ := l["reason"].(string)
		if l["outcome"] == "deployed" {
			reason = ""
		}
		out[name] = fmt.Sprintf("%v %v %s retry=%v", l["target"], l["outcome"], reason, l["retry"])
	}
	return out
}

// TestE2EOneBuildSeveralTargets serves three targets in two namespaces of
// the local cluster from one targets file: web and worker (rolling, in
// default) from main, web in prod (blue-green) from a release tag. Builds
// go through the Pub/Sub emulator. A feature-branch build changes nothing; a
// tagged build changes only prod; a build of main deploys web and fails on
// worker, whose Role is missing, with retry, until the Role is applied:
// then Pub/Sub's redelivery deploys worker only, and web logs that it
// already runs the build.
func TestE2EOneBuildSeveralTargets(t *testing.T) {
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	sb, ctx := start(t, Options{
		Manifests: []string{"k8s/deployment.yaml", "k8s/service.yaml", "k8s/rbac.yaml", targetsDir + "worker.yaml", targetsDir + "prod.yaml"},
		FunctionEnv: map[string]string{"TARGETS": filepath.Join(root, targetsFile),
			"PROJECT": "", "LOCATION": "", "CLUSTER": "", "NAMESPACE": "", "DEPLOYMENT": "", "CONTAINER": "", "IMAGE": ""},
	}, Deployment, "worker")
	for _, name := range []string{"web-blue", "web-green"} {
		if _, err := sb.WaitRolledOutIn(ctx, prodNS, name, nil); err != nil {
			t.Fatal(err)
		}
	}
	template := load(t, "web-1-success.json")
	staging, worker := "web-staging: default/web:web", "worker-staging: default/worker:web"
	prod := "web-prod: prod/web-{blue,green}:web via service/web"
	noTag := `when.tag "v[0-9]+\\.[0-9]+\\.[0-9]+": the build has no TAG_NAME`

	// A feature branch: every target skips it, naming its rule; nothing moves.
	before := snapshot(ctx, t, sb)
	feature := FromRef(FreshBuild(template), "feature/login", "")
	got := outcomes(publishAll(ctx, t, sb, feature, "web-staging", "worker-staging", "web-prod"))
	notMain := `when.branch "main" does not match BRANCH_NAME "feature/login"`
	want := map[string]string{
		"web-staging":    staging + " skipped " + notMain + " retry=<nil>",
		"worker-staging": worker + " skipped " + notMain + " retry=<nil>",
		"web-prod":       prod + " skipped " + noTag + " retry=<nil>",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("feature branch (-want +got):\n%s", diff)
	}
	for key, d := range snapshot(ctx, t, sb) {
		if d.Generation != before[key].Generation || d.ResourceVersion != before[key].ResourceVersion {
			t.Errorf("feature branch changed %s (generation %d→%d, resourceVersion %s→%s)", key,
				before[key].Generation, d.Generation, before[key].ResourceVersion, d.ResourceVersion)
		}
	}

	// A release tag: production only, on its idle colour, then switched.
	tagged := FromRef(FreshBuild(template), "", "v1.4.0")
	got = outcomes(publishAll(ctx, t, sb, tagged, "web-staging", "worker-staging", "web-prod"))
	noBranch := `when.branch "main": the build has no BRANCH_NAME`
	want = map[string]string{
		"web-staging":    staging + " skipped " + noBranch + " retry=<nil>",
		"worker-staging": worker + " skipped " + noBranch + " retry=<nil>",
		"web-prod":       prod + " deployed  retry=<nil>",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("tagged build (-want +got):\n%s", diff)
	}
	waitProd, cancelProd := context.WithTimeout(ctx, 2*time.Minute)
	defer cancelProd()
	if _, err := sb.WaitRolledOutIn(waitProd, prodNS, "web-green", func(d *appsv1.Deployment) bool { return webContainer(d) == pinned(tagged) }); err != nil {
		t.Fatal(err)
	}
	svc, err := sb.Admin.CoreV1().Services(prodNS).Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if svc.Spec.Selector["version"] != "green" {
		t.Errorf("prod's service selects %v after the tagged build, want green", svc.Spec.Selector)
	}
	after := snapshot(ctx, t, sb)
	for _, key := range []string{"default/web", "default/worker", "prod/web-blue"} {
		if after[key].Generation != before[key].Generation {
			t.Errorf("tagged build changed %s (generation %d→%d)", key, before[key].Generation, after[key].Generation)
		}
	}

	// main: web deploys; worker is forbidden (no Role yet) and retried.
	main := FromRef(FreshBuild(template), "main", "")
	seen := len(sb.Function.Logs())
	lines := publishAll(ctx, t, sb, main, "web-staging", "worker-staging", "web-prod")
	got = outcomes(lines)
	forbidden := `deployments.apps "worker" is forbidden: User "` + ServiceAccount + `" cannot get resource "deployments"`
	if g := got["worker-staging"]; !strings.HasPrefix(g, worker+" failed ") || !strings.Contains(g, forbidden) || !strings.HasSuffix(g, "retry=true") {
		t.Errorf("worker without its Role: %s\nwant %s... retry=true", g, forbidden)
	}
	delete(got, "worker-staging")
	want = map[string]string{
		"web-staging": staging + " deployed  retry=<nil>",
		"web-prod":    prod + " skipped " + noTag + " retry=<nil>",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("build of main (-want +got):\n%s", diff)
	}
	web := waitRolledOutOn(ctx, t, sb, Deployment, pinned(main))

	// The operator applies the Role; Pub/Sub's redelivery deploys worker.
	if err = sb.Apply(ctx, workerRBAC); err != nil {
		t.Fatal(err)
	}
	wait, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	done, err := sb.Function.WaitLog(wait, seen, func(l map[string]any) bool {
		return l["buildId"] == main.GetId() && l["targetName"] == "worker-staging" && l["outcome"] == "deployed"
	})
	if err != nil {
		t.Fatalf("worker never deployed after its Role was applied: %v", err)
	}
	if _, err := sb.WaitRolledOut(wait, "worker", func(d *appsv1.Deployment) bool { return webContainer(d) == pinned(main) }); err != nil {
		t.Fatal(err)
	}
	// Every redelivery of main: web skips (already running), prod skips
	// (its rule), worker fails as before until it deploys; each deploys once.
	var redelivered []string
	deliveries := 0
	for _, l := range sb.Function.Logs()[seen:] {
		if l["buildId"] != main.GetId() {
			continue
		}
		reason, _ := l["reason"].(string)
		switch name := l["targetName"]; {
		case l["outcome"] == "deployed":
			redelivered = append(redelivered, fmt.Sprintf("%v deployed", name))
		case name == "web-staging":
			deliveries++
			if reason != "already running "+tagDigest(main) {
				t.Errorf("redelivery %d: web-staging %v %q, want skipped as already running", deliveries, l["outcome"], reason)
			}
		case name == "worker-staging" && l["outcome"] != "failed":
			t.Errorf("worker-staging %v %q, want failed until deployed", l["outcome"], reason)
		case name == "web-prod" && reason != noTag:
			t.Errorf("web-prod %v %q on a redelivery, want skipped by its rule", l["outcome"], reason)
		}
	}
	if diff := cmp.Diff([]string{"web-staging deployed", "worker-staging deployed"}, redelivered); diff != "" {
		t.Errorf("deploys of main across its deliveries (-want +got):\n%s", diff)
	}
	if deliveries < 1 {
		t.Errorf("main was redelivered %d times, want at least once", deliveries)
	}
	if got := getWeb(ctx, t, sb); got.Generation != web.Generation {
		t.Errorf("redeliveries changed web (generation %d→%d)", web.Generation, got.Generation)
	}
	t.Logf("main: worker deployed on redelivery %d: %v", deliveries, done["reason"])

	// Exactly the matching Deployments changed, each pinned to its build.
	final := snapshot(ctx, t, sb)
	images := map[string]string{}
	for key, d := range final {
		images[key] = webContainer(d)
	}
	wantImages := map[string]string{"default/web": pinned(main), "default/worker": pinned(main), "prod/web-blue": initial, "prod/web-green": pinned(tagged)}
	if diff := cmp.Diff(wantImages, images); diff != "" {
		t.Errorf("images (-want +got):\n%s", diff)
	}
}

// tagDigest is the digest b pushed.
func tagDigest(b *cloudbuildpb.Build) string { return b.GetResults().GetImages()[0].GetDigest() }
