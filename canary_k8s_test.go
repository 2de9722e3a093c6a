package onnewimage

import (
	"fmt"
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/yaml"
)

// TestCanaryHTTPRouteManifests checks k8s/canary/httproute/: one Service
// per track, named as the canary's router needs (DEPLOYMENT and
// DEPLOYMENT-canary); an HTTPRoute whose one rule sends all traffic to web
// and none to web-canary, attached to the Gateway external, decoded
// strictly; and a Role granting get and patch on that route by name and
// nothing else, bound to the function's identity as in k8s/canary/rbac.yaml.
func TestCanaryHTTPRouteManifests(t *testing.T) {
	selectors := map[string]map[string]string{}
	for _, obj := range readManifests(t, "k8s/canary/httproute/services.yaml") {
		svc, ok := obj.(*corev1.Service)
		if !ok {
			t.Fatalf("services.yaml holds a %T, want only Services", obj)
		}
		selectors[svc.Name] = svc.Spec.Selector
	}
	wantSelectors := map[string]map[string]string{
		"web":        {"app": "web", "track": "stable"},
		"web-canary": {"app": "web", "track": "canary"},
	}
	if diff := cmp.Diff(wantSelectors, selectors); diff != "" {
		t.Errorf("services' selectors (-want +got):\n%s", diff)
	}

	data, err := os.ReadFile("k8s/canary/httproute/httproute.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var route v1.HTTPRoute
	if err := yaml.UnmarshalStrict(data, &route); err != nil {
		t.Fatalf("httproute.yaml: %v", err)
	}
	var got []string
	for _, p := range route.Spec.ParentRefs {
		got = append(got, "parent "+string(p.Name))
	}
	for _, rule := range route.Spec.Rules {
		for _, ref := range rule.BackendRefs {
			w := int32(-1)
			if ref.Weight != nil {
				w = *ref.Weight
			}
			got = append(got, fmt.Sprintf("%s %d", ref.Name, w))
		}
	}
	if diff := cmp.Diff([]string{"parent external", "web 100", "web-canary 0"}, got); diff != "" {
		t.Errorf("httproute web (-want +got):\n%s", diff)
	}
	if route.Name != "web" || route.Namespace != "default" || route.Kind != "HTTPRoute" || route.APIVersion != "gateway.networking.k8s.io/v1" {
		t.Errorf("httproute is %s %s %s/%s, want gateway.networking.k8s.io/v1 HTTPRoute default/web", route.APIVersion, route.Kind, route.Namespace, route.Name)
	}

	role, binding := roleOf(t, "k8s/canary/httproute/rbac.yaml")
	want := []rbacv1.PolicyRule{{APIGroups: []string{"gateway.networking.k8s.io"}, Resources: []string{"httproutes"},
		ResourceNames: []string{"web"}, Verbs: []string{"get", "patch"}}}
	if diff := cmp.Diff(want, role.Rules); diff != "" {
		t.Errorf("role %s rules (-want +got):\n%s", role.Name, diff)
	}
	_, canaryBinding := roleOf(t, "k8s/canary/rbac.yaml")
	if diff := cmp.Diff(canaryBinding.Subjects, binding.Subjects); diff != "" {
		t.Errorf("rolebinding %s subjects, against k8s/canary/rbac.yaml's (-want +got):\n%s", binding.Name, diff)
	}
	if binding.RoleRef.Name != role.Name || binding.Namespace != role.Namespace {
		t.Errorf("rolebinding %s/%s binds role %s, want %s/%s", binding.Namespace, binding.Name, binding.RoleRef.Name, role.Namespace, role.Name)
	}
}
