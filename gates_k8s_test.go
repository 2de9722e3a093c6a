package onnewimage

import (
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
)

// TestGatesManifests checks k8s/gates/: the sample gates are suspended
// templates with a container named like the sample app's (web), and the
// Role grants exactly what the end-to-end tests prove is needed: get on
// those CronJobs by name, create, get and watch on Jobs, list on pods,
// bound to the function's identity as in k8s/rbac.yaml.
func TestGatesManifests(t *testing.T) {
	var names []string
	for _, obj := range readManifests(t, "k8s/gates/cronjobs.yaml") {
		cj, ok := obj.(*batchv1.CronJob)
		if !ok {
			t.Fatalf("k8s/gates/cronjobs.yaml holds a %T, want only CronJobs", obj)
		}
		names = append(names, cj.Name)
		spec := cj.Spec.JobTemplate.Spec
		if cj.Spec.Suspend == nil || !*cj.Spec.Suspend {
			t.Errorf("cronjob %s is not suspended: it would run on its schedule", cj.Name)
		}
		if spec.BackoffLimit == nil || *spec.BackoffLimit != 0 || spec.Template.Spec.RestartPolicy != "Never" {
			t.Errorf("cronjob %s: backoffLimit %v, restartPolicy %q; want 0 and Never (a failed gate is reported, not retried)",
				cj.Name, spec.BackoffLimit, spec.Template.Spec.RestartPolicy)
		}
		if !slices.ContainsFunc(spec.Template.Spec.Containers, func(c corev1.Container) bool { return c.Name == "web" }) {
			t.Errorf("cronjob %s has no container web, which runs the release", cj.Name)
		}
	}
	role, binding := roleOf(t, "k8s/gates/rbac.yaml")
	want := []rbacv1.PolicyRule{
		{APIGroups: []string{"batch"}, Resources: []string{"cronjobs"}, ResourceNames: names, Verbs: []string{"get"}},
		{APIGroups: []string{"batch"}, Resources: []string{"jobs"}, Verbs: []string{"create", "get", "watch"}},
		{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"list"}},
	}
	if diff := cmp.Diff(want, role.Rules); diff != "" {
		t.Errorf("k8s/gates/rbac.yaml rules (-want +got):\n%s", diff)
	}
	_, ref := roleOf(t, "k8s/rbac.yaml")
	if diff := cmp.Diff(ref.Subjects, binding.Subjects); diff != "" {
		t.Errorf("k8s/gates/rbac.yaml binds other subjects than k8s/rbac.yaml (-want +got):\n%s", diff)
	}
	if binding.RoleRef.Name != role.Name || binding.Namespace != role.Namespace {
		t.Errorf("binding %s/%s refers to %s, want role %s/%s", binding.Namespace, binding.Name, binding.RoleRef.Name, role.Namespace, role.Name)
	}
}
