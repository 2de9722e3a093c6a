package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"strings"
	"time"

	"cloud.google.com/go/cloudbuild/apiv1/v2/cloudbuildpb"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/onnewimage/onnewimage/internal/rollout"
	"github.com/onnewimage/onnewimage/internal/testenv/localcluster"
	"github.com/onnewimage/onnewimage/internal/testenv/sandbox"
)

// canaryEnv is the function's configuration in -canary mode: the default
// steps (10%, 50%), each held 5 s so that the demonstration is short, within
// the budget (a minute + 2 × (ROLLOUT_TIMEOUT + CANARY_PAUSE) +
// ROLLOUT_TIMEOUT).
var canaryEnv = map[string]string{"STRATEGY": "canary", "CANARY_STEPS": "10,50", "CANARY_PAUSE": "5s", "ROLLOUT_TIMEOUT": "1m"}

// canaryCrash is the message of the canary container made to crash.
const canaryCrash = "panic: nil map write in handler /checkout"

// runCanary shows canary releases on the k8s/canary/ layout: one release
// stepping 10% -> 50% -> promoted, then one whose canary pod restarts and is
// aborted, the stable Deployment untouched. With httpRoute, the HTTPRoute of
// k8s/canary/httproute/ splits the traffic, and its weights are shown too.
func runCanary(ctx context.Context, exitAfter, httpRoute bool) error {
	opts := sandbox.Options{
		Log:         os.Stdout,
		ResultTopic: resultTopic,
		Manifests:   []string{"k8s/canary/deployments.yaml", "k8s/canary/service.yaml", "k8s/canary/rbac.yaml"},
		FunctionEnv: canaryEnv,
	}
	if httpRoute {
		opts.Manifests = []string{"k8s/canary/deployments.yaml", "k8s/canary/httproute/services.yaml", "k8s/canary/httproute/httproute.yaml",
			"k8s/canary/rbac.yaml", "k8s/canary/httproute/rbac.yaml"}
		opts.FunctionEnv = maps.Clone(canaryEnv)
		opts.FunctionEnv["HTTPROUTE"] = "web"
		step("starting the sandbox with k8s/canary/, k8s/canary/httproute/ and STRATEGY=canary HTTPROUTE=web CANARY_PAUSE=%s", canaryEnv["CANARY_PAUSE"])
	} else {
		step("starting the sandbox with k8s/canary/ and STRATEGY=canary CANARY_PAUSE=%s", canaryEnv["CANARY_PAUSE"])
	}
	begin := time.Now()
	sb, stop, err := start(ctx, opts, begin)
	if err != nil {
		return err
	}
	defer stop()
	if err := subscribe(ctx, sb); err != nil {
		return err
	}
	if _, err := sb.WaitRolledOut(ctx, sandbox.Deployment, nil); err != nil {
		return err
	}

	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	if err := watchCanary(watchCtx, sb); err != nil {
		return err
	}
	if httpRoute {
		if err := watchRoute(watchCtx, sb); err != nil {
			return err
		}
	}

	b1, err := sandbox.LoadBuild("testdata/builds/web-1-success.json")
	if err != nil {
		return err
	}
	step("build %s (commit %.7s) arrives on cloud-builds: canary 10%%, then 50%%, each held %s, then promoted",
		b1.GetId(), b1.GetSubstitutions()["COMMIT_SHA"], canaryEnv["CANARY_PAUSE"])
	if err := deliver(ctx, sb, sandbox.WithStatus(b1, cloudbuildpb.Build_QUEUED), sandbox.WithStatus(b1, cloudbuildpb.Build_WORKING), b1); err != nil {
		return err
	}
	if _, err := sb.WaitRolledOut(ctx, sandbox.Deployment, nil); err != nil {
		return err
	}

	step("a release whose canary crashes (kwok restarts the containers of pods labelled %s=true)", localcluster.RestartLabel)
	if err := editCanaryTemplate(ctx, sb, `{"`+localcluster.RestartLabel+`":"true"}`, `{"`+localcluster.TerminationMessageAnnotation+`":"`+canaryCrash+`"}`); err != nil {
		return err
	}
	b2, err := sandbox.LoadBuild("testdata/builds/web-2-success.json")
	if err != nil {
		return err
	}
	step("build %s (commit %.7s) arrives on cloud-builds", b2.GetId(), b2.GetSubstitutions()["COMMIT_SHA"])
	if err := deliver(ctx, sb, sandbox.WithStatus(b2, cloudbuildpb.Build_QUEUED), sandbox.WithStatus(b2, cloudbuildpb.Build_WORKING), b2); err != nil {
		return err
	}
	if _, err := sb.WaitFor(ctx, "web-canary", func(d *appsv1.Deployment) bool { return d.Status.Replicas == 0 }); err != nil {
		return err
	}
	stopWatch()
	web, err := sb.Admin.AppsV1().Deployments(sandbox.Namespace).Get(ctx, sandbox.Deployment, metav1.GetOptions{})
	if err != nil {
		return err
	}
	fmt.Printf("  stable untouched: web runs %s (build %s recorded as rejected)\n", shortImage(image(web)), web.Labels[rollout.LabelRejectedBuild])

	step("the rejected build delivered again: it does not start again")
	if err := deliver(ctx, sb, b2); err != nil {
		return err
	}
	step("the crash fixed (kubectl edit deployment web-canary): the next build can go through")
	if err := editCanaryTemplate(ctx, sb, `{"`+localcluster.RestartLabel+`":null}`, `{"`+localcluster.TerminationMessageAnnotation+`":null}`); err != nil {
		return err
	}

	if exitAfter {
		return nil
	}
	kubeconfig, err := writeKubeconfig(sb)
	if err != nil {
		return err
	}
	step("the sandbox stays up until Ctrl-C")
	fmt.Printf("  kubectl --kubeconfig %s get deployments,pods -L track -o wide\n", kubeconfig)
	fmt.Printf("  PUBSUB_EMULATOR_HOST=%s CLOUDBUILD_EMULATOR_HOST=%s go run ./cmd/sandbox publish     # a new build, released as a canary\n", sb.PubSub.Host, sb.CloudBuild.Addr)
	fmt.Printf("  function log: the JSON lines below, as Cloud Logging would show them; -> the results received\n")
	if err := watchCanary(ctx, sb); err != nil {
		return err
	}
	if httpRoute {
		if err := watchRoute(ctx, sb); err != nil {
			return err
		}
	}
	go results.follow(ctx)
	followLog(ctx, sb, printDecision)
	return nil
}

// editCanaryTemplate patches the labels and annotations (JSON objects) of
// web-canary's pod template.
func editCanaryTemplate(ctx context.Context, sb *sandbox.Sandbox, labels, annotations string) error {
	patch := `{"spec":{"template":{"metadata":{"labels":` + labels + `,"annotations":` + annotations + `}}}}`
	_, err := sb.Admin.AppsV1().Deployments(sandbox.Namespace).Patch(ctx, "web-canary", types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{})
	return err
}

// watchCanary prints, from a watch until ctx ends, the canary's step and the
// replicas and images of web-canary and web each time one of them changes.
func watchCanary(ctx context.Context, sb *sandbox.Sandbox) error {
	deployments := sb.Admin.AppsV1().Deployments(sandbox.Namespace)
	list, err := deployments.List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	w, err := deployments.Watch(ctx, metav1.ListOptions{ResourceVersion: list.ResourceVersion})
	if err != nil {
		return err
	}
	seen := map[string]*appsv1.Deployment{}
	for i := range list.Items {
		seen[list.Items[i].Name] = &list.Items[i]
	}
	printChanges(ctx, w, canaryState(seen), func(obj runtime.Object) (string, bool) {
		d, isDeployment := obj.(*appsv1.Deployment)
		if !isDeployment {
			return "", false
		}
		seen[d.Name] = d
		return canaryState(seen), true
	})
	return nil
}

// printChanges prints first, then, from w until ctx ends, the line state
// makes of each event's object whenever it differs from the last printed.
func printChanges(ctx context.Context, w watch.Interface, first string, state func(runtime.Object) (string, bool)) {
	fmt.Println("  " + first)
	go func() {
		defer w.Stop()
		last := first
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-w.ResultChan():
				if !ok {
					return
				}
				if s, ok := state(ev.Object); ok && s != last {
					last = s
					fmt.Println("  " + s)
				}
			}
		}
	}()
}

// watchRoute prints, from a watch until ctx ends, the weights of the
// HTTPRoute web each time they change.
func watchRoute(ctx context.Context, sb *sandbox.Sandbox) error {
	gw, err := gatewayclient.NewForConfig(sb.Cluster.AdminConfig())
	if err != nil {
		return err
	}
	routes := gw.GatewayV1().HTTPRoutes(sandbox.Namespace)
	route, err := routes.Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		return err
	}
	w, err := routes.Watch(ctx, metav1.ListOptions{ResourceVersion: route.ResourceVersion,
		FieldSelector: fields.OneTermEqualSelector("metadata.name", "web").String()})
	if err != nil {
		return err
	}
	printChanges(ctx, w, routeWeights(route), func(obj runtime.Object) (string, bool) {
		r, isRoute := obj.(*gatewayv1.HTTPRoute)
		if !isRoute {
			return "", false
		}
		return routeWeights(r), true
	})
	return nil
}

// routeWeights says how route weighs its backends, rule by rule:
// "httproute web: web 90, web-canary 10".
func routeWeights(route *gatewayv1.HTTPRoute) string {
	var rules []string
	for _, rule := range route.Spec.Rules {
		var refs []string
		for _, ref := range rule.BackendRefs {
			w := int32(1)
			if ref.Weight != nil {
				w = *ref.Weight
			}
			refs = append(refs, fmt.Sprintf("%s %d", ref.Name, w))
		}
		rules = append(rules, strings.Join(refs, ", "))
	}
	return "httproute " + route.Name + ": " + strings.Join(rules, "; ")
}

// canaryState says where the canary stands: its step (from the progress
// onNewImage records on web-canary), and each Deployment's replicas, ready
// replicas (more than replicas while a rolling update surges) and image.
func canaryState(seen map[string]*appsv1.Deployment) string {
	c, s := seen["web-canary"], seen[sandbox.Deployment]
	if c == nil || s == nil {
		return "web or web-canary is missing"
	}
	at := "no canary"
	var p struct {
		Percent int `json:"percent"`
	}
	if raw := c.Annotations[rollout.AnnotationCanary]; raw != "" && json.Unmarshal([]byte(raw), &p) == nil {
		at = fmt.Sprintf("canary at %d%%", p.Percent)
	}
	return fmt.Sprintf("%-15s web-canary replicas=%d ready=%d %-34s web replicas=%d ready=%d %s", at+":",
		*c.Spec.Replicas, c.Status.ReadyReplicas, shortImage(image(c)), *s.Spec.Replicas, s.Status.ReadyReplicas, shortImage(image(s)))
}

// shortImage is image without its registry path, and its digest cut to 12
// hex digits.
func shortImage(image string) string {
	image = image[strings.LastIndex(image, "/")+1:]
	if i := strings.Index(image, "@sha256:"); i >= 0 && len(image) > i+20 {
		image = image[:i+20] + "…"
	}
	return image
}
