package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/onnewimage/onnewimage/internal/rollout"
	"github.com/onnewimage/onnewimage/internal/trigger"
)

// statusCluster holds testdata/good.yaml's targets on one fake cluster:
// web-staging (rolling, web/web) deployed by build s1, web-prod
// (blue-green, default/web-{blue,green} behind service web) switched to
// green's build p2 after p1 was rolled back; worker-local's Deployment is
// missing.
func statusCluster() *trigger.Options {
	at := func(h int) time.Time { return time.Date(2026, 11, 25, h, 0, 0, 0, time.UTC) }
	managed := []metav1.ManagedFieldsEntry{{Manager: rollout.FieldManager, Operation: metav1.ManagedFieldsOperationUpdate, Time: &metav1.Time{Time: at(12)}}}
	rolledOut := appsv1.DeploymentStatus{ObservedGeneration: 1, Replicas: 2, UpdatedReplicas: 2, AvailableReplicas: 2}
	dep := func(ns, name, img string, annotations map[string]string) *appsv1.Deployment {
		replicas := int32(2)
		return &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Generation: 1, Annotations: annotations, ManagedFields: managed},
			Spec: appsv1.DeploymentSpec{Replicas: &replicas, Template: corev1.PodTemplateSpec{
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: img}}}}},
			Status: rolledOut,
		}
	}
	release := func(id string, h int, commit string) map[string]string {
		return map[string]string{rollout.AnnotationBuildID: id, rollout.AnnotationBuildCreateTime: at(h).Format(time.RFC3339), rollout.AnnotationCommit: commit}
	}
	staging := dep("web", "web", "web@sha256:s1", release("s1", 9, "c0ffee1"))
	staging.Labels = map[string]string{rollout.LabelNewestBuild: "s1", rollout.LabelNewestBuildTime: at(9).Format(rollout.LabelTimeLayout)}
	router := release("p2", 10, "c0ffee2")
	router[rollout.AnnotationRolledBackBuildID], router[rollout.AnnotationRolledBackCreateTime] = "p1", at(8).Format(time.RFC3339)
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default", Annotations: router, ManagedFields: managed},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web", "version": "green"}}}
	blue := dep("default", "web-blue", "web@sha256:p0", release("p0", 7, "c0ffee0"))
	green := dep("default", "web-green", "web@sha256:p2", release("p2", 10, "c0ffee2"))
	return &trigger.Options{Connector: connector{fake.NewClientset(staging, svc, blue, green)}}
}

func TestStatusJSON(t *testing.T) {
	triggerOptions = *statusCluster()
	t.Cleanup(func() { triggerOptions = trigger.Options{} })
	var stdout, stderr bytes.Buffer
	code := run([]string{"status", "-o", "json"}, &stdout, &stderr, env(map[string]string{"TARGETS": "testdata/good.yaml"}))
	if code != exitInvalid {
		t.Errorf("exit code %d, want %d (worker-local cannot be read)", code, exitInvalid)
	}
	var got map[string]any
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, stdout.String())
	}
	running := func(name, colour, img, build, commit, created, since string) map[string]any {
		m := map[string]any{"deployment": name, "image": img, "replicas": 2.0,
			"status": `deployment "` + name + `" successfully rolled out`,
			"build":  map[string]any{"id": build, "commit": commit, "createTime": created},
		}
		if colour != "" {
			m["colour"] = colour
		}
		if since != "" {
			m["deployedAt"] = since
		}
		return m
	}
	want := map[string]any{"targets": []any{
		map[string]any{"name": "web-staging", "strategy": "rolling", "where": "acme/us-central1/staging/web/web:web",
			"live":    running("web", "", "web@sha256:s1", "s1", "c0ffee1", "2026-11-25T09:00:00Z", "2026-11-25T12:00:00Z"),
			"records": map[string]any{"newestBuild": map[string]any{"id": "s1", "createTime": "2026-11-25T09:00:00Z"}},
		},
		map[string]any{"name": "web-prod", "strategy": "blue-green", "router": "service/web", "where": "acme/us-central1/prod/default/web:web",
			"live":    running("web-green", "green", "web@sha256:p2", "p2", "c0ffee2", "2026-11-25T10:00:00Z", "2026-11-25T12:00:00Z"),
			"idle":    running("web-blue", "blue", "web@sha256:p0", "p0", "c0ffee0", "2026-11-25T07:00:00Z", ""),
			"records": map[string]any{"rolledBack": map[string]any{"id": "p1", "createTime": "2026-11-25T08:00:00Z"}},
		},
		map[string]any{"name": "worker-local", "strategy": "rolling", "where": "kubeconfig(/path/to/kubeconfig)/default/worker:worker",
			"error": `getting deployment default/worker: deployments.apps "worker" not found`,
		},
	}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("status -o json (-want +got):\n%s", diff)
	}
}

func TestStatusText(t *testing.T) {
	triggerOptions = *statusCluster()
	t.Cleanup(func() { triggerOptions = trigger.Options{} })
	var stdout, stderr bytes.Buffer
	code := run([]string{"status", "web-prod"}, &stdout, &stderr, env(map[string]string{"TARGETS": "testdata/good.yaml"}))
	want := `web-prod  blue-green service/web  acme/us-central1/prod/default/web:web
  live         green: web-green runs web@sha256:p2 (deployment "web-green" successfully rolled out)
  build        p2 (commit c0ffee2, created 2026-11-25T10:00:00Z)
  since        2026-11-25T12:00:00Z
  idle         blue: web-blue runs web@sha256:p0, build p0 (commit c0ffee0, created 2026-11-25T07:00:00Z), 2 replicas (deployment "web-blue" successfully rolled out)
  rolled back  p1 (created 2026-11-25T08:00:00Z)
`
	if code != exitOK || stderr.Len() > 0 {
		t.Errorf("exit code %d, stderr %q; want 0 and nothing", code, stderr.String())
	}
	if diff := cmp.Diff(want, stdout.String()); diff != "" {
		t.Errorf("status web-prod (-want +got):\n%s", diff)
	}
}

func TestStatusUsageErrors(t *testing.T) {
	tests := []struct {
		args   []string
		code   int
		stderr string
	}{
		{[]string{"status", "web"}, exitUsage, `onnewimage status: no target "web" in testdata/good.yaml: name one of web-staging, web-prod, worker-local`},
		{[]string{"status", "-o", "yaml"}, exitUsage, "onnewimage status: give at most one target, and -o text or -o json"},
	}
	for _, tt := range tests {
		var stdout, stderr bytes.Buffer
		code := run(tt.args, &stdout, &stderr, env(map[string]string{"TARGETS": "testdata/good.yaml"}))
		if first, _, _ := strings.Cut(stderr.String(), "\n"); code != tt.code || first != tt.stderr {
			t.Errorf("%v: exit %d, stderr %q; want %d, %q", tt.args, code, first, tt.code, tt.stderr)
		}
	}
}
