package onnewimage

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/onnewimage/onnewimage/internal/rollout"
	tgt "github.com/onnewimage/onnewimage/internal/target"
)

// decodeManifests decodes the YAML documents of data strictly into the
// typed objects of client-go's scheme: an unknown kind, an unknown or
// repeated field fails.
func decodeManifests(data []byte) ([]runtime.Object, error) {
	strict := json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme.Scheme, scheme.Scheme,
		json.SerializerOptions{Yaml: true, Strict: true})
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var objs []runtime.Object
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, err
		}
		if len(bytes.TrimSpace(regexp.MustCompile(`(?m)^#.*$`).ReplaceAll(doc, nil))) == 0 {
			continue // Comments only.
		}
		obj, _, err := strict.Decode(doc, nil, nil)
		if err != nil {
			return nil, err
		}
		objs = append(objs, obj)
	}
}

// readManifests decodes the manifests of path strictly.
func readManifests(t *testing.T, path string) []runtime.Object {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := decodeManifests(data)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return objs
}

func TestManifestsDecodeStrictly(t *testing.T) {
	paths, err := filepath.Glob("k8s/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	more, _ := filepath.Glob("k8s/*/*.yaml")
	paths = append(paths, more...)
	if !slices.Contains(paths, "k8s/targets/rbac.yaml") {
		t.Fatalf("k8s/ holds %v, want k8s/targets/rbac.yaml among them", paths)
	}
	for _, path := range paths {
		if objs := readManifests(t, path); len(objs) == 0 {
			t.Errorf("%s: no objects", path)
		}
	}

	// The decoding fails on what kubectl would refuse.
	role := "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: r, namespace: web}\n"
	for name, doc := range map[string]string{
		"an unknown field":          role + "rules:\n  - apiGroups: [apps]\n    resource: [deployments]\n    verbs: [get]\n",
		"a repeated field":          role + "rules: []\nrules: []\n",
		"an unknown kind":           "apiVersion: rbac.authorization.k8s.io/v1\nkind: Rol\nmetadata: {name: r}\n",
		"a value of the wrong type": role + "rules: {verbs: get}\n",
	} {
		if _, err := decodeManifests([]byte(doc)); err == nil {
			t.Errorf("%s: decoded, want an error", name)
		}
	}
}

// roleOf returns the one Role among objs (and its RoleBinding).
func roleOf(t *testing.T, path string) (*rbacv1.Role, *rbacv1.RoleBinding) {
	t.Helper()
	var roles []*rbacv1.Role
	var bindings []*rbacv1.RoleBinding
	for _, obj := range readManifests(t, path) {
		switch o := obj.(type) {
		case *rbacv1.Role:
			roles = append(roles, o)
		case *rbacv1.RoleBinding:
			bindings = append(bindings, o)
		}
	}
	if len(roles) != 1 || len(bindings) != 1 {
		t.Fatalf("%s: %d Roles and %d RoleBindings, want one of each", path, len(roles), len(bindings))
	}
	return roles[0], bindings[0]
}

// needs is the rules a target needs: those of the manifest that the
// end-to-end tests prove sufficient for its strategy (k8s/rbac.yaml for
// rolling, k8s/blue-green/rbac.yaml for blue-green, both for Deployment
// web behind router web), on the target's own objects.
func needs(t *testing.T, target tgt.Target) []rbacv1.PolicyRule {
	t.Helper()
	if target.Strategy != tgt.BlueGreen {
		ref, _ := roleOf(t, "k8s/rbac.yaml")
		rules := ref.DeepCopy().Rules
		for i := range rules {
			rules[i].ResourceNames = []string{target.Deployment}
		}
		return rules
	}
	ref, _ := roleOf(t, "k8s/blue-green/rbac.yaml")
	bg := rollout.BlueGreenTarget{Deployment: target.Deployment}
	var rules []rbacv1.PolicyRule
	for _, r := range ref.DeepCopy().Rules {
		switch {
		case slices.Equal(r.Resources, []string{"deployments"}):
			r.ResourceNames = []string{bg.DeploymentFor(rollout.Blue), bg.DeploymentFor(rollout.Green)}
		case slices.Equal(r.Resources, []string{"services"}) && target.Service != "":
			r.ResourceNames = []string{target.Service}
		case slices.Equal(r.Resources, []string{"ingresses"}) && target.Ingress != "":
			r.ResourceNames = []string{target.Ingress}
		default:
			continue // The router this target does not use.
		}
		rules = append(rules, r)
	}
	return rules
}

// TestTargetsRBAC checks k8s/targets/rbac.yaml against the README's targets
// file: each target on a GKE cluster has a Role in its namespace granting
// exactly what its strategy needs, bound to the same identity as the
// others.
func TestTargetsRBAC(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```yaml\n(targets:\n.*?)```").FindSubmatch(readme)
	if m == nil {
		t.Fatal("README.md has no ```yaml block starting with targets:")
	}
	targets, err := tgt.Decode("README.md", m[1])
	if err != nil {
		t.Fatal(err)
	}

	const label = "onnewimage.dev/target"
	roles := map[string]*rbacv1.Role{}
	bindings := map[string]*rbacv1.RoleBinding{}
	for _, obj := range readManifests(t, "k8s/targets/rbac.yaml") {
		switch o := obj.(type) {
		case *rbacv1.Role:
			roles[o.Labels[label]] = o
		case *rbacv1.RoleBinding:
			bindings[o.Labels[label]] = o
		default:
			t.Errorf("k8s/targets/rbac.yaml holds a %T, want only Roles and RoleBindings", obj)
		}
	}

	var covered []string
	var subjects [][]rbacv1.Subject
	for _, target := range targets {
		if !target.Cluster.GKE() {
			continue // A local cluster: the developer's own rights.
		}
		covered = append(covered, target.Name)
		role, binding := roles[target.Name], bindings[target.Name]
		if role == nil || binding == nil {
			t.Errorf("target %s: no Role and RoleBinding labelled %s=%s", target.Name, label, target.Name)
			continue
		}
		if role.Namespace != target.Namespace || binding.Namespace != target.Namespace {
			t.Errorf("target %s lives in namespace %s; its Role is in %q, its RoleBinding in %q", target.Name, target.Namespace, role.Namespace, binding.Namespace)
		}
		if diff := cmp.Diff(needs(t, target), role.Rules); diff != "" {
			t.Errorf("target %s (%s): Role %s rules (-needed +granted):\n%s", target.Name, target.Strategy, role.Name, diff)
		}
		want := rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name}
		if diff := cmp.Diff(want, binding.RoleRef); diff != "" {
			t.Errorf("target %s: RoleBinding %s roleRef (-want +got):\n%s", target.Name, binding.Name, diff)
		}
		subjects = append(subjects, binding.Subjects)
	}
	if len(covered) < 2 {
		t.Fatalf("the README's targets file has GKE targets %v, want two in two namespaces", covered)
	}
	for name := range roles {
		if !slices.Contains(covered, name) {
			t.Errorf("k8s/targets/rbac.yaml has a Role for %q, which is no GKE target of the README's file %v", name, covered)
		}
	}
	for name := range bindings {
		if !slices.Contains(covered, name) {
			t.Errorf("k8s/targets/rbac.yaml has a RoleBinding for %q, which is no GKE target of the README's file %v", name, covered)
		}
	}
	// The same identity in each namespace: the function's service account.
	_, ref := roleOf(t, "k8s/rbac.yaml")
	for i, s := range subjects {
		if len(s) != 1 || s[0].Kind != ref.Subjects[0].Kind || s[0].APIGroup != ref.Subjects[0].APIGroup ||
			!strings.HasSuffix(s[0].Name, ".iam.gserviceaccount.com") || !cmp.Equal(s, subjects[0]) {
			t.Errorf("target %s binds %+v, want the one service account every target binds (%+v)", covered[i], s, subjects[0])
		}
	}
}
