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
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/onnewimage/onnewimage/internal/kube"
	"github.com/onnewimage/onnewimage/internal/kube/kubetest"
	"github.com/onnewimage/onnewimage/internal/trigger"
)

// connector hands out a fake cluster.
type connector struct{ client kubernetes.Interface }

func (c connector) Clientset(context.Context) (kube.Interface, error) {
	return kubetest.Adapt(c.client), nil
}
func (c connector) Forget(error) {}

// blueGreenCluster is a blue-green layout in namespace default: service web
// on green, both colours rolled out, blue running tag and green newer.
func blueGreenCluster(status appsv1.DeploymentStatus) *fake.Clientset {
	colour := func(c, tag string) *appsv1.Deployment {
		labels := map[string]string{"app": "web", "version": c}
		replicas := int32(2)
		return &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: "web-" + c, Namespace: "default", Generation: 1, ResourceVersion: "1"},
			Spec: appsv1.DeploymentSpec{Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
					Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "us-docker.pkg.dev/acme/apps/web:" + tag}}}}},
			Status: status,
		}
	}
	router := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default", ResourceVersion: "1"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web", "version": "green"}}}
	return fake.NewClientset(router, colour("blue", "v1"), colour("green", "v2"))
}

func TestRollback(t *testing.T) {
	available := appsv1.DeploymentStatus{ObservedGeneration: 1, Replicas: 2, UpdatedReplicas: 2, AvailableReplicas: 2}
	unavailable := appsv1.DeploymentStatus{ObservedGeneration: 1, Replicas: 2, UpdatedReplicas: 2, AvailableReplicas: 1}
	blueGreen := map[string]string{"KUBECONFIG": "/k", "STRATEGY": "blue-green", "SERVICE": "web", "DEPLOYMENT": "web", "CONTAINER": "web"}
	rolledBack := "deployed: rolled back service web from green to blue after deployment \"web-blue\" successfully rolled out; it runs us-docker.pkg.dev/acme/apps/web:v1\n"
	tests := []struct {
		name           string
		args           []string
		env            map[string]string
		status         appsv1.DeploymentStatus // The colours'.
		code           int
		stdout, stderr string
		live           string // The colour the router selects afterwards.
	}{
		{"the one target, unnamed", []string{"rollback"}, blueGreen, available, 0, rolledBack, "", "blue"},
		{"the one target, named", []string{"rollback", "default"}, blueGreen, available, 0, rolledBack, "", "blue"},
		{"a dry run", []string{"rollback", "-dry-run"}, blueGreen, available, 0,
			// The fake clientset ignores dry runs: the line is what matters.
			"skipped: dry run: the API server accepted the patches to switch service web from green to blue; nothing was changed or waited for\n", "", "blue"},
		{"an unknown target", []string{"rollback", "web-prod"}, blueGreen, available, 2, "",
			`onnewimage rollback: no target "web-prod" in the single-target variables: name one of default` + "\n", "green"},
		{"several targets, none named", []string{"rollback"}, map[string]string{"TARGETS": "testdata/good.yaml"}, available, 2, "",
			"onnewimage rollback: testdata/good.yaml has 3 targets: name one of web-staging, web-prod, worker-local\n", "green"},
		{"several targets from an env file, an unknown one named", []string{"rollback", "-env-file=testdata/env-targets.yaml", "web"}, nil, available, 2, "",
			`onnewimage rollback: no target "web" in testdata/good.yaml: name one of web-staging, web-prod, worker-local` + "\n", "green"},
		{"bad variables", []string{"rollback"}, map[string]string{"KUBECONFIG": "/k", "STRATEGY": "blue", "DEPLOYMENT": "web", "CONTAINER": "web"}, available, 1, "",
			`onnewimage rollback: invalid configuration: STRATEGY="blue": is not "rolling", "blue-green" or "canary"` + "\n", "green"},
		{"the previous colour never rolls out within -timeout", []string{"rollback", "-timeout=50ms"}, blueGreen, unavailable, 1, "",
			// Within 50ms, not the default 5m: -timeout took effect.
			`onnewimage rollback: release not available in time: web-blue did not become available within 50ms (Waiting for deployment "web-blue" rollout to finish: 1 of 2 updated replicas are available...); traffic was not switched` + "\n", "green"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cs := blueGreenCluster(tt.status)
			triggerOptions = trigger.Options{Connector: connector{cs}}
			t.Cleanup(func() { triggerOptions = trigger.Options{} })
			var stdout, stderr bytes.Buffer
			code := run(tt.args, &stdout, &stderr, env(tt.env))
			svc, err := cs.CoreV1().Services("default").Get(context.Background(), "web", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			want := []any{tt.code, tt.stdout, tt.stderr, tt.live}
			got := []any{code, stdout.String(), stderr.String(), svc.Spec.Selector["version"]}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("onnewimage %s: exit code, stdout, stderr, live colour (-want +got):\n%s", strings.Join(tt.args, " "), diff)
			}
		})
	}
}
