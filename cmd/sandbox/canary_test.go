package main

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/onnewimage/onnewimage/internal/rollout"
)

func TestCanaryState(t *testing.T) {
	deployment := func(name, image, progress string, replicas, ready int32) *appsv1.Deployment {
		d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: name}}
		if progress != "" {
			d.Annotations = map[string]string{rollout.AnnotationCanary: progress}
		}
		d.Spec.Replicas = &replicas
		d.Spec.Template.Spec.Containers = []corev1.Container{{Name: "web", Image: image}}
		d.Status.ReadyReplicas = ready
		return d
	}
	const (
		initial = "us-docker.pkg.dev/demo-project/apps/web:initial"
		release = "us-docker.pkg.dev/demo-project/apps/web:a1b2c3d@sha256:4edb907ab84acf0d0ee47f6fa49b6dbc2725c7cc0205d2b249c17a64779b5eba"
	)
	tests := []struct {
		name string
		seen map[string]*appsv1.Deployment
		want string
	}{
		{
			name: "between releases",
			seen: map[string]*appsv1.Deployment{"web": deployment("web", initial, "", 3, 3), "web-canary": deployment("web-canary", initial, "", 0, 0)},
			want: "no canary:      web-canary replicas=0 ready=0 web:initial                        web replicas=3 ready=3 web:initial",
		},
		{
			name: "at a step",
			seen: map[string]*appsv1.Deployment{"web": deployment("web", initial, "", 3, 3),
				"web-canary": deployment("web-canary", release, `{"build":"b1","step":0,"percent":10}`, 1, 0)},
			want: "canary at 10%:  web-canary replicas=1 ready=0 web:a1b2c3d@sha256:4edb907ab84a…   web replicas=3 ready=3 web:initial",
		},
		{
			name: "canary missing",
			seen: map[string]*appsv1.Deployment{"web": deployment("web", initial, "", 3, 3)},
			want: "web or web-canary is missing",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, canaryState(tt.seen)); diff != "" {
				t.Errorf("canaryState (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRouteWeights(t *testing.T) {
	w := func(n int32) *int32 { return &n }
	ref := func(name string, weight *int32) gatewayv1.HTTPBackendRef {
		return gatewayv1.HTTPBackendRef{BackendRef: gatewayv1.BackendRef{
			BackendObjectReference: gatewayv1.BackendObjectReference{Name: gatewayv1.ObjectName(name)}, Weight: weight}}
	}
	route := &gatewayv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Name: "web"}, Spec: gatewayv1.HTTPRouteSpec{Rules: []gatewayv1.HTTPRouteRule{
		{BackendRefs: []gatewayv1.HTTPBackendRef{ref("web", w(90)), ref("web-canary", w(10))}},
		{BackendRefs: []gatewayv1.HTTPBackendRef{ref("api", nil)}},
	}}}
	if diff := cmp.Diff("httproute web: web 90, web-canary 10; api 1", routeWeights(route)); diff != "" {
		t.Errorf("routeWeights (-want +got):\n%s", diff)
	}
}
