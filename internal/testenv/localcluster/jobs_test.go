package localcluster

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"
)

// TestJobs checks that the Job controller runs and that kwok ends a Job's
// pod as its labels say: completed, failed with a termination message, or
// held running until the label goes.
func TestJobs(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real control plane; skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	c, err := Start(ctx, Options{Log: testLog{t}})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { checkStop(t, c) })
	admin, err := kubernetes.NewForConfig(c.AdminConfig())
	if err != nil {
		t.Fatal(err)
	}
	jobs := admin.BatchV1().Jobs("default")
	create := func(name string, labels, annotations map[string]string) {
		t.Helper()
		backoff := int32(0)
		job := &batchv1.Job{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: batchv1.JobSpec{
				BackoffLimit: &backoff,
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: annotations},
					Spec: corev1.PodSpec{
						RestartPolicy: corev1.RestartPolicyNever,
						Containers:    []corev1.Container{{Name: "migrate", Image: "example.com/web:v1"}},
					},
				},
			},
		}
		if _, err := jobs.Create(ctx, job, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// finished waits for the Job's Complete or Failed condition.
	finished := func(name string) batchv1.JobConditionType {
		t.Helper()
		wait, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		lw := cache.NewListWatchFromClient(admin.BatchV1().RESTClient(), "jobs", "default", fields.OneTermEqualSelector("metadata.name", name))
		var got batchv1.JobConditionType
		_, err := watchtools.UntilWithSync(wait, lw, &batchv1.Job{}, nil, func(ev watch.Event) (bool, error) {
			j, ok := ev.Object.(*batchv1.Job)
			if !ok {
				return false, nil
			}
			for _, cond := range j.Status.Conditions {
				if cond.Status == corev1.ConditionTrue && (cond.Type == batchv1.JobComplete || cond.Type == batchv1.JobFailed) {
					got = cond.Type
					return true, nil
				}
			}
			return false, nil
		})
		if err != nil {
			t.Fatalf("waiting for job %s to finish: %v", name, err)
		}
		return got
	}
	// terminated is how the Job's pods' containers ended.
	terminated := func(name string) []string {
		t.Helper()
		pods, err := admin.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "batch.kubernetes.io/job-name=" + name})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, p := range pods.Items {
			for _, cs := range p.Status.ContainerStatuses {
				if term := cs.State.Terminated; term != nil {
					out = append(out, string(p.Status.Phase)+" "+cs.Name+" "+term.Reason+" "+strings.TrimSpace(term.Message))
				}
			}
		}
		return out
	}

	create("completes", nil, nil)
	create("fails", map[string]string{FailLabel: "true"}, map[string]string{TerminationMessageAnnotation: "relation \"orders\" already exists"})
	create("held", map[string]string{HoldLabel: "true"}, nil)

	if got := finished("completes"); got != batchv1.JobComplete {
		t.Errorf("job completes: %s, want Complete", got)
	}
	if diff := cmp.Diff([]string{"Succeeded migrate Completed "}, terminated("completes")); diff != "" {
		t.Errorf("completes' pods (-want +got):\n%s", diff)
	}
	if got := finished("fails"); got != batchv1.JobFailed {
		t.Errorf("job fails: %s, want Failed", got)
	}
	if diff := cmp.Diff([]string{`Failed migrate Error relation "orders" already exists`}, terminated("fails")); diff != "" {
		t.Errorf("fails' pods (-want +got):\n%s", diff)
	}

	// The held pod runs until its label goes; the Job then completes.
	lw := cache.NewListWatchFromClient(admin.CoreV1().RESTClient(), "pods", "default", fields.Everything())
	var held *corev1.Pod
	wait, cancelWait := context.WithTimeout(ctx, 2*time.Minute)
	defer cancelWait()
	if _, err := watchtools.UntilWithSync(wait, lw, &corev1.Pod{}, nil, func(ev watch.Event) (bool, error) {
		p, ok := ev.Object.(*corev1.Pod)
		if ok && p.Labels["batch.kubernetes.io/job-name"] == "held" && p.Status.Phase == corev1.PodRunning {
			held = p
			return true, nil
		}
		return false, nil
	}); err != nil {
		t.Fatalf("waiting for the held pod to run: %v", err)
	}
	job, err := jobs.Get(ctx, "held", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(job.Status.Conditions) != 0 || job.Status.Succeeded != 0 {
		t.Errorf("held job status %+v, want it still running", job.Status)
	}
	patch := []byte(`{"metadata":{"labels":{"` + HoldLabel + `":null}}}`)
	if _, err := admin.CoreV1().Pods("default").Patch(ctx, held.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := finished("held"); got != batchv1.JobComplete {
		t.Errorf("job held, then released: %s, want Complete", got)
	}
}
