package kube_test

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestFunctionDoesNotImportClientset keeps client-go's clientset out of
// what ships: importing k8s.io/client-go/kubernetes, or any typed client
// under it, registers about fifty API groups at start-up, which was most of
// the function's cold start (README, Performance). Nor client-go's testing
// package, which its generic clients (gentype) import, and with it
// server-side apply's schemas and OpenAPI models.
func TestFunctionDoesNotImportClientset(t *testing.T) {
	const module = "github.com/onnewimage/onnewimage"
	for _, pkg := range []string{module, module + "/cmd/local", module + "/cmd/onnewimage"} {
		t.Run(pkg, func(t *testing.T) {
			out, err := exec.Command("go", "list", "-deps", pkg).Output()
			if err != nil {
				t.Fatalf("go list -deps %s: %v", pkg, err)
			}
			var got []string
			for _, dep := range strings.Fields(string(out)) {
				if dep == "k8s.io/client-go/kubernetes" || strings.HasPrefix(dep, "k8s.io/client-go/kubernetes/") || dep == "k8s.io/client-go/testing" {
					got = append(got, dep)
				}
			}
			if diff := cmp.Diff([]string(nil), got); diff != "" {
				t.Errorf("go list -deps %s: clientset packages (-want +got):\n%s", pkg, diff)
			}
		})
	}
}
