package sandbox

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/onnewimage/onnewimage/internal/result"
	"github.com/onnewimage/onnewimage/internal/testenv/pubsubemu"
)

// resultsTopic is where the results end-to-end test's function publishes.
const resultsTopic = "deploy-results"

// brief is a received result in brief: build, target, outcome, and the
// attributes that repeat them.
func briefResults(rs []Received, builds map[string]string) []string {
	var out []string
	for _, r := range rs {
		name := builds[r.Result.BuildID]
		if name == "" {
			name = r.Result.BuildID
		}
		a := r.Attributes
		out = append(out, fmt.Sprintf("%s %s %s [attributes %s %s %s]", name, r.Result.Target, r.Result.Outcome,
			builds[a["buildId"]], a["target"], a["outcome"]))
	}
	slices.Sort(out)
	return out
}

// TestE2EResults runs the function with RESULT_TOPIC on the local cluster
// and the Pub/Sub emulator, and reads the results from pull subscriptions
// as a team's tooling would: a build of main deploying to two targets
// yields exactly two results; its duplicate delivery yields two skipped and
// no second deployed; a target broken for good yields failed with its
// reason (also through a subscription filtered on the outcome attribute);
// and with the topic missing, then with the results emulator stopped, the
// deploys happen as before, each result a WARNING line with its content.
func TestE2EResults(t *testing.T) {
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"TARGETS": filepath.Join(root, targetsDir, "results.yaml"),
		"PROJECT": "", "LOCATION": "", "CLUSTER": "", "NAMESPACE": "", "DEPLOYMENT": "", "CONTAINER": "", "IMAGE": ""}
	sb, ctx := start(t, Options{
		Manifests:   []string{"k8s/deployment.yaml", "k8s/service.yaml", "k8s/rbac.yaml", targetsDir + "worker.yaml", workerRBAC},
		FunctionEnv: env,
		ResultTopic: resultsTopic,
	}, Deployment, "worker")
	subCtx, stopReceiving := context.WithCancel(ctx)
	defer stopReceiving()
	all, err := sb.Subscribe(subCtx, "everything", resultsTopic)
	if err != nil {
		t.Fatal(err)
	}
	template := load(t, "web-1-success.json")
	main := FromRef(FreshBuild(template), "main", "")
	tagged := FromRef(FreshBuild(template), "", "v1.0.0")
	names := map[string]string{main.GetId(): "main", tagged.GetId(): "tag"}

	// A build of main: web and worker deploy; broken's rule keeps it out.
	lines := outcomes(publishAll(ctx, t, sb, main, "web", "worker"))
	if diff := cmp.Diff(map[string]string{
		"web":    "web: default/web:web deployed  retry=<nil>",
		"worker": "worker: default/worker:web deployed  retry=<nil>",
	}, lines); diff != "" {
		t.Fatalf("build of main (-want +got):\n%s", diff)
	}
	wait, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var deployed []Received
	for _, target := range []string{"web", "worker"} {
		r, err := all.Wait(wait, func(r Received) bool { return r.Result.BuildID == main.GetId() && r.Result.Target == target })
		if err != nil {
			t.Fatalf("no result of main for %s: %v", target, err)
		}
		deployed = append(deployed, r)
	}
	for _, r := range deployed {
		want := result.Message{BuildID: main.GetId(), Target: r.Result.Target, Where: "demo-project/us-central1/sandbox/default/" + r.Result.Target + ":web",
			Image: pinned(main), PreviousImage: initial, Strategy: "rolling", Outcome: "deployed", Reason: r.Result.Reason,
			Commit: main.GetSubstitutions()["COMMIT_SHA"], Branch: "main", Time: r.Result.Time}
		if diff := cmp.Diff(want, r.Result); diff != "" {
			t.Errorf("result for %s (-want +got):\n%s", r.Result.Target, diff)
		}
		if r.Attributes["outcome"] != "deployed" || r.Attributes["target"] != r.Result.Target || r.Attributes["buildId"] != main.GetId() {
			t.Errorf("result for %s: attributes %v", r.Result.Target, r.Attributes)
		}
		if !strings.Contains(r.Result.Reason, " rolls from "+initial+" to "+pinned(main)) || time.Since(r.Result.Time) > 5*time.Minute {
			t.Errorf("result for %s: reason %q at %s", r.Result.Target, r.Result.Reason, r.Result.Time)
		}
	}
	for _, name := range []string{Deployment, "worker"} {
		waitRolledOutOn(ctx, t, sb, name, pinned(main))
	}

	// The same build delivered again: skipped on both, as already running.
	lines = outcomes(publishAll(ctx, t, sb, main, "web", "worker"))
	already := "already running " + tagDigest(main) + " retry=<nil>"
	if diff := cmp.Diff(map[string]string{
		"web":    "web: default/web:web skipped " + already,
		"worker": "worker: default/worker:web skipped " + already,
	}, lines); diff != "" {
		t.Fatalf("duplicate of main (-want +got):\n%s", diff)
	}

	for _, target := range []string{"web", "worker"} {
		if _, err := all.Wait(wait, func(r Received) bool {
			return r.Result.BuildID == main.GetId() && r.Result.Target == target && r.Result.Outcome == "skipped"
		}); err != nil {
			t.Fatalf("no skipped result of main's duplicate for %s: %v", target, err)
		}
	}

	// A release tag: broken fails for good; the others' rules keep it out.
	lines = outcomes(publishAll(ctx, t, sb, tagged, "broken"))
	if got := lines["broken"]; !strings.HasPrefix(got, "broken: default/worker:sidecar failed ") || !strings.Contains(got, `has no container "sidecar"`) {
		t.Fatalf("tagged build on broken: %s", got)
	}
	failed, err := all.Wait(wait, func(r Received) bool { return r.Attributes["outcome"] == "failed" })
	if err != nil {
		t.Fatalf("no failed result: %v", err)
	}
	if failed.Result.BuildID != tagged.GetId() || failed.Result.Target != "broken" || failed.Result.Retry ||
		!strings.Contains(failed.Result.Reason, `deployment default/worker has no container "sidecar"`) || failed.Result.Tag != "v1.0.0" {
		t.Errorf("failure received: %+v", failed.Result)
	}

	// Exactly these results, each once: a marker published after them
	// (the function publishes each result before it writes its line)
	// arrives after them, the subscription recording them in order.
	marker := result.Message{BuildID: "marker", Target: "none", Outcome: "marker"}
	if _, err := sb.PubSub.Publish(ctx, resultsTopic, marker.Data(), marker.Attributes()); err != nil {
		t.Fatal(err)
	}
	if _, err := all.Wait(wait, func(r Received) bool { return r.Result.BuildID == "marker" }); err != nil {
		t.Fatal(err)
	}
	names["marker"] = "marker"
	if diff := cmp.Diff([]string{
		"main web deployed [attributes main web deployed]",
		"main web skipped [attributes main web skipped]",
		"main worker deployed [attributes main worker deployed]",
		"main worker skipped [attributes main worker skipped]",
		"marker none marker [attributes marker none marker]",
		"tag broken failed [attributes tag broken failed]",
	}, briefResults(all.All(), names)); diff != "" {
		t.Errorf("every result received (-want +got):\n%s", diff)
	}

	// The topic missing, then the results emulator stopped: every deploy
	// happens as without results; each result is a WARNING with its content.
	results, err := pubsubemu.Start(ctx, pubsubemu.Options{Project: Project, Log: testWriter{t}})
	if err != nil {
		t.Fatal(err)
	}
	if err := results.CreateTopic(ctx, resultsTopic); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		env  map[string]string
		stop bool
	}{
		{"topic missing", resultEnv(env, sb.PubSub, "no-such-topic"), false},
		{"emulator stopped", resultEnv(env, results, resultsTopic), true},
	} {
		if err := sb.StartFunction(ctx, tt.env); err != nil {
			t.Fatal(err)
		}
		if tt.stop {
			if err := results.Stop(); err != nil {
				t.Fatal(err)
			}
		}
		b := FromRef(FreshBuild(template), "main", "")
		seen := len(sb.Function.Logs())
		lines := outcomes(publishAll(ctx, t, sb, b, "web", "worker"))
		if diff := cmp.Diff(map[string]string{
			"web":    "web: default/web:web deployed  retry=<nil>",
			"worker": "worker: default/worker:web deployed  retry=<nil>",
		}, lines); diff != "" {
			t.Errorf("%s: outcomes (-want +got):\n%s", tt.name, diff)
		}
		phase, cancelPhase := context.WithTimeout(ctx, 2*time.Minute)
		defer cancelPhase()
		for _, name := range []string{"web", "worker"} {
			warning, err := sb.Function.WaitLog(phase, seen, func(l map[string]any) bool {
				return l["severity"] == "WARNING" && l["buildId"] == b.GetId() && l["targetName"] == name
			})
			if err != nil {
				t.Fatalf("%s: no WARNING for %s: %v", tt.name, name, err)
			}
			res, _ := warning["result"].(map[string]any)
			if res["outcome"] != "deployed" || res["image"] != pinned(b) || res["commit"] != b.GetSubstitutions()["COMMIT_SHA"] {
				t.Errorf("%s: WARNING for %s carries %v, want the deployed result", tt.name, name, res)
			}
			t.Logf("%s: %s", tt.name, warning["message"])
		}
		for _, name := range []string{Deployment, "worker"} {
			waitRolledOutOn(ctx, t, sb, name, pinned(b))
		}
		// No line says anything but deployed or its WARNING: no retry.
		for _, l := range sb.Function.Logs()[seen:] {
			if name := l["targetName"]; l["buildId"] == b.GetId() && (name == "web" || name == "worker") && l["outcome"] != "deployed" {
				t.Errorf("%s: line %v", tt.name, l)
			}
		}
	}
}

// TestE2EResultsBlueGreenDuplicate delivers one build twice to a
// blue-green target: one deployed result once traffic has switched, then
// the redelivery's skipped (already live), never a second deployed.
func TestE2EResultsBlueGreenDuplicate(t *testing.T) {
	sb, ctx := start(t, Options{
		Manifests:   []string{"k8s/blue-green/deployments.yaml", "k8s/blue-green/service.yaml", "k8s/blue-green/rbac.yaml"},
		FunctionEnv: map[string]string{"STRATEGY": "blue-green", "SERVICE": "web", "ROLLOUT_TIMEOUT": "60s"},
		ResultTopic: resultsTopic,
	}, blue, green)
	all, err := sb.Subscribe(ctx, "everything", resultsTopic)
	if err != nil {
		t.Fatal(err)
	}
	b := FreshBuild(load(t, "web-1-success.json"))
	for i, want := range []string{"deployed", "skipped"} {
		if line := publish(ctx, t, sb, b); line["outcome"] != want {
			t.Fatalf("delivery %d: %v %v, want %s", i+1, line["outcome"], line["reason"], want)
		}
	}
	wait, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if _, err := all.Wait(wait, func(r Received) bool { return r.Result.BuildID == b.GetId() && r.Result.Outcome == "skipped" }); err != nil {
		t.Fatalf("no skipped result of the redelivery: %v", err)
	}
	marker := result.Message{BuildID: "marker", Target: "none", Outcome: "marker"}
	if _, err := sb.PubSub.Publish(ctx, resultsTopic, marker.Data(), marker.Attributes()); err != nil {
		t.Fatal(err)
	}
	if _, err := all.Wait(wait, func(r Received) bool { return r.Result.BuildID == "marker" }); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range all.All() {
		if r.Result.BuildID == b.GetId() {
			reason, _, _ := strings.Cut(r.Result.Reason, ":")
			got = append(got, fmt.Sprintf("%s %s %s %s (%s)", r.Attributes["target"], r.Attributes["outcome"], r.Result.Strategy, r.Result.Image, reason))
		}
	}
	want := []string{
		"default deployed blue-green " + pinned(b) + " (switched service web from blue to green after deployment \"web-green\" successfully rolled out)",
		"default skipped blue-green " + pinned(b) + " (already live)",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("results of one build delivered twice (-want +got):\n%s", diff)
	}
}
