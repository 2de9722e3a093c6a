package sandbox

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/cloudbuild/apiv1/v2/cloudbuildpb"
	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
)

// TestE2EStatusAfterTheDemo replays the sandbox's -targets demonstration
// (staging from main, production blue-green from a release tag, a feature
// branch reaching neither), then runs `onnewimage status` with the
// function's own identity and configuration: its JSON output is checked
// field by field, and its text names each target's live build and commit.
func TestE2EStatusAfterTheDemo(t *testing.T) {
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"TARGETS": filepath.Join(root, targetsDir, "staging-production.yaml"),
		"PROJECT": "", "LOCATION": "", "CLUSTER": "", "NAMESPACE": "", "DEPLOYMENT": "", "CONTAINER": "", "IMAGE": ""}
	sb, ctx := start(t, Options{
		Manifests:   []string{"k8s/deployment.yaml", "k8s/service.yaml", "k8s/rbac.yaml", targetsDir + "prod.yaml"},
		FunctionEnv: env,
	})
	for _, name := range []string{"web-blue", "web-green"} {
		if _, err := sb.WaitRolledOutIn(ctx, prodNS, name, nil); err != nil {
			t.Fatal(err)
		}
	}
	template := load(t, "web-1-success.json")
	feature := FromRef(FreshBuild(template), "feature/login", "")
	main := FromRef(FreshBuild(template), "main", "")
	tagged := FromRef(FreshBuild(template), "", "v1.0.0")
	begin := time.Now().Truncate(time.Second) // managedFields times are in seconds.
	for _, b := range []*cloudbuildpb.Build{feature, main, tagged} {
		publishAll(ctx, t, sb, b, "staging", "production")
	}
	web := waitRolledOutOn(ctx, t, sb, Deployment, pinned(main))
	wait, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if _, err := sb.WaitRolledOutIn(wait, prodNS, "web-green", func(d *appsv1.Deployment) bool { return webContainer(d) == pinned(tagged) }); err != nil {
		t.Fatal(err)
	}
	end := time.Now()

	out, err := sb.Run(ctx, "onnewimage", env, "status", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var got struct{ Targets []map[string]any }
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("status -o json printed no JSON: %v\n%s", err, out)
	}
	if len(got.Targets) != 2 {
		t.Fatalf("status -o json: %d targets, want 2\n%s", len(got.Targets), out)
	}
	// deployedAt is the apiserver's clock: checked apart, within the run.
	for _, tg := range got.Targets {
		live, _ := tg["live"].(map[string]any)
		raw, _ := live["deployedAt"].(string)
		at, err := time.Parse(time.RFC3339, raw)
		if err != nil || at.Before(begin) || at.After(end) {
			t.Errorf("%v: live.deployedAt %q, want a time between %s and %s", tg["name"], raw, begin.Format(time.RFC3339), end.Format(time.RFC3339))
		}
		delete(live, "deployedAt")
	}
	created := func(b *cloudbuildpb.Build) string { return b.GetCreateTime().AsTime().UTC().Format(time.RFC3339Nano) }
	build := func(b *cloudbuildpb.Build) map[string]any {
		return map[string]any{"id": b.GetId(), "createTime": created(b), "commit": b.GetSubstitutions()["COMMIT_SHA"]}
	}
	rolledOut := func(name string) string { return `deployment "` + name + `" successfully rolled out` }
	want := []map[string]any{
		{"name": "staging", "strategy": "rolling", "where": "demo-project/us-central1/sandbox/default/web:web",
			"live": map[string]any{"deployment": "web", "image": pinned(main), "build": build(main),
				"replicas": float64(*web.Spec.Replicas), "status": rolledOut("web")},
			"records": map[string]any{"newestBuild": map[string]any{"id": main.GetId(), "createTime": created(main)}},
		},
		{"name": "production", "strategy": "blue-green", "router": "service/web", "where": "demo-project/us-central1/sandbox/prod/web:web",
			"live": map[string]any{"deployment": "web-green", "colour": "green", "image": pinned(tagged), "build": build(tagged),
				"replicas": 2.0, "status": rolledOut("web-green")},
			"idle": map[string]any{"deployment": "web-blue", "colour": "blue", "image": initial,
				"replicas": 2.0, "status": rolledOut("web-blue")},
			"records": map[string]any{},
		},
	}
	if diff := cmp.Diff(want, got.Targets); diff != "" {
		t.Errorf("status -o json (-want +got):\n%s", diff)
	}

	text, err := sb.Run(ctx, "onnewimage", env, "status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		"staging  rolling  demo-project/us-central1/sandbox/default/web:web",
		"  build        " + main.GetId() + " (commit " + main.GetSubstitutions()["COMMIT_SHA"] + ", created ",
		"production  blue-green service/web  demo-project/us-central1/sandbox/prod/web:web",
		"  live         green: web-green runs " + pinned(tagged),
		"  build        " + tagged.GetId() + " (commit " + tagged.GetSubstitutions()["COMMIT_SHA"] + ", created ",
	} {
		if !strings.Contains(string(text), line) {
			t.Errorf("status does not say %q:\n%s", line, text)
		}
	}
	t.Logf("onnewimage status:\n%s", text)
}
