package main

import (
	"context"
	"fmt"
	"sort"

	"cloud.google.com/go/cloudbuild/apiv1/v2/cloudbuildpb"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/onnewimage/onnewimage/internal/rollout"
	"github.com/onnewimage/onnewimage/internal/testenv/localcluster"
	"github.com/onnewimage/onnewimage/internal/testenv/sandbox"
)

// smokeFailure is the termination message of the smoke test made to fail.
const smokeFailure = "GET http://web-blue-svc/healthz: 503 Service Unavailable"

// showGates prints the gate Jobs made for a build, in the order they ran.
func showGates(ctx context.Context, sb *sandbox.Sandbox, build string) error {
	list, err := sb.Admin.BatchV1().Jobs(sandbox.Namespace).List(ctx, metav1.ListOptions{LabelSelector: rollout.LabelGateBuild + "=" + build})
	if err != nil {
		return err
	}
	jobs := list.Items
	sort.Slice(jobs, func(i, j int) bool { return jobs[i].CreationTimestamp.Before(&jobs[j].CreationTimestamp) })
	for _, j := range jobs {
		state := "running"
		for _, c := range j.Status.Conditions {
			if c.Status == corev1.ConditionTrue && (c.Type == batchv1.JobComplete || c.Type == batchv1.JobFailed) {
				state = string(c.Type)
			}
		}
		var env []string
		for _, c := range j.Spec.Template.Spec.Containers {
			for _, e := range c.Env {
				if e.Name == rollout.EnvService {
					env = append(env, e.Name+"="+e.Value)
				}
			}
		}
		fmt.Printf("  gate: job %s from cronjob %s: %s %v\n", j.Name, j.Labels[rollout.LabelGate], state, env)
	}
	return nil
}

// failSmokeTest makes the smoke test fail (as an operator's broken release
// would), delivers a new build, shows that it never gets traffic, and puts
// the smoke test back.
func failSmokeTest(ctx context.Context, sb *sandbox.Sandbox) error {
	step("a release whose smoke test fails: its pods answer 503 (kwok fails pods labelled %s)", localcluster.FailLabel)
	edit := func(patch string) error {
		_, err := sb.Admin.BatchV1().CronJobs(sandbox.Namespace).Patch(ctx, "web-smoke", types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{})
		return err
	}
	if err := edit(`{"spec":{"jobTemplate":{"spec":{"template":{"metadata":{"labels":{"` + localcluster.FailLabel + `":"true"},"annotations":{"` +
		localcluster.TerminationMessageAnnotation + `":"` + smokeFailure + `"}}}}}}}`); err != nil {
		return err
	}
	tmpl, err := sandbox.LoadBuild("testdata/builds/web-3-success.json")
	if err != nil {
		return err
	}
	b := sandbox.FreshBuild(tmpl)
	step("build %s (commit %.7s) arrives on cloud-builds", b.GetId(), b.GetSubstitutions()["COMMIT_SHA"])
	if err := deliver(ctx, sb, sandbox.WithStatus(b, cloudbuildpb.Build_QUEUED), sandbox.WithStatus(b, cloudbuildpb.Build_WORKING), b); err != nil {
		return err
	}
	if err := showGates(ctx, sb, b.GetId()); err != nil {
		return err
	}
	if err := showRouter(ctx, sb); err != nil {
		return err
	}
	step("the rejected build delivered again: no gate runs again, nothing moves")
	if err := deliver(ctx, sb, b); err != nil {
		return err
	}
	step("the smoke test fixed (kubectl edit cronjob web-smoke): the next build goes through")
	return edit(`{"spec":{"jobTemplate":{"spec":{"template":{"metadata":{"labels":{"` + localcluster.FailLabel + `":null},"annotations":{"` +
		localcluster.TerminationMessageAnnotation + `":null}}}}}}}`)
}
