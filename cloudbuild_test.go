package onnewimage

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"cloud.google.com/go/cloudbuild/apiv1/v2/cloudbuildpb"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	"github.com/onnewimage/onnewimage/internal/config"
	tgt "github.com/onnewimage/onnewimage/internal/target"
)

// readCloudBuild decodes cloudbuild.yaml strictly as a Build message: an
// unknown field anywhere fails.
func readCloudBuild(t *testing.T) (*cloudbuildpb.Build, []byte) {
	t.Helper()
	raw, err := os.ReadFile("cloudbuild.yaml")
	if err != nil {
		t.Fatal(err)
	}
	js, err := yaml.YAMLToJSON(raw)
	if err != nil {
		t.Fatalf("cloudbuild.yaml is not YAML: %v", err)
	}
	var b cloudbuildpb.Build
	if err := protojson.Unmarshal(js, &b); err != nil {
		t.Fatalf("cloudbuild.yaml is not a Build: %v", err)
	}
	return &b, raw
}

// deployStep returns the args of cloudbuild.yaml's deploy step.
func deployStep(t *testing.T, b *cloudbuildpb.Build) []string {
	t.Helper()
	for _, s := range b.GetSteps() {
		if s.GetId() == "deploy" {
			return s.GetArgs()
		}
	}
	t.Fatal("cloudbuild.yaml has no deploy step")
	return nil
}

// resolvedDeploy returns the deploy step's args with every substitution at
// its default.
func resolvedDeploy(t *testing.T, b *cloudbuildpb.Build) []string {
	t.Helper()
	var resolved []string
	for _, a := range deployStep(t, b) {
		for name, value := range b.GetSubstitutions() {
			a = strings.ReplaceAll(a, "${"+name+"}", value)
		}
		resolved = append(resolved, a)
	}
	return resolved
}

// TestCloudBuildConfig checks that cloudbuild.yaml has the Build message's
// schema (no unknown field anywhere), that it checks the configuration it
// deploys (onnewimage check), tests, and builds the upload
// (TestUploadBuildsAndServes) before it deploys, and
// that its substitutions are exactly those it uses, each with a default.
// TestREADMEDeployIsTheCloudBuildDeploy checks the deploy step itself.
func TestCloudBuildConfig(t *testing.T) {
	b, raw := readCloudBuild(t)

	var ids []string
	for _, s := range b.GetSteps() {
		ids = append(ids, s.GetId())
		if s.GetId() == "check" {
			// The configuration deployed, checked before anything else.
			if diff := cmp.Diff([]string{"run", "./cmd/onnewimage", "check", "-env-file=${_ENV_FILE}"}, s.GetArgs()); diff != "" {
				t.Errorf("check step args (-want +got):\n%s", diff)
			}
		}
		if s.GetId() == "upload" {
			// -short skips it.
			if diff := cmp.Diff([]string{"test", "-count=1", "-run=^TestUploadBuildsAndServes$", "."}, s.GetArgs()); diff != "" {
				t.Errorf("upload step args (-want +got):\n%s", diff)
			}
		}
	}
	if diff := cmp.Diff([]string{"check", "vet", "test", "upload", "deploy"}, ids); diff != "" {
		t.Errorf("steps, in order (-want +got):\n%s", diff)
	}
	used := map[string]bool{}
	for _, m := range regexp.MustCompile(`\$\{(_[A-Z_]+)\}`).FindAllStringSubmatch(string(raw), -1) {
		used[m[1]] = true
		if _, ok := b.GetSubstitutions()[m[1]]; !ok {
			t.Errorf("substitution %s is used but has no default", m[1])
		}
	}
	for name := range b.GetSubstitutions() {
		if !used[name] {
			t.Errorf("substitution %s has a default but is not used (MUST_MATCH fails such a build)", name)
		}
	}
	if b.GetOptions().GetSubstitutionOption() != cloudbuildpb.BuildOptions_MUST_MATCH {
		t.Errorf("substitutionOption = %v, want MUST_MATCH so a typo fails the build", b.GetOptions().GetSubstitutionOption())
	}
}

// settingNames returns every variable config.Load reads, recorded through
// its getenv under a few configurations.
func settingNames(t *testing.T, envs ...map[string]string) []string {
	t.Helper()
	seen := map[string]bool{}
	for _, e := range append(envs, nil) {
		config.Load(func(name string) string {
			seen[name] = true
			return e[name]
		})
	}
	var names []string
	for name := range seen {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// readEnvFile decodes a gcloud --env-vars-file strictly: a YAML map whose
// values are all strings (gcloud refuses any other value).
func readEnvFile(t *testing.T, path string) (values map[string]string, commented map[string]bool) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Converted without a target type, a YAML boolean or number stays one
	// and fails to decode as a string, as gcloud refuses it.
	js, err := yaml.YAMLToJSONStrict(raw)
	if err != nil {
		t.Fatalf("%s is not YAML: %v", path, err)
	}
	if err := json.Unmarshal(js, &values); err != nil {
		t.Fatalf("%s is not a YAML map of string values: %v", path, err)
	}
	commented = map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^#\s*([A-Z][A-Z0-9_]*):`).FindAllStringSubmatch(string(raw), -1) {
		commented[m[1]] = true
	}
	return values, commented
}

// configurationTable returns the variables the README's configuration table
// documents: those named in a row's first column.
func configurationTable(t *testing.T) map[string]bool {
	t.Helper()
	raw, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(raw), "\n## Configuration\n")
	if !ok {
		t.Fatal("README.md has no Configuration section")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	names := map[string]bool{}
	for _, line := range strings.Split(section, "\n") {
		cells := strings.Split(line, "|")
		if !strings.HasPrefix(line, "| `") || len(cells) < 3 {
			continue
		}
		for _, m := range regexp.MustCompile("`([A-Z][A-Z0-9_]*)`").FindAllStringSubmatch(cells[1], -1) {
			names[m[1]] = true
		}
	}
	return names
}

// reservedKeys are the environment variables Cloud Run functions sets itself
// and refuses in a function's configuration.
var reservedKeys = []string{"FUNCTION_TARGET", "FUNCTION_SIGNATURE_TYPE", "K_SERVICE", "K_REVISION", "K_CONFIGURATION", "PORT"}

// acceptedKey tells why gcloud or Cloud Run functions would refuse name as
// an environment variable, or "" when it is accepted.
func acceptedKey(name string) string {
	switch {
	case name == "":
		return "empty"
	case strings.Contains(name, "="):
		return "contains ="
	case strings.HasPrefix(name, "X_GOOGLE_"):
		return "X_GOOGLE_ is reserved"
	case slices.Contains(reservedKeys, name):
		return "reserved by Cloud Run functions"
	}
	return ""
}

// TestDeployCarriesEverySetting checks that a redeploy carries the whole
// configuration: cloudbuild.yaml deploys with an env file (which replaces
// every variable with the file's), never with a partial list of variables,
// and that file can hold every setting the function reads.
func TestDeployCarriesEverySetting(t *testing.T) {
	b, _ := readCloudBuild(t)
	deploy := deployStep(t, b)
	for _, arg := range deploy {
		for _, partial := range []string{"--set-env-vars", "--update-env-vars", "--remove-env-vars", "--clear-env-vars"} {
			if strings.HasPrefix(arg, partial) {
				t.Errorf("deploy step has %s: the configuration must come whole from the env file", arg)
			}
		}
	}
	if !slices.Contains(deploy, "--env-vars-file=${_ENV_FILE}") {
		t.Fatalf("deploy step %q does not deploy the env file --env-vars-file=${_ENV_FILE}", deploy)
	}
	envFile := b.GetSubstitutions()["_ENV_FILE"]
	if envFile != "env.yaml" {
		t.Errorf("_ENV_FILE defaults to %q, want env.yaml", envFile)
	}

	values, commented := readEnvFile(t, envFile)
	bg := map[string]string{}
	for k, v := range values {
		bg[k] = v
	}
	bg["STRATEGY"], bg["SERVICE"], bg["INGRESS"] = string(tgt.BlueGreen), "web", ""
	names := settingNames(t, values, bg)
	documented := configurationTable(t)
	for _, name := range names {
		if why := acceptedKey(name); why != "" {
			t.Errorf("config reads %s, which no env file can carry: %s", name, why)
		}
		if _, set := values[name]; !set && !commented[name] {
			t.Errorf("%s: config reads %s, but it is neither set nor commented there", envFile, name)
		}
		if !documented[name] {
			t.Errorf("README.md: config reads %s, but the configuration table does not document it", name)
		}
	}
	size := 0
	for name, value := range values {
		size += len(name) + len(value)
		if !slices.Contains(names, name) {
			t.Errorf("%s sets %s, which config does not read", envFile, name)
		}
	}
	if size > 32<<10 {
		t.Errorf("%s holds %d bytes, over the 32 KiB a function's variables may hold", envFile, size)
	}
	if _, err := config.Load(func(name string) string { return values[name] }); err != nil {
		t.Errorf("%s as committed does not load: %v", envFile, err)
	}
}

// readmeDeploy returns the arguments of the README's `gcloud functions
// deploy` command, after "gcloud".
func readmeDeploy(t *testing.T) []string {
	t.Helper()
	raw, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(raw), "\n## Deploy\n")
	if !ok {
		t.Fatal("README.md has no Deploy section")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	_, block, ok := strings.Cut(section, "```sh\n")
	block, _, _ = strings.Cut(block, "```")
	if !ok || !strings.HasPrefix(block, "gcloud functions deploy ") {
		t.Fatalf("README.md's Deploy section does not open with a sh block of gcloud functions deploy:\n%s", block)
	}
	command := strings.ReplaceAll(strings.TrimSpace(block), "\\\n", " ")
	if strings.ContainsAny(command, "\n'\"$") {
		t.Fatalf("README.md's deploy is not one plain command:\n%s", command)
	}
	return strings.Fields(command)[1:]
}

// flags maps each --flag of args to its value ("" for a bare flag) and
// returns the other arguments in order.
func flags(args []string) (map[string]string, []string) {
	named := map[string]string{}
	var positional []string
	for _, a := range args {
		if !strings.HasPrefix(a, "--") {
			positional = append(positional, a)
			continue
		}
		name, value, _ := strings.Cut(a, "=")
		named[name] = value
	}
	return named, positional
}

// TestREADMEDeployIsTheCloudBuildDeploy checks that the deploy the README
// documents and the one cloudbuild.yaml runs are the same command: the same
// flags, and the same values for those that decide how the function runs,
// including a --timeout that fits the longest per-event budget config allows.
func TestREADMEDeployIsTheCloudBuildDeploy(t *testing.T) {
	b, _ := readCloudBuild(t)
	readme, readmeCommand := flags(readmeDeploy(t))
	build, buildCommand := flags(resolvedDeploy(t, b))

	if diff := cmp.Diff(buildCommand, readmeCommand); diff != "" {
		t.Errorf("README deploy's command differs from cloudbuild.yaml's (-cloudbuild +README):\n%s", diff)
	}
	if diff := cmp.Diff(slices.Sorted(maps.Keys(build)), slices.Sorted(maps.Keys(readme))); diff != "" {
		t.Errorf("README deploy's flags differ from cloudbuild.yaml's (-cloudbuild +README):\n%s", diff)
	}
	essential := map[string]string{
		"--gen2":          "",
		"--runtime":       "go126",
		"--source":        ".",
		"--entry-point":   "onNewImage",
		"--trigger-topic": "cloud-builds",
		"--retry":         "",
		"--timeout":       fmt.Sprintf("%.0fs", tgt.MaxBudget.Seconds()),
		"--env-vars-file": "env.yaml",
	}
	for _, got := range []struct {
		where string
		flags map[string]string
	}{{"README.md", readme}, {"cloudbuild.yaml", build}} {
		picked := map[string]string{}
		for name := range essential {
			if value, ok := got.flags[name]; ok {
				picked[name] = value
			}
		}
		if diff := cmp.Diff(essential, picked); diff != "" {
			t.Errorf("%s: deploy flags (-want +got):\n%s", got.where, diff)
		}
	}
	if diff := cmp.Diff([]string{"functions", "deploy", "onNewImage"}, readmeCommand); diff != "" {
		t.Errorf("README deploy command (-want +got):\n%s", diff)
	}
}
