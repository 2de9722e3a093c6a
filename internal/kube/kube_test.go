package kube_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/onnewimage/onnewimage/internal/kube"
	"github.com/onnewimage/onnewimage/internal/kube/kubetest"
)

// request is what the API server saw of one call.
type request struct {
	Method, URL, Accept, ContentType, Body string
}

// apiserver answers every call with a JSON object of the kind the path
// names (a list for a collection, one ADDED event for a watch, NotFound
// for the name "absent"), and records each request.
type apiserver struct {
	mu   sync.Mutex
	seen []request
}

func (a *apiserver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	a.mu.Lock()
	a.seen = append(a.seen, request{r.Method, r.URL.RequestURI(), r.Header.Get("Accept"), r.Header.Get("Content-Type"), string(body)})
	a.mu.Unlock()

	// /api/v1/namespaces/NS/KIND[/NAME] or /apis/GROUP/v1/namespaces/NS/KIND[/NAME]
	_, path, _ := strings.Cut(r.URL.Path, "/namespaces/prod/")
	kind, name, _ := strings.Cut(path, "/")
	w.Header().Set("Content-Type", "application/json")
	if name == "absent" {
		w.WriteHeader(http.StatusNotFound)
		json.NewEncoder(w).Encode(apierrors.NewNotFound(schema.GroupResource{Resource: kind}, name).Status())
		return
	}
	if name == "" && r.Method == http.MethodPost {
		name = "created"
	}
	meta := metav1.ObjectMeta{Name: name, Namespace: "prod", ResourceVersion: "7"}
	obj := map[string]runtime.Object{
		"deployments": &appsv1.Deployment{TypeMeta: metav1.TypeMeta{Kind: "Deployment", APIVersion: "apps/v1"}, ObjectMeta: meta},
		"replicasets": &appsv1.ReplicaSet{TypeMeta: metav1.TypeMeta{Kind: "ReplicaSet", APIVersion: "apps/v1"}, ObjectMeta: meta},
		"jobs":        &batchv1.Job{TypeMeta: metav1.TypeMeta{Kind: "Job", APIVersion: "batch/v1"}, ObjectMeta: meta},
		"cronjobs":    &batchv1.CronJob{TypeMeta: metav1.TypeMeta{Kind: "CronJob", APIVersion: "batch/v1"}, ObjectMeta: meta},
		"pods":        &corev1.Pod{TypeMeta: metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"}, ObjectMeta: meta},
		"services":    &corev1.Service{TypeMeta: metav1.TypeMeta{Kind: "Service", APIVersion: "v1"}, ObjectMeta: meta},
		"ingresses":   &networkingv1.Ingress{TypeMeta: metav1.TypeMeta{Kind: "Ingress", APIVersion: "networking.k8s.io/v1"}, ObjectMeta: meta},
		"httproutes":  &gatewayv1.HTTPRoute{TypeMeta: metav1.TypeMeta{Kind: "HTTPRoute", APIVersion: "gateway.networking.k8s.io/v1"}, ObjectMeta: meta},
	}[kind]
	switch {
	case name != "" || r.Method != http.MethodGet:
		json.NewEncoder(w).Encode(obj)
	case r.URL.Query().Get("watch") == "true":
		json.NewEncoder(w).Encode(map[string]any{"type": "ADDED", "object": obj})
	default:
		gvk := obj.GetObjectKind().GroupVersionKind()
		list := map[string]any{"kind": gvk.Kind + "List", "apiVersion": gvk.GroupVersion().String(), "metadata": map[string]any{"resourceVersion": "9"}, "items": []any{obj}}
		json.NewEncoder(w).Encode(list)
	}
}

// TestSameCallsAsTheClientset checks that every method of kube.Interface
// sends the API server what client-go's clientset sends (method, path,
// query, content negotiation, body) and reads the answer into the same
// result.
func TestSameCallsAsTheClientset(t *testing.T) {
	ctx := context.Background()
	one := int64(30)
	calls := []struct {
		name string
		call func(kube.Interface) (any, error)
	}{
		{"deployments get", func(c kube.Interface) (any, error) {
			return c.AppsV1().Deployments("prod").Get(ctx, "web", metav1.GetOptions{ResourceVersion: "3"})
		}},
		{"deployments get absent", func(c kube.Interface) (any, error) {
			_, err := c.AppsV1().Deployments("prod").Get(ctx, "absent", metav1.GetOptions{})
			return apierrors.IsNotFound(err), err
		}},
		{"deployments patch", func(c kube.Interface) (any, error) {
			return c.AppsV1().Deployments("prod").Patch(ctx, "web", types.StrategicMergePatchType, []byte(`{"spec":{"replicas":0}}`),
				metav1.PatchOptions{FieldManager: "onnewimage", DryRun: []string{metav1.DryRunAll}})
		}},
		{"deployments watch", func(c kube.Interface) (any, error) {
			return events(c.AppsV1().Deployments("prod").Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=web", ResourceVersion: "7", TimeoutSeconds: &one}))
		}},
		{"replicasets list", func(c kube.Interface) (any, error) {
			return c.AppsV1().ReplicaSets("prod").List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		}},
		{"jobs create", func(c kube.Interface) (any, error) {
			return c.BatchV1().Jobs("prod").Create(ctx, &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "gate"}}, metav1.CreateOptions{FieldManager: "onnewimage"})
		}},
		{"jobs get", func(c kube.Interface) (any, error) {
			return c.BatchV1().Jobs("prod").Get(ctx, "gate", metav1.GetOptions{})
		}},
		{"jobs watch", func(c kube.Interface) (any, error) {
			return events(c.BatchV1().Jobs("prod").Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=gate"}))
		}},
		{"cronjobs get", func(c kube.Interface) (any, error) {
			return c.BatchV1().CronJobs("prod").Get(ctx, "smoke", metav1.GetOptions{})
		}},
		{"pods list", func(c kube.Interface) (any, error) {
			return c.CoreV1().Pods("prod").List(ctx, metav1.ListOptions{LabelSelector: "app=web", TimeoutSeconds: &one})
		}},
		{"pods watch", func(c kube.Interface) (any, error) {
			return events(c.CoreV1().Pods("prod").Watch(ctx, metav1.ListOptions{LabelSelector: "app=web", ResourceVersion: "9"}))
		}},
		{"services get", func(c kube.Interface) (any, error) {
			return c.CoreV1().Services("prod").Get(ctx, "web", metav1.GetOptions{})
		}},
		{"services patch", func(c kube.Interface) (any, error) {
			return c.CoreV1().Services("prod").Patch(ctx, "web", types.StrategicMergePatchType, []byte(`{"spec":{"selector":{"colour":"green"}}}`), metav1.PatchOptions{FieldManager: "onnewimage"})
		}},
		{"ingresses get", func(c kube.Interface) (any, error) {
			return c.NetworkingV1().Ingresses("prod").Get(ctx, "web", metav1.GetOptions{})
		}},
		{"ingresses patch", func(c kube.Interface) (any, error) {
			return c.NetworkingV1().Ingresses("prod").Patch(ctx, "web", types.MergePatchType, []byte(`{}`), metav1.PatchOptions{})
		}},
		{"httproutes get", func(c kube.Interface) (any, error) {
			return c.GatewayV1().HTTPRoutes("prod").Get(ctx, "web", metav1.GetOptions{})
		}},
		{"httproutes get absent", func(c kube.Interface) (any, error) {
			_, err := c.GatewayV1().HTTPRoutes("prod").Get(ctx, "absent", metav1.GetOptions{})
			return apierrors.IsNotFound(err), err
		}},
		{"httproutes list", func(c kube.Interface) (any, error) {
			return c.GatewayV1().HTTPRoutes("prod").List(ctx, metav1.ListOptions{FieldSelector: "metadata.name=web"})
		}},
		{"httproutes patch", func(c kube.Interface) (any, error) {
			return c.GatewayV1().HTTPRoutes("prod").Patch(ctx, "web", types.JSONPatchType,
				[]byte(`[{"op":"replace","path":"/metadata/resourceVersion","value":"7"}]`), metav1.PatchOptions{FieldManager: "onnewimage"})
		}},
	}

	type outcome struct {
		Result any
		Err    string
		Seen   []request
	}
	run := func(t *testing.T, newClient func(*rest.Config) (kube.Interface, error)) map[string]outcome {
		api := &apiserver{}
		srv := httptest.NewServer(api)
		t.Cleanup(srv.Close)
		c, err := newClient(&rest.Config{Host: srv.URL, UserAgent: "onnewimage"})
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]outcome{}
		for _, tc := range calls {
			api.mu.Lock()
			api.seen = nil
			api.mu.Unlock()
			res, err := tc.call(c)
			o := outcome{Result: res}
			if err != nil {
				o.Err = err.Error()
			}
			api.mu.Lock()
			o.Seen = api.seen
			api.mu.Unlock()
			got[tc.name] = o
		}
		return got
	}
	want := run(t, func(cfg *rest.Config) (kube.Interface, error) {
		cs, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			return nil, err
		}
		gw, err := gatewayclient.NewForConfig(cfg)
		return kubetest.Adapt(cs, gw), err
	})
	got := run(t, kube.NewForConfig)
	for _, tc := range calls {
		if len(want[tc.name].Seen) != 1 {
			t.Fatalf("%s: the clientset sent %d requests, want 1: %+v", tc.name, len(want[tc.name].Seen), want[tc.name].Seen)
		}
		if diff := cmp.Diff(want[tc.name], got[tc.name]); diff != "" {
			t.Errorf("%s: kube.NewForConfig vs kubernetes.NewForConfig (-want +got):\n%s", tc.name, diff)
		}
	}
}

// events drains w, which the server ends after its one event.
func events(w watch.Interface, err error) ([]string, error) {
	if err != nil {
		return nil, err
	}
	defer w.Stop()
	var got []string
	for ev := range w.ResultChan() {
		got = append(got, fmt.Sprintf("%s %T %v", ev.Type, ev.Object, ev.Object))
	}
	return got, nil
}
