package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/onnewimage/onnewimage/internal/rollout"
	"github.com/onnewimage/onnewimage/internal/trigger"
)

// canaryCluster is the canary layout in namespace default: web at v1 with 3
// replicas, web-canary at v2 with 1, holding progress when it is not "".
func canaryCluster(progress string) *fake.Clientset {
	deployment := func(name, tag string, replicas int32, annotations map[string]string) *appsv1.Deployment {
		labels := map[string]string{"app": "web", "track": map[bool]string{true: "canary", false: "stable"}[name == "web-canary"]}
		return &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Generation: 1, ResourceVersion: "1", Annotations: annotations},
			Spec: appsv1.DeploymentSpec{Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
					Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "us-docker.pkg.dev/acme/apps/web:" + tag}}}}},
		}
	}
	var annotations map[string]string
	if progress != "" {
		annotations = map[string]string{rollout.AnnotationCanary: progress}
	}
	return fake.NewClientset(deployment("web", "v1", 3, nil), deployment("web-canary", "v2", 1, annotations))
}

func TestAbort(t *testing.T) {
	canary := map[string]string{"KUBECONFIG": "/k", "STRATEGY": "canary", "DEPLOYMENT": "web", "CONTAINER": "web"}
	rolling := map[string]string{"KUBECONFIG": "/k", "DEPLOYMENT": "web", "CONTAINER": "web"}
	const progress = `{"build":"b2","createTime":"2026-01-02T03:04:05Z","image":"us-docker.pkg.dev/acme/apps/web:v2","step":0,"percent":10,"holder":"x","claimedAt":"2026-01-02T03:04:05Z"}`
	tests := []struct {
		name           string
		args           []string
		env            map[string]string
		progress       string
		code           int
		stdout, stderr string
		replicas       int32 // web-canary's afterwards.
	}{
		{"a canary in progress", []string{"abort"}, canary, progress, 0,
			"deployed: aborted the canary of build b2 at 10%: web-canary scaled to 0, traffic back on web; build b2 is recorded as rejected (label onnewimage.dev/rejected-build): it is not deployed again\n", "", 0},
		{"no canary in progress", []string{"abort", "default"}, canary, "", 1, "",
			"onnewimage abort: no canary in progress: deployment default/web-canary records none (annotation onnewimage.dev/canary); nothing was changed\n", 1},
		{"a rolling target", []string{"abort"}, rolling, "", 2, "",
			"onnewimage abort: target default uses the rolling strategy: abort stops a canary in progress (onnewimage rollback takes a rolling or blue-green target back)\n", 1},
		{"too many targets named", []string{"abort", "a", "b"}, canary, progress, 2, "", "onnewimage abort: give at most one target\n", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cs := canaryCluster(tt.progress)
			triggerOptions = trigger.Options{Connector: connector{cs}}
			t.Cleanup(func() { triggerOptions = trigger.Options{} })
			var stdout, stderr bytes.Buffer
			code := run(tt.args, &stdout, &stderr, env(tt.env))
			c, err := cs.AppsV1().Deployments("default").Get(context.Background(), "web-canary", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			gotStderr := stderr.String()
			if i := strings.Index(gotStderr, "Usage:"); i >= 0 {
				gotStderr = gotStderr[:i]
			}
			want := []any{tt.code, tt.stdout, tt.stderr, tt.replicas}
			got := []any{code, stdout.String(), gotStderr, *c.Spec.Replicas}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("onnewimage %s: exit code, stdout, stderr, canary replicas (-want +got):\n%s", strings.Join(tt.args, " "), diff)
			}
		})
	}
}
