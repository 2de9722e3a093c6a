package localcluster

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"
)

// GatewayAPIModule is the module whose standard-channel CRDs (its
// config/crd/standard) every cluster installs, at the version this
// module's go.mod pins: the Gateway API's resources exist, without any
// Gateway controller, so tests read the HTTPRoute weights the function
// writes.
const GatewayAPIModule = "sigs.k8s.io/gateway-api"

var crdsGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

var gatewayCRDs = sync.OnceValues(readGatewayCRDs)

// readGatewayCRDs reads the CustomResourceDefinitions of GatewayAPIModule's
// standard channel from the module cache (go list -m names the directory;
// the build of any package importing the module has filled it).
func readGatewayCRDs() ([]*unstructured.Unstructured, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", GatewayAPIModule).Output()
	if err != nil {
		return nil, fmt.Errorf("locating module %s: %w", GatewayAPIModule, err)
	}
	dir := filepath.Join(strings.TrimSpace(string(out)), "config", "crd", "standard")
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		return nil, fmt.Errorf("no gateway api crds in %s (%v)", dir, err)
	}
	var crds []*unstructured.Unstructured
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		for _, doc := range strings.Split(string(raw), "\n---") {
			js, err := yaml.YAMLToJSON([]byte(doc))
			if err != nil {
				return nil, fmt.Errorf("%s: %w", f, err)
			}
			var u unstructured.Unstructured
			if err := json.Unmarshal(js, &u.Object); err != nil || u.Object == nil {
				continue // An empty document.
			}
			// The safe-upgrades ValidatingAdmissionPolicy guards against
			// installing older or experimental CRDs later: not needed here.
			if u.GetKind() == "CustomResourceDefinition" {
				crds = append(crds, &u)
			}
		}
	}
	return crds, nil
}

// installGatewayAPI creates the Gateway API's CRDs; gatewayAPIEstablished
// waits for them.
func installGatewayAPI(ctx context.Context, client dynamic.Interface) ([]string, error) {
	crds, err := gatewayCRDs()
	if err != nil {
		return nil, err
	}
	var names []string
	for _, crd := range crds {
		if _, err := client.Resource(crdsGVR).Create(ctx, crd.DeepCopy(), metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("creating crd %s: %w", crd.GetName(), err)
		}
		names = append(names, crd.GetName())
	}
	return names, nil
}

// gatewayAPIEstablished watches the CRDs named until each is Established.
func gatewayAPIEstablished(ctx context.Context, client dynamic.Interface, names []string) error {
	pending := map[string]bool{}
	for _, n := range names {
		pending[n] = true
	}
	list, err := client.Resource(crdsGVR).List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	for i := range list.Items {
		if established(&list.Items[i]) {
			delete(pending, list.Items[i].GetName())
		}
	}
	if len(pending) == 0 {
		return nil
	}
	w, err := client.Resource(crdsGVR).Watch(ctx, metav1.ListOptions{ResourceVersion: list.GetResourceVersion()})
	if err != nil {
		return err
	}
	defer w.Stop()
	for ev := range w.ResultChan() {
		if u, ok := ev.Object.(*unstructured.Unstructured); ok && ev.Type != watch.Deleted && established(u) {
			delete(pending, u.GetName())
			if len(pending) == 0 {
				return nil
			}
		}
	}
	return fmt.Errorf("the watch of crds ended with %d not established (%v)", len(pending), ctx.Err())
}

func established(u *unstructured.Unstructured) bool {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == "Established" && m["status"] == "True" {
			return true
		}
	}
	return false
}
