package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/onnewimage/onnewimage/internal/cluster"
	"github.com/onnewimage/onnewimage/internal/target"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func valid() map[string]string {
	return map[string]string{
		"PROJECT": "demo", "LOCATION": "us-central1", "CLUSTER": "prod",
		"DEPLOYMENT": "web", "CONTAINER": "web", "IMAGE": "us-docker.pkg.dev/demo/apps/web",
	}
}

func TestLoad(t *testing.T) {
	c, err := Load(env(valid()))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Targets) != 1 {
		t.Fatalf("Load: %d targets, want 1", len(c.Targets))
	}
	tg := c.Targets[0]
	got := []any{tg.Name, tg.Line, tg.Cluster.ResourceName(), tg.Cluster.Key(), tg.Namespace, tg.Image.String(), tg.Image.Bare(), tg.When.String(), c.TargetsFile, c.MaxEventAge, c.DryRun}
	want := []any{"default", 0, "projects/demo/locations/us-central1/clusters/prod", "projects/demo/locations/us-central1/clusters/prod@public", "default", "us-docker.pkg.dev/demo/apps/web", false, "*", "", time.Hour, false}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Load (-want +got):\n%s", diff)
	}
}

func TestLoadOptions(t *testing.T) {
	e := valid()
	delete(e, "LOCATION")
	e["ZONE"] = "us-central1-a" // The seed article's name.
	e["NAMESPACE"] = "prod"
	e["MAX_EVENT_AGE"] = "15m"
	e["DRY_RUN"] = "true"
	e["IMAGE"] = "web"
	e["CONTAINER_EMULATOR_HOST"] = "127.0.0.1:9999"
	c, err := Load(env(e))
	if err != nil {
		t.Fatal(err)
	}
	tg := c.Targets[0]
	got := []any{tg.Cluster.Location, tg.Namespace, c.MaxEventAge, c.DryRun, tg.Image.Bare(), c.ContainerEmulatorHost}
	want := []any{"us-central1-a", "prod", 15 * time.Minute, true, true, "127.0.0.1:9999"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Load (-want +got):\n%s", diff)
	}
}

func TestLoadKubeconfigInsteadOfCluster(t *testing.T) {
	e := valid()
	delete(e, "CLUSTER")
	delete(e, "PROJECT")
	e["KUBECONFIG"] = "/tmp/kubeconfig"
	e["BUILD_PROJECTS"] = "demo" // No PROJECT to default to.
	c, err := Load(env(e))
	if err != nil {
		t.Fatalf("Load with KUBECONFIG and no CLUSTER: %v", err)
	}
	if got := c.Targets[0].Cluster; got.GKE() || got.Kubeconfig != "/tmp/kubeconfig" {
		t.Errorf("cluster = %+v, want the kubeconfig's", got)
	}
}

func TestLoadNamesEveryProblem(t *testing.T) {
	_, err := Load(env(map[string]string{
		"IMAGE": "gcr.io/p/web:latest", "MAX_EVENT_AGE": "soon", "DRY_RUN": "maybe",
		"CONTAINER": "Web_1", "LOCATION": "a", "ZONE": "b",
	}))
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("error = %v, want ErrInvalid", err)
	}
	for _, want := range []string{
		"CLUSTER is required", "DEPLOYMENT is required", `CONTAINER="Web_1"`, "IMAGE:", "without tag or digest",
		`MAX_EVENT_AGE="soon"`, `DRY_RUN="maybe"`, `LOCATION="a" and ZONE="b" disagree`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestLoadRequiresProjectAndLocationWithCluster(t *testing.T) {
	e := valid()
	delete(e, "PROJECT")
	delete(e, "LOCATION")
	_, err := Load(env(e))
	if err == nil || !strings.Contains(err.Error(), "PROJECT is required") || !strings.Contains(err.Error(), "LOCATION is required with CLUSTER") {
		t.Errorf("error = %v", err)
	}
}

func TestLoadStrategy(t *testing.T) {
	tests := []struct {
		name  string
		extra map[string]string
		want  []any // Strategy, Service, Ingress, RolloutTimeout, ScaleDownOld, ScaleDownDelay
	}{
		{"rolling by default", nil,
			[]any{target.Rolling, "", "", target.DefaultRolloutTimeout, false, time.Duration(0)}},
		{"rolling named", map[string]string{"STRATEGY": "rolling"},
			[]any{target.Rolling, "", "", target.DefaultRolloutTimeout, false, time.Duration(0)}},
		{"blue-green behind a service", map[string]string{"STRATEGY": "blue-green", "SERVICE": "web"},
			[]any{target.BlueGreen, "web", "", target.DefaultRolloutTimeout, false, time.Duration(0)}},
		{"blue-green behind a service, scaling down", map[string]string{"STRATEGY": "blue-green", "SERVICE": "web", "SCALE_DOWN_OLD": "true"},
			[]any{target.BlueGreen, "web", "", target.DefaultRolloutTimeout, true, 30 * time.Second}},
		{"blue-green behind an ingress, scaling down", map[string]string{"STRATEGY": "blue-green", "INGRESS": "web", "SCALE_DOWN_OLD": "true"},
			[]any{target.BlueGreen, "", "web", target.DefaultRolloutTimeout, true, 2 * time.Minute}},
		{"blue-green behind an ingress, with options", map[string]string{
			"STRATEGY": "blue-green", "INGRESS": "web.public", "ROLLOUT_TIMEOUT": "90s", "SCALE_DOWN_OLD": "true", "SCALE_DOWN_DELAY": "3m"},
			[]any{target.BlueGreen, "", "web.public", 90 * time.Second, true, 3 * time.Minute}},
		{"scaling down at once", map[string]string{"STRATEGY": "blue-green", "SERVICE": "web", "SCALE_DOWN_OLD": "true", "SCALE_DOWN_DELAY": "0s"},
			[]any{target.BlueGreen, "web", "", target.DefaultRolloutTimeout, true, time.Duration(0)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := valid()
			for k, v := range tt.extra {
				e[k] = v
			}
			c, err := Load(env(e))
			if err != nil {
				t.Fatal(err)
			}
			tg := c.Targets[0]
			got := []any{tg.Strategy, tg.Service, tg.Ingress, tg.RolloutTimeout, tg.ScaleDownOld, tg.ScaleDownDelay}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Load (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLoadStrategyProblems(t *testing.T) {
	tests := []struct {
		name  string
		extra map[string]string
		want  []string
	}{
		{"unknown strategy", map[string]string{"STRATEGY": "trickle"}, []string{`STRATEGY="trickle": is not "rolling", "blue-green" or "canary"`}},
		{"blue-green without a router", map[string]string{"STRATEGY": "blue-green"}, []string{"needs the router: set SERVICE or INGRESS"}},
		{"blue-green with two routers", map[string]string{"STRATEGY": "blue-green", "SERVICE": "web", "INGRESS": "web"},
			[]string{`INGRESS and SERVICE are both set: set only one router`}},
		{"router without blue-green", map[string]string{"SERVICE": "web"}, []string{"SERVICE is used only with the blue-green strategy (STRATEGY is rolling)"}},
		{"every problem at once", map[string]string{
			"STRATEGY": "blue-green", "SERVICE": "Web_1", "ROLLOUT_TIMEOUT": "-1m", "SCALE_DOWN_OLD": "sometimes", "DRY_RUN": "maybe"},
			[]string{`SERVICE="Web_1"`, `ROLLOUT_TIMEOUT="-1m": must be positive`, `SCALE_DOWN_OLD="sometimes": is not a boolean`, `DRY_RUN="maybe"`}},
		{"a scale-down delay without scaling down", map[string]string{"STRATEGY": "blue-green", "SERVICE": "web", "SCALE_DOWN_DELAY": "1m"},
			[]string{"SCALE_DOWN_DELAY is used only with SCALE_DOWN_OLD=true"}},
		{"a negative scale-down delay", map[string]string{"STRATEGY": "blue-green", "SERVICE": "web", "SCALE_DOWN_OLD": "true", "SCALE_DOWN_DELAY": "-1s"},
			[]string{`SCALE_DOWN_DELAY="-1s": must not be negative`}},
		{"a scale-down delay not a duration", map[string]string{"STRATEGY": "blue-green", "SERVICE": "web", "SCALE_DOWN_OLD": "true", "SCALE_DOWN_DELAY": "30"},
			[]string{`SCALE_DOWN_DELAY="30": is not a Go duration`}},
		{"timeout not a duration", map[string]string{"STRATEGY": "blue-green", "INGRESS": "web", "ROLLOUT_TIMEOUT": "5"},
			[]string{`ROLLOUT_TIMEOUT="5": is not a Go duration`}},
		{"colour service name too long", map[string]string{"STRATEGY": "blue-green", "INGRESS": "web", "DEPLOYMENT": strings.Repeat("w", 60)},
			[]string{"the colour service " + strings.Repeat("w", 60) + "-green-svc"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := valid()
			for k, v := range tt.extra {
				e[k] = v
			}
			_, err := Load(env(e))
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error = %v, want ErrInvalid", err)
			}
			for _, want := range tt.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
			}
		})
	}
}

// TestLoadEmulatorHosts checks that an emulator, reached without credentials
// and over plaintext, can only be on this machine.
func TestLoadEmulatorHosts(t *testing.T) {
	tests := []struct {
		value string
		want  string // A problem Load names, or "" when accepted.
	}{
		{"", ""},
		{"127.0.0.1:9999", ""},
		{"[::1]:9999", ""},
		{"localhost:9999", ""},
		{"10.0.0.7:9999", `CONTAINER_EMULATOR_HOST="10.0.0.7:9999": host 10.0.0.7 is not a loopback address`},
		{"container.googleapis.com:443", `CONTAINER_EMULATOR_HOST="container.googleapis.com:443": host container.googleapis.com is not a loopback address`},
		{"127.0.0.1", `CONTAINER_EMULATOR_HOST="127.0.0.1": not host:port`},
		{"garbage", `CONTAINER_EMULATOR_HOST="garbage": not host:port`},
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			e := valid()
			e["CONTAINER_EMULATOR_HOST"] = tt.value
			c, err := Load(env(e))
			if tt.want == "" {
				if err != nil || c.ContainerEmulatorHost != tt.value {
					t.Errorf("Load() = %q, %v; want %q accepted", c.ContainerEmulatorHost, err, tt.value)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Load() error = %v, want ErrInvalid naming %q", err, tt.want)
			}
		})
	}
}

// TestLoadImageCase checks IMAGE's case: the host is normalised, upper case in
// the path (which no registry holds) is refused instead of matching nothing.
func TestLoadImageCase(t *testing.T) {
	tests := []struct {
		value, want string // want: the pattern, or a problem Load names.
	}{
		{"GCR.IO/demo/web", "gcr.io/demo/web"},
		{"gcr.io/PROJECT_ID/quickstart-image", `IMAGE: image "gcr.io/PROJECT_ID/quickstart-image": upper case in the repository path "PROJECT_ID/quickstart-image": registries accept lower case only`},
		{"Web", `IMAGE: image "Web": upper case in the repository path "Web"`},
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			e := valid()
			e["IMAGE"] = tt.value
			c, err := Load(env(e))
			var got string
			if err != nil {
				got = err.Error()
			} else {
				got = c.Targets[0].Image.String()
			}
			if !strings.Contains(got, tt.want) {
				t.Errorf("Load(IMAGE=%q) = %q, want %q", tt.value, got, tt.want)
			}
		})
	}
}

func TestLoadRejectsABudgetOverTheFunctionTimeout(t *testing.T) {
	tests := []struct {
		name    string
		extra   map[string]string
		wantErr bool
	}{
		{"blue-green at the limit", map[string]string{"STRATEGY": "blue-green", "SERVICE": "web", "ROLLOUT_TIMEOUT": "8m"}, false},
		{"blue-green one second over", map[string]string{"STRATEGY": "blue-green", "SERVICE": "web", "ROLLOUT_TIMEOUT": "8m1s"}, true},
		{"blue-green far over", map[string]string{"STRATEGY": "blue-green", "SERVICE": "web", "ROLLOUT_TIMEOUT": "1h"}, true},
		{"rolling ignores ROLLOUT_TIMEOUT", map[string]string{"ROLLOUT_TIMEOUT": "1h"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := valid()
			for k, v := range tt.extra {
				e[k] = v
			}
			_, err := Load(env(e))
			if !tt.wantErr {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error = %v, want ErrInvalid", err)
			}
			for _, want := range []string{`ROLLOUT_TIMEOUT="` + tt.extra["ROLLOUT_TIMEOUT"] + `"`, "540s"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
			}
		})
	}
}

func TestBudget(t *testing.T) {
	tests := []struct {
		name  string
		extra map[string]string
		want  time.Duration
	}{
		{"rolling", map[string]string{"ROLLOUT_TIMEOUT": "3m"}, target.RollingBudget},
		{"blue-green waits ROLLOUT_TIMEOUT more", map[string]string{"STRATEGY": "blue-green", "SERVICE": "web", "ROLLOUT_TIMEOUT": "3m"}, target.RollingBudget + 3*time.Minute},
		{"blue-green by default", map[string]string{"STRATEGY": "blue-green", "SERVICE": "web"}, target.RollingBudget + target.DefaultRolloutTimeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := valid()
			for k, v := range tt.extra {
				e[k] = v
			}
			c, err := Load(env(e))
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Targets[0].Budget(); got != tt.want {
				t.Errorf("Budget() = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestLoadEndpoint(t *testing.T) {
	tests := []struct {
		name    string
		extra   map[string]string
		drop    string
		want    cluster.Endpoint
		problem string // "" for a valid configuration
	}{
		{name: "public by default", want: cluster.Public},
		{name: "public", extra: map[string]string{"ENDPOINT": "public"}, want: cluster.Public},
		{name: "private", extra: map[string]string{"ENDPOINT": "private"}, want: cluster.Private},
		{name: "dns", extra: map[string]string{"ENDPOINT": " dns "}, want: cluster.DNS},
		{name: "unknown", extra: map[string]string{"ENDPOINT": "internal"},
			problem: `ENDPOINT="internal": is not public, private or dns`},
		{name: "upper case", extra: map[string]string{"ENDPOINT": "DNS"},
			problem: `ENDPOINT="DNS": is not public, private or dns`},
		{name: "with a kubeconfig", extra: map[string]string{"ENDPOINT": "private", "KUBECONFIG": "/tmp/kubeconfig"}, drop: "CLUSTER",
			problem: `ENDPOINT="private": is used only with CLUSTER (a kubeconfig names its own server)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := valid()
			for k, v := range tt.extra {
				e[k] = v
			}
			delete(e, tt.drop)
			c, err := Load(env(e))
			if tt.problem == "" {
				if err != nil {
					t.Fatal(err)
				}
				if got := c.Targets[0].Cluster.Endpoint; got != tt.want {
					t.Errorf("Endpoint = %q, want %q", got, tt.want)
				}
				return
			}
			if want := ErrInvalid.Error() + ": " + tt.problem; err == nil || err.Error() != want {
				t.Errorf("error = %v, want %q", err, want)
			}
		})
	}
}

// Commands that deploy no build (rollback) need no IMAGE; the function does.
func TestLoadTargetNeedsNoImage(t *testing.T) {
	e := valid()
	delete(e, "IMAGE")
	if _, err := LoadTarget(env(e)); err != nil {
		t.Errorf("LoadTarget without IMAGE: %v", err)
	}
	if _, err := Load(env(e)); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "IMAGE is required") {
		t.Errorf("Load without IMAGE: %v, want IMAGE is required", err)
	}
	e["IMAGE"] = "web:latest"
	if _, err := LoadTarget(env(e)); !errors.Is(err, ErrInvalid) {
		t.Errorf("LoadTarget with a bad IMAGE: %v, want ErrInvalid", err)
	}
}

// oneTarget is a valid targets file of one target, whose deployment names
// where the file was found.
func oneTarget(deployment string) string {
	return "targets:\n  - name: web\n    image: web\n    cluster: {kubeconfig: /k}\n    deployment: " + deployment + "\n    container: web\n"
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestLoadTargetsFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "targets.yaml")
	write(t, path, "targets:\n"+
		"  - {name: a, image: web, cluster: {kubeconfig: /k}, deployment: a, container: web, when: {branch: main}}\n"+
		"  - {name: b, image: web, cluster: {kubeconfig: /k}, deployment: b, container: web, strategy: blue-green, service: b}\n")
	c, err := Load(env(map[string]string{"TARGETS": path, "DRY_RUN": "true", "MAX_EVENT_AGE": "10m", "BUILD_PROJECTS": "demo"}))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, tg := range c.Targets {
		got = append(got, fmt.Sprintf("%s@%d %s %s %s", tg.Name, tg.Line, tg.When, tg.Where(), tg.Strategy))
	}
	got = append(got, c.TargetsFile, fmt.Sprint(c.DryRun, c.MaxEventAge))
	want := []string{"a@2 branch=main kubeconfig(/k)/default/a:web rolling", "b@3 * kubeconfig(/k)/default/b:web blue-green", path, "true 10m0s"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Load(TARGETS) (-want +got):\n%s", diff)
	}
}

func TestLoadTargetsProblems(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	write(t, good, oneTarget("web"))
	bad := filepath.Join(dir, "bad.yaml")
	write(t, bad, "targets:\n  - name: web\n    image: web:latest\n    cluster: {kubeconfig: /k}\n    deployment: web\n")
	tests := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"file and single-target variables", map[string]string{"TARGETS": good, "IMAGE": "web", "DEPLOYMENT": "web", "ZONE": "b", "SCALE_DOWN_OLD": "true"},
			`TARGETS="` + good + `" and the single-target variables IMAGE, ZONE, DEPLOYMENT, SCALE_DOWN_OLD are both set: set TARGETS or those, not both`},
		{"file with problems, and a bad function-wide setting", map[string]string{"TARGETS": bad, "DRY_RUN": "maybe"},
			bad + `:2: target web: container: is required; ` +
				bad + `:3: target web: image: image "web:latest": give the repository only, without tag or digest (the build decides the digest); ` +
				`DRY_RUN="maybe" is not a boolean (true or false)`},
		{"no file", map[string]string{"TARGETS": filepath.Join(dir, "none.yaml")},
			filepath.Join(dir, "none.yaml") + ": open " + filepath.Join(dir, "none.yaml") + ": no such file or directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(env(tt.env))
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Load error = %v, want ErrInvalid", err)
			}
			if diff := cmp.Diff(ErrInvalid.Error()+": "+tt.want, err.Error()); diff != "" {
				t.Errorf("Load error (-want +got):\n%s", diff)
			}
		})
	}
}

// TestLoadResolvesTargetsInTheSourceDir checks where a relative TARGETS is
// read: in the directory the Go buildpack moves the source to, when the
// working directory holds it (a deployed function), else in the working
// directory (a local run from the repository).
func TestLoadResolvesTargetsInTheSourceDir(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  string // The deployment of the file read.
		file  string // Load's TargetsFile.
	}{
		{"deployed", map[string]string{
			"deploy/targets.yaml":              oneTarget("workdir"),
			SourceDir + "/deploy/targets.yaml": oneTarget("source")}, "source", SourceDir + "/deploy/targets.yaml"},
		{"local", map[string]string{"deploy/targets.yaml": oneTarget("workdir")}, "workdir", "deploy/targets.yaml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, content := range tt.files {
				write(t, filepath.Join(dir, name), content)
			}
			t.Chdir(dir)
			c, err := Load(env(map[string]string{"TARGETS": "deploy/targets.yaml", "BUILD_PROJECTS": "demo"}))
			if err != nil {
				t.Fatal(err)
			}
			got := []string{c.Targets[0].Deployment, c.TargetsFile}
			if diff := cmp.Diff([]string{tt.want, tt.file}, got); diff != "" {
				t.Errorf("Load(TARGETS=deploy/targets.yaml) (-want +got):\n%s", diff)
			}
		})
	}
}

// TestSingleTargetVariables checks that TARGETS conflicts with exactly the
// variables that set a target: those of target's keys, and ZONE.
func TestSingleTargetVariables(t *testing.T) {
	want := []string{"ZONE"}
	for _, k := range []target.Key{
		target.KeyImage, target.KeyProject, target.KeyLocation, target.KeyClusterName, target.KeyEndpoint,
		target.KeyKubeconfig, target.KeyNamespace, target.KeyDeployment, target.KeyContainer, target.KeyStrategy,
		target.KeyService, target.KeyIngress, target.KeyRolloutTimeout, target.KeyScaleDownOld, target.KeyScaleDownDelay,
		target.KeyGates, target.KeyGateTimeout,
		target.KeyCanarySteps, target.KeyCanaryPause, target.KeyHTTPRoute,
	} {
		want = append(want, k.Variable())
	}
	got := slices.Clone(singleTarget)
	slices.Sort(want)
	slices.Sort(got)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("single-target variables (-want +got):\n%s", diff)
	}
}

func TestTarget(t *testing.T) {
	path := filepath.Join(t.TempDir(), "targets.yaml")
	write(t, path, "targets:\n"+
		"  - {name: a, image: web, cluster: {kubeconfig: /k}, deployment: a, container: web}\n"+
		"  - {name: b, image: web, cluster: {kubeconfig: /k}, deployment: b, container: web}\n")
	file, err := Load(env(map[string]string{"TARGETS": path, "BUILD_PROJECTS": "demo"}))
	if err != nil {
		t.Fatal(err)
	}
	variables, err := Load(env(valid()))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		c      Config
		target string
		want   string // The target's deployment, or the error.
	}{
		{"one of several", file, "b", "b"},
		{"the first of several", file, "a", "a"},
		{"several, none named", file, "", path + " has 2 targets: name one of a, b"},
		{"an unknown name", file, "c", `no target "c" in ` + path + ": name one of a, b"},
		{"the one target, unnamed", variables, "", "web"},
		{"the one target, named", variables, "default", "web"},
		{"the variables, another name", variables, "web", `no target "web" in the single-target variables: name one of default`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tg, err := tt.c.Target(tt.target)
			got := tg.Deployment
			if err != nil {
				got = err.Error()
				if !errors.Is(err, ErrNoTarget) {
					t.Errorf("Target(%q) = %v, want ErrNoTarget", tt.target, err)
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Target(%q) (-want +got):\n%s", tt.target, diff)
			}
		})
	}
}

func TestLoadCanary(t *testing.T) {
	tests := []struct {
		name  string
		extra map[string]string
		want  string
	}{
		{"defaults", map[string]string{"STRATEGY": "canary"}, "canary steps=[10 50] pause=1m0s timeout=1m0s"},
		{"every setting", map[string]string{"STRATEGY": "canary", "CANARY_STEPS": "5,20,50", "CANARY_PAUSE": "30s", "ROLLOUT_TIMEOUT": "40s"},
			"canary steps=[5 20 50] pause=30s timeout=40s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := valid()
			for k, v := range tt.extra {
				e[k] = v
			}
			c, err := Load(env(e))
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			tg := c.Targets[0]
			got := fmt.Sprintf("%s steps=%v pause=%s timeout=%s", tg.Strategy, tg.CanarySteps, tg.CanaryPause, tg.RolloutTimeout)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("target (-want +got):\n%s", diff)
			}
		})
	}
	e := valid()
	e["STRATEGY"], e["HTTPROUTE"] = "canary", "web"
	c, err := Load(env(e))
	if err != nil {
		t.Fatalf("Load(HTTPROUTE=web): %v", err)
	}
	if got := c.Targets[0].HTTPRoute; got != "web" {
		t.Errorf("Load(HTTPROUTE=web) HTTPRoute = %q, want %q", got, "web")
	}
}
