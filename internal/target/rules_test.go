package target

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"cloud.google.com/go/cloudbuild/apiv1/v2/cloudbuildpb"
	"github.com/google/go-cmp/cmp"

	"github.com/onnewimage/onnewimage/internal/buildevent"
)

// sample decodes a captured build from testdata/cloudbuild, dropping the
// `// ...` lines its authors used to elide parts of JSONC files.
func sample(t *testing.T, name string) *cloudbuildpb.Build {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "testdata", "cloudbuild", name))
	if err != nil {
		t.Fatal(err)
	}
	var lines [][]byte
	for _, line := range bytes.Split(raw, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("//")) {
			lines = append(lines, line)
		}
	}
	b, err := buildevent.DecodeBuild(bytes.Join(lines, []byte("\n")))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func rules(t *testing.T, kv ...string) Rules {
	t.Helper()
	var list []Rule
	for i := 0; i+1 < len(kv); i += 2 {
		r, err := ParseRule(RuleKey(kv[i]), kv[i+1])
		if err != nil {
			t.Fatal(err)
		}
		list = append(list, r)
	}
	return NewRules(list...)
}

// TestRulesMatchSamples matches rules against the real samples'
// substitutions and sources. The vial sample is a trigger build of branch
// main (TRIGGER_NAME staging, REPO_NAME vial); the feature-branch and tag
// builds are derived from it here by changing its substitutions only. The
// kazuhito-m SUCCESS sample has no substitutions, only source.repoSource
// (branch master, repo test.InfraTools); the knative sample is a manual
// build from a storage source: no branch, tag, trigger or repo at all.
func TestRulesMatchSamples(t *testing.T) {
	vial := "cloudbuild-build-SUCCESS-with-images-and-trigger.vial.jsonc"
	builds := map[string]func(t *testing.T) *cloudbuildpb.Build{
		"main": func(t *testing.T) *cloudbuildpb.Build { return sample(t, vial) },
		"feature": func(t *testing.T) *cloudbuildpb.Build {
			b := sample(t, vial)
			b.Substitutions["BRANCH_NAME"] = "feature/login"
			b.Substitutions["REF_NAME"] = "feature/login"
			return b
		},
		"tag": func(t *testing.T) *cloudbuildpb.Build {
			b := sample(t, vial)
			delete(b.Substitutions, "BRANCH_NAME")
			b.Substitutions["TAG_NAME"] = "v1.4.2"
			b.Substitutions["REF_NAME"] = "v1.4.2"
			b.Substitutions["TRIGGER_NAME"] = "release"
			return b
		},
		"repoSource": func(t *testing.T) *cloudbuildpb.Build {
			return sample(t, "cloudbuild-build-SUCCESS-noimages.kazuhito-m.json")
		},
		"manual": func(t *testing.T) *cloudbuildpb.Build {
			return sample(t, "cloudbuild-build-SUCCESS-with-images.knative-gcp.json")
		},
	}
	tests := []struct {
		name   string
		rules  []string
		build  string
		wantOK bool
		why    string
	}{
		{"no rules match main", nil, "main", true, ""},
		{"no rules match a build without trigger", nil, "manual", true, ""},
		{"branch main", []string{"branch", "^main$"}, "main", true, ""},
		{"branch main, implicitly anchored", []string{"branch", "main"}, "main", true, ""},
		{"branch main refuses a feature branch", []string{"branch", "main"}, "feature", false,
			`when.branch "main" does not match BRANCH_NAME "feature/login"`},
		{"anchored: a prefix does not match", []string{"branch", "feat"}, "feature", false,
			`when.branch "feat" does not match BRANCH_NAME "feature/login"`},
		{"anchored: a part does not match", []string{"branch", "login"}, "feature", false,
			`when.branch "login" does not match BRANCH_NAME "feature/login"`},
		{"feature branches", []string{"branch", "feature/.*"}, "feature", true, ""},
		{"branch rule on a tag build", []string{"branch", "main"}, "tag", false,
			`when.branch "main": the build has no BRANCH_NAME`},
		{"release tag", []string{"tag", `v[0-9]+\.[0-9]+\.[0-9]+`}, "tag", true, ""},
		{"release tag refuses main", []string{"tag", `v[0-9]+\.[0-9]+\.[0-9]+`}, "main", false,
			`when.tag "v[0-9]+\\.[0-9]+\\.[0-9]+": the build has no TAG_NAME`},
		{"trigger and repo", []string{"trigger", "staging", "repo", "vial"}, "main", true, ""},
		{"every rule must match", []string{"branch", "main", "trigger", "prod"}, "main", false,
			`when.trigger "prod" does not match TRIGGER_NAME "staging"`},
		{"branch from source.repoSource", []string{"branch", "master"}, "repoSource", true, ""},
		{"repo from source.repoSource", []string{"repo", `test\.InfraTools`}, "repoSource", true, ""},
		{"no trigger name in source.repoSource", []string{"trigger", ".*"}, "repoSource", false,
			`when.trigger ".*": the build has no TRIGGER_NAME`},
		{"a build without trigger has no branch", []string{"branch", ".*"}, "manual", false,
			`when.branch ".*": the build has no BRANCH_NAME`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok, why := rules(t, tt.rules...).Match(builds[tt.build](t))
			if diff := cmp.Diff([]any{tt.wantOK, tt.why}, []any{ok, why}); diff != "" {
				t.Errorf("Match (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseRuleRejects(t *testing.T) {
	tests := []struct {
		key, expr, want string
	}{
		{"branch", "(", "\"(\" is not an RE2 regular expression: missing closing ): `(`"},
		{"branch", `(?<=x)y`, "\"(?<=x)y\" is not an RE2 regular expression: invalid named capture: `(?<=x)y`"},
		{"ref", "main", `unknown rule "ref" (want branch, tag, trigger or repo)`},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			_, err := ParseRule(RuleKey(tt.key), tt.expr)
			got := ""
			if err != nil {
				got = err.Error()
			}
			if got != tt.want {
				t.Errorf("ParseRule(%s, %q) error = %q, want %q", tt.key, tt.expr, got, tt.want)
			}
		})
	}
}
