package kube_test

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// forbidden are packages, by import path prefix, that what ships must not
// import, because their initialisers cost every cold start (README,
// Performance).
var forbidden = []string{
	// client-go's clientset, or any typed client under it: importing one
	// registers about fifty API groups at start-up, which was most of the
	// function's cold start. kube.Interface replaces it.
	"k8s.io/client-go/kubernetes",
	// client-go's testing package, which its generic clients (gentype)
	// import, and with it server-side apply's schemas and OpenAPI models.
	"k8s.io/client-go/testing",
	// OpenCensus, which Pub/Sub's high-level client imports for its
	// metrics; result publishes through the generated client instead.
	"go.opencensus.io",
}

// TestShippedImports checks that the function, cmd/local and cmd/onnewimage
// import none of the forbidden packages.
func TestShippedImports(t *testing.T) {
	const module = "github.com/onnewimage/onnewimage"
	for _, pkg := range []string{module, module + "/cmd/local", module + "/cmd/onnewimage"} {
		t.Run(pkg, func(t *testing.T) {
			out, err := exec.Command("go", "list", "-deps", pkg).Output()
			if err != nil {
				t.Fatalf("go list -deps %s: %v", pkg, err)
			}
			var got []string
			for _, dep := range strings.Fields(string(out)) {
				for _, f := range forbidden {
					if dep == f || strings.HasPrefix(dep, f+"/") {
						got = append(got, dep)
					}
				}
			}
			if diff := cmp.Diff([]string(nil), got); diff != "" {
				t.Errorf("go list -deps %s: forbidden packages (-want +got):\n%s", pkg, diff)
			}
		})
	}
}
