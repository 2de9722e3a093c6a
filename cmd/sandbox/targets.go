package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"cloud.google.com/go/cloudbuild/apiv1/v2/cloudbuildpb"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/onnewimage/onnewimage/internal/testenv/sandbox"
)

// targetsDir holds the -targets layout: the targets file and the prod
// namespace's manifests.
const targetsDir = "internal/testenv/sandbox/testdata/targets/"

// runTargets shows one function serving two targets from a targets file:
// staging (rolling, namespace default) from main, production (blue-green,
// namespace prod) from a release tag.
func runTargets(ctx context.Context, exitAfter bool) error {
	step("starting the sandbox with TARGETS=%sstaging-production.yaml", targetsDir)
	begin := time.Now()
	root, err := filepath.Abs(".")
	if err != nil {
		return err
	}
	opts := sandbox.Options{
		Log:         os.Stdout,
		ResultTopic: resultTopic,
		Manifests:   []string{"k8s/deployment.yaml", "k8s/service.yaml", "k8s/rbac.yaml", targetsDir + "prod.yaml"},
		FunctionEnv: map[string]string{"TARGETS": filepath.Join(root, targetsDir, "staging-production.yaml"),
			// The single-target variables the sandbox sets are unset:
			// TARGETS replaces them.
			"PROJECT": "", "LOCATION": "", "CLUSTER": "", "NAMESPACE": "", "DEPLOYMENT": "", "CONTAINER": "", "IMAGE": ""},
	}
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
	for _, name := range []string{"web-blue", "web-green"} {
		if _, err := sb.WaitRolledOutIn(ctx, "prod", name, nil); err != nil {
			return err
		}
	}
	if err := showTargets(ctx, sb); err != nil {
		return err
	}

	tmpl, err := sandbox.LoadBuild("testdata/builds/web-1-success.json")
	if err != nil {
		return err
	}
	for _, ref := range []struct{ what, branch, tag string }{
		{"a push to branch feature/login: neither target takes it", "feature/login", ""},
		{"a push to main: staging takes it", "main", ""},
		{"release tag v1.0.0: production takes it, blue-green", "", "v1.0.0"},
	} {
		b := sandbox.FromRef(sandbox.FreshBuild(tmpl), ref.branch, ref.tag)
		step("%s (build %s)", ref.what, b.GetId())
		if err := deliverToTargets(ctx, sb, b, "staging", "production"); err != nil {
			return err
		}
		if err := showTargets(ctx, sb); err != nil {
			return err
		}
	}

	step("onnewimage status: what is live where, read with the function's identity")
	out, err := sb.Run(ctx, "onnewimage", opts.FunctionEnv, "status")
	fmt.Print(string(out))
	if err != nil {
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
	fmt.Printf("  kubectl --kubeconfig %s get deployments,services -o wide -A\n", kubeconfig)
	fmt.Printf("  function log: the JSON lines below, as Cloud Logging would show them; -> the results received\n")
	go results.follow(ctx)
	followLog(ctx, sb, printTargetDecision)
	return nil
}

// deliverToTargets publishes b and prints the function's line for each
// target named.
func deliverToTargets(ctx context.Context, sb *sandbox.Sandbox, b *cloudbuildpb.Build, names ...string) error {
	seen := len(sb.Function.Logs())
	if _, err := sb.Publish(ctx, b); err != nil {
		return err
	}
	wait, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	for _, name := range names {
		line, err := sb.Function.WaitLog(wait, seen, func(l map[string]any) bool {
			return l["buildId"] == b.GetId() && l["targetName"] == name
		})
		if err != nil {
			return err
		}
		printTargetDecision(line)
		results.show(ctx, line)
	}
	return nil
}

func printTargetDecision(l map[string]any) {
	fmt.Printf("  %-8v %-9v %-11v %v\n", l["severity"], l["outcome"], l["targetName"], l["reason"])
}

// showTargets prints what each target runs.
func showTargets(ctx context.Context, sb *sandbox.Sandbox) error {
	web, err := sb.Admin.AppsV1().Deployments(sandbox.Namespace).Get(ctx, sandbox.Deployment, metav1.GetOptions{})
	if err != nil {
		return err
	}
	svc, err := sb.Admin.CoreV1().Services("prod").Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		return err
	}
	live := "web-" + svc.Spec.Selector["version"]
	d, err := sb.Admin.AppsV1().Deployments("prod").Get(ctx, live, metav1.GetOptions{})
	if err != nil {
		return err
	}
	fmt.Printf("  staging    default/web runs %s\n", image(web))
	fmt.Printf("  production prod/%s (live) runs %s\n", live, image(d))
	return nil
}
