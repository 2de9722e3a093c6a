package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

// goodTable is what check prints for testdata/good.yaml, the issue's
// example.
const goodTable = `NAME          IMAGE                            WHEN                           WHERE                                                  STRATEGY
web-staging   us-docker.pkg.dev/acme/apps/web  branch=^main$                  acme/us-central1/staging/web/web:web                   rolling
web-prod      us-docker.pkg.dev/acme/apps/web  tag=^v[0-9]+\.[0-9]+\.[0-9]+$  acme/us-central1/prod/default/web:web                  blue-green service/web
worker-local  worker                           *                              kubeconfig(/path/to/kubeconfig)/default/worker:worker  rolling
`

func TestCheck(t *testing.T) {
	variables := map[string]string{
		"PROJECT": "acme", "LOCATION": "us-central1", "CLUSTER": "prod", "NAMESPACE": "shop",
		"DEPLOYMENT": "web", "CONTAINER": "web", "IMAGE": "us-docker.pkg.dev/acme/apps/web",
		"STRATEGY": "blue-green", "INGRESS": "web",
	}
	tests := []struct {
		name           string
		args           []string
		env            map[string]string
		code           int
		stdout, stderr string
	}{
		{"a good file", []string{"check", "testdata/good.yaml"}, nil, 0, goodTable, ""},
		{"a good file, the variables aside", []string{"check", "testdata/good.yaml"}, map[string]string{"IMAGE": "Web:latest"}, 0, goodTable, ""},
		{"a bad file", []string{"check", "testdata/bad.yaml"}, nil, 1, "", `testdata/bad.yaml:4: target web-staging: image: image "us-docker.pkg.dev/acme/apps/web:latest": give the repository only, without tag or digest (the build decides the digest)
testdata/bad.yaml:5: target web-staging: when.ref: unknown rule "ref" (want branch, tag, trigger or repo)
testdata/bad.yaml:9: target web-staging: replicas: unknown key (want name, image, when, cluster, namespace, deployment, container, strategy, service, ingress, rolloutTimeout, scaleDownOld, scaleDownDelay, gates, gateTimeout, canarySteps, canaryPause, httpRoute)
testdata/bad.yaml:10: target web-staging: name: "web-staging" is also the name of the target at line 3
testdata/bad.yaml:12: target web-staging: when.tag: "v[0-9" is not an RE2 regular expression: missing closing ]: ` + "`[0-9`" + `
testdata/bad.yaml:13: target web-staging: cluster.location: is required with cluster.name
testdata/bad.yaml:17: target web-staging: service: is used only with the blue-green strategy (strategy is rolling)
onnewimage check: 7 problems
`},
		{"a missing file", []string{"check", "testdata/none.yaml"}, nil, 1, "",
			"testdata/none.yaml: open testdata/none.yaml: no such file or directory\nonnewimage check: 1 problem\n"},
		{"the variables", []string{"check"}, variables, 0,
			"NAME     IMAGE                            WHEN  WHERE                               STRATEGY\n" +
				"default  us-docker.pkg.dev/acme/apps/web  *     acme/us-central1/prod/shop/web:web  blue-green ingress/web\n", ""},
		{"the variables with gates", []string{"check"}, map[string]string{"PROJECT": "acme", "LOCATION": "us-central1", "CLUSTER": "prod",
			"DEPLOYMENT": "web", "CONTAINER": "web", "IMAGE": "web", "GATES": "web-migrate,web-smoke", "GATE_TIMEOUT": "90s"}, 0,
			"NAME     IMAGE  WHEN  WHERE                                  STRATEGY\n" +
				"default  web    *     acme/us-central1/prod/default/web:web  rolling gates web-migrate,web-smoke (1m30s each)\n", ""},
		{"the variables of a canary with an httproute", []string{"check"}, map[string]string{"PROJECT": "acme", "LOCATION": "us-central1", "CLUSTER": "prod",
			"DEPLOYMENT": "web", "CONTAINER": "web", "IMAGE": "web", "STRATEGY": "canary", "HTTPROUTE": "web", "CANARY_STEPS": "5,25"}, 0,
			"NAME     IMAGE  WHEN  WHERE                                  STRATEGY\n" +
				"default  web    *     acme/us-central1/prod/default/web:web  canary httproute/web steps 5,25 (1m0s each)\n", ""},
		{"the variables of a canary by replica ratio", []string{"check"}, map[string]string{"PROJECT": "acme", "LOCATION": "us-central1", "CLUSTER": "prod",
			"DEPLOYMENT": "web", "CONTAINER": "web", "IMAGE": "web", "STRATEGY": "canary"}, 0,
			"NAME     IMAGE  WHEN  WHERE                                  STRATEGY\n" +
				"default  web    *     acme/us-central1/prod/default/web:web  canary replica ratio steps 10,50 (1m0s each)\n", ""},
		{"bad variables", []string{"check"}, map[string]string{"IMAGE": "web", "DEPLOYMENT": "web", "CONTAINER": "Web", "DRY_RUN": "maybe"}, 1, "",
			"CLUSTER is required (or KUBECONFIG, to target a local cluster)\n" +
				`CONTAINER="Web": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')` + "\n" +
				`DRY_RUN="maybe" is not a boolean (true or false)` + "\n" +
				"onnewimage check: 3 problems\n"},
		{"the file TARGETS names", []string{"check"}, map[string]string{"TARGETS": "testdata/good.yaml"}, 0, goodTable, ""},
		{"TARGETS and variables", []string{"check"}, map[string]string{"TARGETS": "testdata/good.yaml", "IMAGE": "web", "CLUSTER": "prod"}, 1, "",
			`TARGETS="testdata/good.yaml" and the single-target variables IMAGE, CLUSTER are both set: set TARGETS or those, not both` + "\n" +
				"onnewimage check: 1 problem\n"},
		{"the committed env.yaml, as deployed", []string{"check", "-env-file=../../env.yaml"}, map[string]string{"TARGETS": "testdata/bad.yaml"}, 0,
			"NAME     IMAGE                                    WHEN  WHERE                                          STRATEGY\n" +
				"default  us-docker.pkg.dev/demo-project/apps/web  *     demo-project/us-central1/prod/default/web:web  rolling\n", ""},
		{"an env file naming a targets file", []string{"check", "-env-file=testdata/env-targets.yaml"}, variables, 0, goodTable, ""},
		{"an env file that is not one", []string{"check", "-env-file=testdata/good.yaml"}, nil, 1, "",
			"testdata/good.yaml: not a map of variables to strings: unmarshal errors:\n  line 3: cannot unmarshal !!seq into string\nonnewimage check: 1 problem\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(tt.args, &stdout, &stderr, env(tt.env))
			if diff := cmp.Diff([]any{tt.code, tt.stdout, tt.stderr}, []any{code, stdout.String(), stderr.String()}); diff != "" {
				t.Errorf("onnewimage %s: exit code, stdout, stderr (-want +got):\n%s", strings.Join(tt.args, " "), diff)
			}
		})
	}
}

func TestUsage(t *testing.T) {
	tests := []struct {
		args   []string
		code   int
		stdout string // A line the output holds.
		stderr string
	}{
		{[]string{"-h"}, 0, "  check      Validate a targets file, or the variables, without touching any cluster", ""},
		{[]string{"help"}, 0, "Configuration commands:", ""},
		{nil, 2, "", "Run 'onnewimage COMMAND -h' for a command's flags."},
		{[]string{"chek"}, 2, "", `onnewimage: unknown command "chek"`},
		{[]string{"check", "-h"}, 0, "Usage: onnewimage check [-env-file FILE] [TARGETS_FILE]", ""},
		{[]string{"check", "-x"}, 2, "", "flag provided but not defined: -x"},
		{[]string{"check", "a.yaml", "b.yaml"}, 2, "", "onnewimage check: give one targets file, or -env-file, or neither"},
		{[]string{"-h"}, 0, "  rollback   Take a target back to the release before the live one", ""},
		{[]string{"-h"}, 0, "Release commands:", ""},
		{[]string{"rollback", "-h"}, 0, "Usage: onnewimage rollback [-env-file FILE] [-timeout D] [-dry-run] [TARGET]", ""},
		{[]string{"rollback", "--help"}, 0, "Exit 0 once done, 1 if the configuration is invalid or the rollback failed,", ""},
		{[]string{"rollback", "-timeout=soon"}, 2, "", `invalid value "soon" for flag -timeout`},
		{[]string{"rollback", "web-staging", "web-prod"}, 2, "", "onnewimage rollback: give at most one target"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(tt.args, &stdout, &stderr, env(nil))
			if code != tt.code {
				t.Errorf("exit code %d, want %d", code, tt.code)
			}
			for _, c := range []struct{ name, want, got string }{{"stdout", tt.stdout, stdout.String()}, {"stderr", tt.stderr, stderr.String()}} {
				if c.want == "" && c.got != "" {
					t.Errorf("%s = %q, want nothing", c.name, c.got)
				}
				if !strings.Contains(c.got, c.want) {
					t.Errorf("%s = %q, want a line %q", c.name, c.got, c.want)
				}
			}
		})
	}
}

// TestREADMEExample checks the README's targets file: it is the issue's
// example (testdata/good.yaml, but for its first line), and check accepts it.
func TestREADMEExample(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```yaml\n(targets:\n.*?)```").FindSubmatch(raw)
	if m == nil {
		t.Fatal("README.md has no ```yaml block starting with targets:")
	}
	good, err := os.ReadFile("testdata/good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	_, body, _ := strings.Cut(string(good), "\n")
	if diff := cmp.Diff(body, string(m[1])); diff != "" {
		t.Errorf("README's targets file differs from testdata/good.yaml (-good +README):\n%s", diff)
	}
	path := filepath.Join(t.TempDir(), "targets.yaml")
	if err := os.WriteFile(path, m[1], 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"check", path}, &stdout, &stderr, env(nil)); code != 0 || stdout.String() != goodTable {
		t.Errorf("check README's example: exit %d\n%s%s", code, stdout.String(), stderr.String())
	}
}
