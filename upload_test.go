package onnewimage

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"go/parser"
	"go/token"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/onnewimage/onnewimage/internal/testenv/gcloudignore"
)

// The Go functions-framework buildpack's names: the directory it moves the
// upload into, and the package it generates main in, inside the function's
// module.
const (
	uploadDir  = "serverless_function_source_code"
	appPackage = "functions.local/app"
	framework  = "github.com/GoogleCloudPlatform/functions-framework-go"
)

// TestUploadBuildsAndServes does what `gcloud functions deploy --source=.`
// and Cloud Functions' Go buildpack do with this repository, offline: it
// copies what gcloud uploads (everything .gcloudignore does not exclude),
// generates the main the buildpack generates (a blank import of the
// function's package, served by the functions framework), builds it against
// the committed go.mod and go.sum with no module download, starts it in the
// directory above the source as Cloud Functions does, with env.yaml's
// configuration and then with a relative TARGETS naming a targets file in the
// source, and has it answer one event each time. An ignore rule that
// drops a needed file, function code importing test-only code, or a go.sum
// gap fails here instead of in the first production deploy.
func TestUploadBuildsAndServes(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts the uploaded function (about 8 s); run without -short")
	}
	b, _ := readCloudBuild(t)
	deploy, _ := flags(resolvedDeploy(t, b))
	workspace := t.TempDir()
	src := stageUpload(t, filepath.Join(workspace, uploadDir))
	writeMain(t, src)
	bin := buildOffline(t, src)
	build := sample(t, "cloudbuild-build-QUEUED.kazuhito-m.json")
	want := map[string]any{
		"severity": "INFO", "buildId": buildID(build), "status": "QUEUED",
		"outcome": "skipped", "reason": "build status is QUEUED, not SUCCESS",
	}

	t.Run("env.yaml", func(t *testing.T) {
		values, _ := readEnvFile(t, deploy["--env-vars-file"])
		fn := startUploaded(t, bin, workspace, deploy["--entry-point"], values)
		got := fn.deliver(t, build, "QUEUED")
		delete(got, "target")
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("the uploaded function's log line (-want +got):\n%s", diff)
		}
	})

	// A targets file committed with the source, named by a relative TARGETS:
	// the function finds it where the buildpack moved the source, although
	// its working directory is the one above.
	t.Run("a relative TARGETS", func(t *testing.T) {
		if err := os.WriteFile(filepath.Join(src, "targets.yaml"), []byte(`targets:
  - name: shipped
    image: us-docker.pkg.dev/demo-project/apps/shipped-with-the-source
    cluster: {project: demo-project, location: us-central1, name: prod}
    deployment: web
    container: web
`), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(workspace, "targets.yaml")); err == nil {
			t.Fatal("the working directory holds a targets.yaml: the test would not show where TARGETS is read")
		}
		fn := startUploaded(t, bin, workspace, deploy["--entry-point"], map[string]string{"TARGETS": "targets.yaml"})
		// A SUCCESS build of another image is dismissed naming the file's
		// image: the file was read.
		other := sample(t, knative)
		got := fn.deliver(t, other, "SUCCESS")
		want := map[string]any{
			"severity": "INFO", "buildId": buildID(other), "status": "SUCCESS", "outcome": "skipped", "target": "",
			"reason": `no pushed image matches "us-docker.pkg.dev/demo-project/apps/shipped-with-the-source" (pushed: ` + sampleRepo + ", " + sampleRepo + ":latest)",
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("the uploaded function's log line (-want +got):\n%s", diff)
		}
	})
}

// deliver sends build's message to the function as Eventarc pushes a
// Pub/Sub message, and returns the keys of interest of the log line it
// writes.
func (f *uploaded) deliver(t *testing.T, build []byte, status string) map[string]any {
	t.Helper()
	published := time.Now()
	body, err := json.Marshal(envelope(build, status, published))
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, f.url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	// A binary CloudEvent, as Eventarc pushes a Pub/Sub message.
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("ce-id", "4242")
	req.Header.Set("ce-source", "//pubsub.googleapis.com/projects/demo/topics/cloud-builds")
	req.Header.Set("ce-specversion", "1.0")
	req.Header.Set("ce-type", "google.cloud.pubsub.topic.v1.messagePublished")
	req.Header.Set("ce-time", published.Format(time.RFC3339Nano))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("the uploaded function answered %s, want 200 OK", resp.Status)
	}
	line := f.logLine(t)
	got := map[string]any{}
	for _, k := range []string{"severity", "buildId", "status", "outcome", "reason", "target"} {
		got[k] = line[k]
	}
	return got
}

// stageUpload copies the files gcloud would upload from the repository into
// dir, and returns dir.
func stageUpload(t *testing.T, dir string) string {
	t.Helper()
	files, err := gcloudignore.Files(".")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range files {
		raw, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		to := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(to, raw, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// writeMain generates the uploaded function's main as the buildpack does
// when the function registers itself through the framework's functions
// package: a main package in the function's module that blank-imports the
// function's package and serves it. It is the buildpack's program in all
// but one respect: it listens on loopback only.
func writeMain(t *testing.T, src string) {
	t.Helper()
	// The buildpack requires a module path whose first element has a dot,
	// and imports the package at the module's root, unless a directory
	// named after that package's name holds it.
	modFile, err := os.ReadFile(filepath.Join(src, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	first, _, _ := strings.Cut(string(modFile), "\n")
	module, ok := strings.CutPrefix(first, "module ")
	if !ok || !strings.Contains(strings.Split(module, "/")[0], ".") {
		t.Fatalf("go.mod's first line %q: the buildpack needs a module path whose first element has a dot", first)
	}
	pkgs, err := parser.ParseDir(token.NewFileSet(), src, nil, parser.ImportsOnly)
	if err != nil {
		t.Fatal(err)
	}
	if len(pkgs) != 1 {
		t.Fatalf("the upload's root holds %d packages, want the function's alone", len(pkgs))
	}
	var name string
	imports := map[string]bool{}
	for n, p := range pkgs {
		name = n
		for _, f := range p.Files {
			for _, imp := range f.Imports {
				path, _ := strconv.Unquote(imp.Path.Value)
				imports[path] = true
			}
		}
	}
	if !imports[framework+"/functions"] {
		t.Fatalf("package %s does not import %s/functions: the buildpack would generate another main than this test builds", name, framework)
	}
	pkg := module
	if st, err := os.Stat(filepath.Join(src, name)); err == nil && st.IsDir() {
		pkg = module + "/" + name
	}
	main := fmt.Sprintf(`// Command app serves the uploaded function, as the Go functions-framework
// buildpack's generated main does.
package main

import (
	"log"
	"os"

	%q

	_ %q // Registers the function in its init.
)

func main() {
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	if err := funcframework.StartHostPort("127.0.0.1", port); err != nil {
		log.Fatalf("serving the function: %%v", err)
	}
}
`, framework+"/funcframework", pkg)
	dir := filepath.Join(src, filepath.FromSlash(appPackage))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(main), 0o644); err != nil {
		t.Fatal(err)
	}
}

// buildOffline builds the generated main in src with no module download and
// go.mod and go.sum as committed: every module must already be in the
// module cache and every hash in go.sum. -mod=readonly rather than -mod=mod:
// with -mod=mod the go command looks a hash missing from go.sum up in the
// checksum database even with GOPROXY=off, so a networked builder would fill
// the gap instead of failing.
func buildOffline(t *testing.T, src string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "app")
	cmd := exec.Command("go", "build", "-o", bin, "./"+appPackage)
	cmd.Dir = src
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool {
		name, _, _ := strings.Cut(kv, "=")
		return slices.Contains([]string{"GOFLAGS", "GOPROXY", "GONOSUMDB", "GONOSUMCHECK", "GONOPROXY", "GOPRIVATE", "GOINSECURE", "GOSUMDB", "GOWORK", "GOTOOLCHAIN"}, name)
	})
	cmd.Env = append(cmd.Env, "GOFLAGS=-mod=readonly", "GOPROXY=off", "GOWORK=off", "GOTOOLCHAIN=local")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the upload does not build offline against the committed go.mod and go.sum: %v\n%s", err, out)
	}
	return bin
}

// uploaded is the built upload, running.
type uploaded struct {
	url   string
	lines chan map[string]any
}

// startUploaded runs bin as Cloud Functions runs a function: in the
// directory that holds the source (uploadDir), configured by values, on
// PORT, with FUNCTION_TARGET naming the entry point. It waits until it
// listens.
func startUploaded(t *testing.T, bin, workspace, entryPoint string, values map[string]string) *uploaded {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	_, port, _ := net.SplitHostPort(addr)

	cmd := exec.Command(bin)
	cmd.Dir = workspace
	cmd.Env = []string{"PORT=" + port, "FUNCTION_TARGET=" + entryPoint, "K_SERVICE=onnewimage"}
	for k, v := range values {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	fn := &uploaded{url: "http://" + addr + "/", lines: make(chan map[string]any, 16)}
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var line map[string]any
			if json.Unmarshal(sc.Bytes(), &line) == nil {
				fn.lines <- line
			}
		}
		cmd.Wait()
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return fn
		}
		select {
		case <-exited:
			t.Fatalf("the uploaded function exited at start:\n%s", stderr.String())
		case <-ctx.Done():
			t.Fatalf("the uploaded function did not listen on %s:\n%s", addr, stderr.String())
		case <-tick.C:
		}
	}
}

// logLine returns the next structured log line the function writes.
func (f *uploaded) logLine(t *testing.T) map[string]any {
	t.Helper()
	select {
	case line := <-f.lines:
		return line
	case <-time.After(30 * time.Second):
		t.Fatal("the uploaded function wrote no log line")
		return nil
	}
}
