package onnewimage

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"cloud.google.com/go/cloudbuild/apiv1/v2/cloudbuildpb"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"
)

// TestCloudBuildConfig checks that cloudbuild.yaml has the Build message's
// schema (no unknown field anywhere), that it tests before it deploys, that
// the deploy is the one the README documents, and that every substitution it
// uses has a default.
func TestCloudBuildConfig(t *testing.T) {
	raw, err := os.ReadFile("cloudbuild.yaml")
	if err != nil {
		t.Fatal(err)
	}
	js, err := yaml.YAMLToJSON(raw)
	if err != nil {
		t.Fatalf("cloudbuild.yaml is not YAML: %v", err)
	}
	var b cloudbuildpb.Build
	if err := protojson.Unmarshal(js, &b); err != nil { // Strict: unknown fields fail.
		t.Fatalf("cloudbuild.yaml is not a Build: %v", err)
	}

	var ids []string
	for _, s := range b.GetSteps() {
		ids = append(ids, s.GetId())
	}
	if !slices.Equal(ids, []string{"vet", "test", "deploy"}) {
		t.Errorf("steps %v, want vet, test, deploy in that order", ids)
	}
	deploy := strings.Join(b.GetSteps()[len(ids)-1].GetArgs(), " ")
	for _, want := range []string{"functions deploy onNewImage", "--gen2", "--runtime=go126", "--trigger-topic=cloud-builds", "--entry-point=onNewImage", "--retry"} {
		if !strings.Contains(deploy, want) {
			t.Errorf("deploy step %q lacks %q", deploy, want)
		}
	}
	for _, m := range regexp.MustCompile(`\$\{(_[A-Z_]+)\}`).FindAllStringSubmatch(string(raw), -1) {
		if _, ok := b.GetSubstitutions()[m[1]]; !ok {
			t.Errorf("substitution %s is used but has no default", m[1])
		}
	}
	if b.GetOptions().GetSubstitutionOption() != cloudbuildpb.BuildOptions_MUST_MATCH {
		t.Errorf("substitutionOption = %v, want MUST_MATCH so a typo fails the build", b.GetOptions().GetSubstitutionOption())
	}
}
