package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/onnewimage/onnewimage/internal/config"
	"github.com/onnewimage/onnewimage/internal/kube"
	"github.com/onnewimage/onnewimage/internal/kube/kubetest"
	"github.com/onnewimage/onnewimage/internal/trigger"
)

// TestListenAddr checks where local listens for each setting: loopback
// unless another host is asked for by name.
func TestListenAddr(t *testing.T) {
	tests := []struct {
		name  string
		env   map[string]string
		event bool
		want  string // What the functions framework listens on, or the error.
	}{
		{"default is loopback", nil, false, "127.0.0.1:8080"},
		{"PORT", map[string]string{"PORT": "9090"}, false, "127.0.0.1:9090"},
		{"LOCAL_ONLY=true, the functions framework convention", map[string]string{"LOCAL_ONLY": "true"}, false, "127.0.0.1:8080"},
		{"every interface, asked for", map[string]string{"HOST": "0.0.0.0", "PORT": "9090"}, false, "0.0.0.0:9090"},
		{"every interface, IPv6", map[string]string{"HOST": "::"}, false, "[::]:8080"},
		{"one address", map[string]string{"HOST": "192.0.2.7"}, false, "192.0.2.7:8080"},
		{"IPv6 loopback", map[string]string{"HOST": "::1", "LOCAL_ONLY": "true"}, false, "[::1]:8080"},
		{"localhost", map[string]string{"HOST": "localhost", "LOCAL_ONLY": "true"}, false, "localhost:8080"},
		{"-event stays on loopback", map[string]string{"HOST": "0.0.0.0"}, true, "127.0.0.1:8080"},
		{"LOCAL_ONLY=true contradicts HOST", map[string]string{"HOST": "0.0.0.0", "LOCAL_ONLY": "true"}, false,
			`error: HOST="0.0.0.0" is not a loopback address, and LOCAL_ONLY=true`},
		{"LOCAL_ONLY=false no longer opens the port", map[string]string{"LOCAL_ONLY": "false"}, false,
			`error: LOCAL_ONLY="false": local listens on loopback unless HOST names another address (HOST=0.0.0.0 for every interface)`},
		{"LOCAL_ONLY garbage", map[string]string{"LOCAL_ONLY": "yes"}, false,
			`error: LOCAL_ONLY="yes": local listens on loopback unless HOST names another address`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			host, port, err := listenAddr(func(k string) string { return tt.env[k] }, tt.event)
			got := host + ":" + port // As funcframework.StartHostPort joins them.
			if err != nil {
				got = "error: " + err.Error()
			}
			if strings.HasPrefix(tt.want, "error: ") && strings.HasPrefix(got, tt.want) {
				return
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("listenAddr (-want +got):\n%s", diff)
			}
		})
	}
}

func TestReadRequest(t *testing.T) {
	req, err := readRequest(filepath.Join("..", "..", "testdata", "cloudbuild", "cloudevent-pubsub-binary-request.http"))
	if err != nil {
		t.Fatal(err)
	}
	if req.Method != "POST" || req.Header.Get("ce-type") != "google.cloud.pubsub.topic.v1.messagePublished" || req.Header.Get("ce-id") != "11925470562539716" {
		t.Errorf("request %s with headers %v", req.Method, req.Header)
	}
	if req.Header.Get("Authorization") != "" {
		t.Error("the recorded placeholder token is sent")
	}
	body, _ := io.ReadAll(req.Body)
	if int64(len(body)) != req.ContentLength || !strings.HasPrefix(string(body), "{\n  \"message\"") || !strings.Contains(string(body), `"subscription"`) {
		t.Errorf("body of %d bytes (Content-Length %d): %.60q", len(body), req.ContentLength, body)
	}
}

func TestReadRequestRejectsAFileWithoutABody(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.http")
	if err := writeFile(path, "POST / HTTP/1.1\nHost: x\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := readRequest(path); err == nil {
		t.Error("a request file without a blank line was accepted")
	}
}

func writeFile(path, s string) error { return os.WriteFile(path, []byte(s), 0o600) }

// TestREADMEExample runs the README's "Run it locally" command as written,
// but for the cluster: its environment is a valid configuration, its event
// file is read as local reads it, and the function decides to deploy the
// build's image (a dry run, against a fake cluster holding the Deployment).
func TestREADMEExample(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, _ := strings.Cut(string(readme), "## Run it locally")
	_, block, _ := strings.Cut(section, "```sh\n")
	block, _, _ = strings.Cut(block, "```")
	env := map[string]string{}
	var args []string
	for _, word := range strings.Fields(strings.ReplaceAll(block, "\\\n", " ")) {
		if k, v, ok := strings.Cut(word, "="); ok && args == nil {
			env[k] = v
			continue
		}
		args = append(args, word)
	}
	if diff := cmp.Diff([]string{"go", "run", "./cmd/local", "-event"}, args[:len(args)-1]); diff != "" {
		t.Fatalf("README command (-want +got):\n%s", diff)
	}
	cfg, err := config.Load(func(k string) string { return env[k] })
	if err != nil {
		t.Fatalf("README environment: %v", err)
	}
	req, err := readRequest(filepath.Join("..", "..", args[len(args)-1]))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(req.Body)
	published, err := time.Parse(time.RFC3339Nano, req.Header.Get("ce-time"))
	if err != nil {
		t.Fatal(err)
	}

	labels := map[string]string{"app": "web"}
	cluster := fake.NewClientset(&appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "web:old"}}},
			},
		},
	})
	h := trigger.New(cfg, trigger.Options{Connector: fakeConnector{cluster}})
	reps, err := h.Handle(t.Context(), trigger.Event{ID: req.Header.Get("ce-id"), Time: published, Data: body})
	if err != nil || len(reps) != 1 {
		t.Fatalf("Handle() = %+v, %v; want one report", reps, err)
	}
	rep := reps[0]
	want := `"image":"` + cfg.Targets[0].Image.String() + `:latest@sha256:`
	if !rep.DryRun || !strings.Contains(rep.Patch, want) {
		t.Errorf("README example: %s %q, patch %s; want a dry-run patch to %s...", rep.Outcome, rep.Reason, rep.Patch, want)
	}
}

type fakeConnector struct{ client kubernetes.Interface }

func (c fakeConnector) Clientset(context.Context) (kube.Interface, error) {
	return kubetest.Adapt(c.client), nil
}
func (fakeConnector) Forget(error) {}
