package onnewimage

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"

	"github.com/onnewimage/onnewimage/internal/cluster"
	"github.com/onnewimage/onnewimage/internal/config"
	"github.com/onnewimage/onnewimage/internal/kube"
	"github.com/onnewimage/onnewimage/internal/kube/kubetest"
	"github.com/onnewimage/onnewimage/internal/trigger"
)

// fakeCluster is a GKE cluster behind the test Container API, at its own
// documentation address, holding a Deployment web in each namespace given.
type fakeCluster struct {
	client   *fake.Clientset
	caPEM    []byte
	endpoint string
}

func newFakeCluster(t *testing.T, name, endpoint string, namespaces ...string) *fakeCluster {
	t.Helper()
	labels := map[string]string{"app": "web"}
	fc := &fakeCluster{client: fake.NewClientset(), caPEM: testCA(t), endpoint: endpoint}
	for _, ns := range namespaces {
		d := &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns, ResourceVersion: "7"},
			Spec: appsv1.DeploymentSpec{
				Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: labels},
					Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: sampleRepo + ":previous"}}},
				},
			},
		}
		if err := fc.client.Tracker().Add(d); err != nil {
			t.Fatal(err)
		}
	}
	containerAPI.SetCluster("projects/demo/locations/us-central1/clusters/"+name, endpoint, fc.caPEM)
	return fc
}

// image is what namespace/web runs on fc.
func (fc *fakeCluster) image(t *testing.T, namespace string) string {
	t.Helper()
	d, err := fc.client.AppsV1().Deployments(namespace).Get(t.Context(), "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return d.Spec.Template.Spec.Containers[0].Image
}

// useTargets makes the function serve the targets file holding targets,
// as a fresh instance, reaching each fake cluster by its endpoint through
// the real GKE connector; it counts the clientsets built by endpoint.
func useTargets(t *testing.T, targets string, clusters ...*fakeCluster) map[string]int {
	t.Helper()
	path := filepath.Join(t.TempDir(), "targets.yaml")
	if err := os.WriteFile(path, []byte("targets:\n"+targets), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(func(k string) string {
		return map[string]string{"TARGETS": path, "CLOUDBUILD_EMULATOR_HOST": cloudBuild.Addr, "BUILD_PROJECTS": buildProjects}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	built := map[string]int{}
	var mu sync.Mutex // Each cluster's connector has its own lock.
	h := trigger.New(cfg, trigger.Options{Cluster: cluster.Options{
		EmulatorHost: containerAPI.Addr,
		TokenSource:  staticToken{},
		NewClientset: func(rc *rest.Config) (kube.Interface, error) {
			for _, fc := range clusters {
				if rc.Host == "https://"+fc.endpoint && bytes.Equal(rc.CAData, fc.caPEM) && !rc.Insecure {
					mu.Lock()
					built[fc.endpoint]++ // Read once the deliveries are done.
					mu.Unlock()
					return kubetest.Adapt(fc.client), nil
				}
			}
			return nil, fmt.Errorf("no fake cluster at %s", rc.Host)
		},
	}})
	prev := handler
	handler = func() (*trigger.Handler, error) { return h, nil }
	t.Cleanup(func() { handler = prev })
	return built
}

// sendAll delivers r to the function and returns the HTTP status and every
// log line it wrote, by targetName.
func sendAll(t *testing.T, r *http.Request) (int, map[string]map[string]any) {
	t.Helper()
	logs.take()
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	lines := map[string]map[string]any{}
	for _, l := range logs.take() {
		name, _ := l["targetName"].(string)
		if _, dup := lines[name]; dup {
			t.Errorf("two log lines for target %q", name)
		}
		lines[name] = l
	}
	return resp.StatusCode, lines
}

// brief is a log line's outcome, reason and retry.
func brief(line map[string]any) []any {
	return []any{line["target"], line["severity"], line["outcome"], line["reason"], line["retry"]}
}

// TestSeveralTargetsThroughTheFramework delivers one build for three
// targets on two clusters, and one target whose when rule the build does
// not satisfy: one log line per target concerned. The target on a cluster
// still provisioning fails retryably, so Pub/Sub is asked to redeliver
// while the others deploy; on the redelivery, the cluster up, only that
// target deploys. Each cluster is connected to once.
func TestSeveralTargetsThroughTheFramework(t *testing.T) {
	staging := newFakeCluster(t, "staging", "203.0.113.20", "web", "worker")
	prod := newFakeCluster(t, "prod", "203.0.113.21", "web")
	containerAPI.SetCluster("projects/demo/locations/us-central1/clusters/prod", "", nil) // Provisioning: no endpoint yet.
	on := func(name string) string { return "cluster: {project: demo, location: us-central1, name: " + name + "}" }
	built := useTargets(t, ""+
		"  - {name: web-staging, image: "+sampleRepo+", "+on("staging")+", namespace: web, deployment: web, container: web}\n"+
		"  - {name: worker-staging, image: "+sampleRepo+", "+on("staging")+", namespace: worker, deployment: web, container: web}\n"+
		"  - {name: web-prod, image: "+sampleRepo+", "+on("prod")+", namespace: web, deployment: web, container: web}\n"+
		"  - {name: web-release, image: "+sampleRepo+", when: {tag: 'v.*'}, "+on("prod")+", namespace: web, deployment: web, container: web}\n"+
		"  - {name: api, image: gcr.io/project-id/api, "+on("prod")+", namespace: api, deployment: api, container: api}\n",
		staging, prod)
	build := sample(t, knative)
	deployed := sampleRepo + ":latest@" + sampleDigest
	rolls := "web rolls from " + sampleRepo + ":previous to " + deployed
	published := time.Now()

	code, lines := sendAll(t, deliveries["binary CloudEvent"](t, envelope(build, "SUCCESS", published), published))
	if code < 500 {
		t.Errorf("first delivery: HTTP %d, want a 5xx so Pub/Sub redelivers", code)
	}
	got := map[string][]any{}
	for name, l := range lines {
		got[name] = brief(l)
	}
	want := map[string][]any{
		"web-staging":    {"web-staging: web/web:web", "NOTICE", "deployed", rolls, nil},
		"worker-staging": {"worker-staging: worker/web:web", "NOTICE", "deployed", rolls, nil},
		"web-prod": {"web-prod: web/web:web", "ERROR", "failed",
			"cluster projects/demo/locations/us-central1/clusters/prod has no endpoint (status RUNNING)", true},
		"web-release": {"web-release: web/web:web", "INFO", "skipped", `when.tag "v.*": the build has no TAG_NAME`, nil},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("first delivery's log lines (-want +got):\n%s", diff)
	}

	containerAPI.SetCluster("projects/demo/locations/us-central1/clusters/prod", prod.endpoint, prod.caPEM) // Provisioned.
	code, lines = sendAll(t, deliveries["binary CloudEvent"](t, envelope(build, "SUCCESS", published), published))
	if code != http.StatusOK {
		t.Errorf("redelivery: HTTP %d, want 200", code)
	}
	got = map[string][]any{}
	for name, l := range lines {
		got[name] = brief(l)
	}
	want["web-staging"] = []any{"web-staging: web/web:web", "INFO", "skipped", "already running " + sampleDigest, nil}
	want["worker-staging"] = []any{"worker-staging: worker/web:web", "INFO", "skipped", "already running " + sampleDigest, nil}
	want["web-prod"] = []any{"web-prod: web/web:web", "NOTICE", "deployed", rolls, nil}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("redelivery's log lines (-want +got):\n%s", diff)
	}
	images := []string{staging.image(t, "web"), staging.image(t, "worker"), prod.image(t, "web")}
	if diff := cmp.Diff([]string{deployed, deployed, deployed}, images); diff != "" {
		t.Errorf("images (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]int{staging.endpoint: 1, prod.endpoint: 1}, built); diff != "" {
		t.Errorf("clientsets built by cluster endpoint (-want +got):\n%s", diff)
	}
}

// TestDismissedMessageLogsOneLine checks that with several targets a
// message no target is concerned by still logs exactly one line, naming no
// target.
func TestDismissedMessageLogsOneLine(t *testing.T) {
	staging := newFakeCluster(t, "staging", "203.0.113.20", "web")
	useTargets(t, ""+
		"  - {name: a, image: "+sampleRepo+", cluster: {project: demo, location: us-central1, name: staging}, namespace: web, deployment: web, container: web}\n"+
		"  - {name: b, image: "+sampleRepo+", cluster: {project: demo, location: us-central1, name: staging}, namespace: web, deployment: web, container: web, when: {branch: main}}\n",
		staging)
	published := time.Now()
	for file, status := range map[string]string{"cloudbuild-build-QUEUED.kazuhito-m.json": "QUEUED", "cloudbuild-build-SUCCESS-noimages.kazuhito-m.json": "SUCCESS"} {
		t.Run(file, func(t *testing.T) {
			code, line := send(t, deliveries["raw push body"](t, envelope(sample(t, file), status, published), published))
			if code != http.StatusOK || line["target"] != "" || line["targetName"] != "" || line["outcome"] != "skipped" {
				t.Errorf("HTTP %d, %v; want 200 and one skipped line naming no target", code, line)
			}
		})
	}
}
