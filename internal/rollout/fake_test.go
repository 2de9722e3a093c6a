package rollout

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/onnewimage/onnewimage/internal/testenv/fakekube"
)

// newClientset is fakekube.NewClientset: every write bumps the
// resourceVersion, and a stale precondition is a Conflict.
func newClientset(t *testing.T, objs ...runtime.Object) *fake.Clientset {
	return fakekube.NewClientset(t, objs...)
}

// bump is fakekube.Bump: another writer's write.
var bump = fakekube.Bump

func mustMeta(o runtime.Object) metav1.Object {
	m, err := meta.Accessor(o)
	if err != nil {
		panic(err)
	}
	return m
}

// deployment returns a Deployment with one container "web" running img.
func deployment(name, img string, annotations map[string]string) *appsv1.Deployment {
	replicas := int32(2)
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "prod", Annotations: annotations, Generation: 1},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{
					{Name: "sidecar", Image: "gcr.io/p/proxy:1"},
					{Name: "web", Image: img},
				}},
			},
		},
	}
}
