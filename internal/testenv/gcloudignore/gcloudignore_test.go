package gcloudignore

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseRefusesWhatItCannotRead(t *testing.T) {
	for _, line := range []string{
		"!keep.go",
		"#!include:.gitignore",
		"# !include:.gitignore",
		"**/testdata",
		"a/**",
		"[ab].go",
		`\#file`,
		"trailing ",
		"a//b",
		"*",
		"*/b",
	} {
		t.Run(line, func(t *testing.T) {
			if _, err := Parse("ok\n" + line + "\n"); err == nil || !strings.Contains(err.Error(), "line 2") {
				t.Errorf("Parse(%q) = %v, want an error naming line 2", line, err)
			}
		})
	}
}

func TestExcludes(t *testing.T) {
	rules, err := Parse(`# a comment
.git
*_test.go
testdata/
cmd/sandbox/
/local
a?c
`)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		path  string
		isDir bool
		want  bool
	}{
		{".git", false, true},
		{".git", true, true},
		{".git/config", false, true},
		{".github/x.yml", false, false},
		{"function.go", false, false},
		{"function_test.go", false, true},
		{"internal/x/x_test.go", false, true},
		{"internal/x/x_test.go.orig", false, false},
		{"testdata", true, true},
		{"testdata", false, false}, // A directory pattern does not match a file.
		{"internal/x/testdata/a.json", false, true},
		{"cmd/sandbox/main.go", false, true},
		{"x/cmd/sandbox/main.go", false, true}, // gcloud matches the last segments, at any depth.
		{"cmd/sandboxed/main.go", false, false},
		{"local", false, true},
		{"local/bin", false, true},
		{"cmd/local/main.go", false, false}, // Anchored: only at the top.
		{"abc", false, true},
		{"x/abc/y", false, true},
		{"ac", false, false},
	}
	for _, tt := range tests {
		if got := rules.Excludes(tt.path, tt.isDir); got != tt.want {
			t.Errorf("Excludes(%q, isDir=%v) = %v, want %v", tt.path, tt.isDir, got, tt.want)
		}
	}
}

// gcloudFiles lists what gcloud itself would upload from dir.
func gcloudFiles(t *testing.T, dir string) []string {
	t.Helper()
	if testing.Short() {
		t.Skip("gcloud takes seconds to list a directory; run without -short")
	}
	if _, err := exec.LookPath("gcloud"); err != nil {
		t.Skip("gcloud is not installed: cannot compare with gcloud's own reading")
	}
	out, err := exec.Command("gcloud", "meta", "list-files-for-upload", dir).Output()
	if err != nil {
		t.Fatalf("gcloud meta list-files-for-upload %s: %v", dir, err)
	}
	files := strings.Fields(string(out))
	for i, f := range files {
		files[i] = filepath.ToSlash(f)
	}
	slices.Sort(files)
	return files
}

// TestFilesAsGcloudUploadsThem compares Files with gcloud's own list, on the
// repository and on a tree made to tell gcloud's reading from git's.
func TestFilesAsGcloudUploadsThem(t *testing.T) {
	repo, err := filepath.Abs("../../..")
	if err != nil {
		t.Fatal(err)
	}
	ignore, err := os.ReadFile(filepath.Join(repo, FileName))
	if err != nil {
		t.Fatal(err)
	}
	tree := t.TempDir()
	for name, content := range map[string]string{
		FileName:                         string(ignore),
		".git":                           "gitdir: elsewhere",
		"go.mod":                         "module example.com/m",
		"function.go":                    "package m",
		"function_test.go":               "package m",
		"a/testdata/x.json":              "{}",
		"z/testdata":                     "a file, not a directory",
		"x/cmd/sandbox/main.go":          "package main",
		"cmd/sandboxed/main.go":          "package main",
		"cmd/local/main.go":              "package main",
		"a/local":                        "",
		"local/bin":                      "",
		"x/k8s":                          "",
		"y/k8s/z.yaml":                   "",
		"e.test":                         "",
		"internal/testenv/x/x.go":        "package x",
		"other/internal/testenv/x/x.go":  "package x",
		".ci/run":                        "",
		"env.yaml":                       "A: b",
		"internal/trigger/trigger.go":    "package trigger",
		"internal/trigger/trigger.go.go": "package trigger",
	} {
		p := filepath.Join(tree, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name, dir := range map[string]string{"repository": repo, "made-up tree": tree} {
		t.Run(name, func(t *testing.T) {
			got, err := Files(dir)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(gcloudFiles(t, dir), got); diff != "" {
				t.Errorf("Files(%s) (-gcloud +got):\n%s", dir, diff)
			}
		})
	}
}
