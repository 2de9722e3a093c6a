package sandbox

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/onnewimage/onnewimage/internal/rollout"
	"github.com/onnewimage/onnewimage/internal/testenv/localcluster"
)

// gateManifests are what a user applies to run the sample gates.
var gateManifests = []string{"k8s/gates/cronjobs.yaml", "k8s/gates/rbac.yaml"}

// gated starts a sandbox of the strategy ("rolling", or "blue-green" with a
// Service router) with the sample gates, the function given their RBAC and
// configured with env.
func gated(t *testing.T, strategy string, env map[string]string) (*Sandbox, context.Context) {
	t.Helper()
	if strategy == "rolling" {
		return start(t, Options{Manifests: append(slices.Clone(DefaultManifests), gateManifests...), FunctionEnv: env})
	}
	manifests := append([]string{"k8s/blue-green/deployments.yaml", "k8s/blue-green/service.yaml", "k8s/blue-green/rbac.yaml"}, gateManifests...)
	fenv := map[string]string{"STRATEGY": "blue-green", "SERVICE": "web", "ROLLOUT_TIMEOUT": "20s"}
	for k, v := range env {
		fenv[k] = v
	}
	return start(t, Options{Manifests: manifests, FunctionEnv: fenv}, blue, green)
}

// timeline records, in the order etcd applied them, every change to the
// namespace's Jobs, Deployments and Services from the moment it starts.
type timeline struct {
	mu      sync.Mutex
	changes []change
	changed chan struct{} // closed and replaced on every change
}

func recordTimeline(ctx context.Context, t *testing.T, sb *Sandbox) *timeline {
	t.Helper()
	tl := &timeline{changed: make(chan struct{})}
	list, err := sb.Admin.CoreV1().ConfigMaps(Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	opts := metav1.ListOptions{ResourceVersion: list.ResourceVersion}
	watchers := map[string]func() (watch.Interface, error){
		"Job":        func() (watch.Interface, error) { return sb.Admin.BatchV1().Jobs(Namespace).Watch(ctx, opts) },
		"Deployment": func() (watch.Interface, error) { return sb.Admin.AppsV1().Deployments(Namespace).Watch(ctx, opts) },
		"Service":    func() (watch.Interface, error) { return sb.Admin.CoreV1().Services(Namespace).Watch(ctx, opts) },
	}
	for kind, w := range watchers {
		wi, err := w()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(wi.Stop)
		go func() {
			for ev := range wi.ResultChan() {
				var rv string
				switch o := ev.Object.(type) {
				case *batchv1.Job:
					rv = o.ResourceVersion
				case *appsv1.Deployment:
					rv = o.ResourceVersion
				case *corev1.Service:
					rv = o.ResourceVersion
				default:
					continue
				}
				n, _ := strconv.ParseInt(rv, 10, 64)
				tl.mu.Lock()
				tl.changes = append(tl.changes, change{rv: n, kind: kind, obj: ev.Object, at: time.Now()})
				close(tl.changed)
				tl.changed = make(chan struct{})
				tl.mu.Unlock()
			}
		}()
	}
	return tl
}

// first waits until the timeline holds a change for which match holds, and
// returns the resourceVersion of the earliest such change.
func (tl *timeline) first(ctx context.Context, t *testing.T, what string, match func(c change) bool) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for {
		tl.mu.Lock()
		changes, changed := slices.Clone(tl.changes), tl.changed
		tl.mu.Unlock()
		slices.SortFunc(changes, func(a, b change) int { return int(a.rv - b.rv) })
		for _, c := range changes {
			if match(c) {
				return c.rv
			}
		}
		select {
		case <-changed:
		case <-ctx.Done():
			t.Fatalf("the timeline never showed %s", what)
		}
	}
}

// jobDone matches the change that made the Job name Complete.
func jobDone(name string) func(change) bool {
	return func(c change) bool {
		j, ok := c.obj.(*batchv1.Job)
		return ok && j.Name == name && finished(j) == batchv1.JobComplete
	}
}

func finished(j *batchv1.Job) batchv1.JobConditionType {
	for _, cond := range j.Status.Conditions {
		if cond.Status == corev1.ConditionTrue && (cond.Type == batchv1.JobComplete || cond.Type == batchv1.JobFailed) {
			return cond.Type
		}
	}
	return ""
}

// gateJobs lists the Jobs made for build, by name.
func gateJobs(ctx context.Context, t *testing.T, sb *Sandbox, build string) map[string]batchv1.Job {
	t.Helper()
	list, err := sb.Admin.BatchV1().Jobs(Namespace).List(ctx, metav1.ListOptions{LabelSelector: rollout.LabelGateBuild + "=" + build})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]batchv1.Job{}
	for _, j := range list.Items {
		out[j.Name] = j
	}
	return out
}

func names(jobs map[string]batchv1.Job) []string {
	var out []string
	for n := range jobs {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// envOf is the environment of the Job's container web, as a map.
func envOf(j batchv1.Job) map[string]string {
	out := map[string]string{}
	for _, c := range j.Spec.Template.Spec.Containers {
		if c.Name == "web" {
			for _, e := range c.Env {
				out[e.Name] = e.Value
			}
		}
	}
	return out
}

// editGate changes the pod template of the gate CronJob name as an operator
// would with kubectl.
func editGate(ctx context.Context, t *testing.T, sb *Sandbox, name, patch string) {
	t.Helper()
	if _, err := sb.Admin.BatchV1().CronJobs(Namespace).Patch(ctx, name, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

// waitLine waits for the function's next line about build after the first
// seen lines, and returns it.
func waitLine(ctx context.Context, t *testing.T, sb *Sandbox, seen int, build string, match func(map[string]any) bool) map[string]any {
	t.Helper()
	wait, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	line, err := sb.Function.WaitLog(wait, seen, func(l map[string]any) bool { return l["buildId"] == build && match(l) })
	if err != nil {
		t.Fatalf("build %s: %v", build, err)
	}
	return line
}

// linesFor waits until the function has written n lines about build after
// the first seen lines, and returns them.
func linesFor(ctx context.Context, t *testing.T, sb *Sandbox, seen int, build string, n int) []map[string]any {
	t.Helper()
	wait, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	for {
		all := sb.Function.Logs()
		var got []map[string]any
		for _, l := range all[min(seen, len(all)):] {
			if l["buildId"] == build {
				got = append(got, l)
			}
		}
		if len(got) >= n {
			return got
		}
		if _, err := sb.Function.WaitLog(wait, len(all), func(map[string]any) bool { return true }); err != nil {
			t.Fatalf("waiting for %d lines about build %s: %v (got %v)", n, build, err, got)
		}
	}
}

func TestE2EGateRunsBeforeTheRollingPatch(t *testing.T) {
	sb, ctx := gated(t, "rolling", map[string]string{"GATES": "web-migrate"})
	tl := recordTimeline(ctx, t, sb)
	b := FreshBuild(load(t, "web-1-success.json"))
	job := rollout.JobName("web-migrate", b.GetId())

	line := publish(ctx, t, sb, b)
	if line["outcome"] != "deployed" || !strings.HasSuffix(line["reason"].(string), "after gates web-migrate completed") {
		t.Fatalf("line %v, want deployed after the gate", line)
	}
	jobs := gateJobs(ctx, t, sb, b.GetId())
	if diff := cmp.Diff([]string{job}, names(jobs)); diff != "" {
		t.Fatalf("jobs of the build (-want +got):\n%s", diff)
	}
	j := jobs[job]
	got := []string{j.Spec.Template.Spec.Containers[0].Image, j.Annotations[rollout.AnnotationImage], envOf(j)[rollout.EnvImage], envOf(j)[rollout.EnvBuildID]}
	if diff := cmp.Diff([]string{pinned(b), pinned(b), pinned(b), b.GetId()}, got); diff != "" {
		t.Errorf("the gate's image, annotation and environment (-want +got):\n%s", diff)
	}
	// The pod ran the digest, and the Job completed before the Deployment changed.
	pods, err := sb.Admin.CoreV1().Pods(Namespace).List(ctx, metav1.ListOptions{LabelSelector: "batch.kubernetes.io/job-name=" + job})
	if err != nil || len(pods.Items) != 1 || pods.Items[0].Spec.Containers[0].Image != pinned(b) || pods.Items[0].Status.Phase != corev1.PodSucceeded {
		t.Errorf("the gate's pods: %v (%v), want one that succeeded on %s", pods, err, pinned(b))
	}
	done := tl.first(ctx, t, "the gate complete", jobDone(job))
	patched := tl.first(ctx, t, "the deployment on the release", func(c change) bool {
		d, ok := c.obj.(*appsv1.Deployment)
		return ok && d.Name == Deployment && webContainer(d) == pinned(b)
	})
	if done >= patched {
		t.Errorf("job %s completed at resourceVersion %d, the deployment changed at %d: want the gate first", job, done, patched)
	}
	waitLive(ctx, t, sb, pinned(b))
}

func TestE2EGatesRunBeforeTheBlueGreenSwitch(t *testing.T) {
	sb, ctx := gated(t, "blue-green", map[string]string{"GATES": "web-migrate,web-smoke", "GATE_TIMEOUT": "1m"})
	tl := recordTimeline(ctx, t, sb)
	b := FreshBuild(load(t, "web-1-success.json"))
	migrate, smoke := rollout.JobName("web-migrate", b.GetId()), rollout.JobName("web-smoke", b.GetId())

	line := publish(ctx, t, sb, b)
	if line["outcome"] != "deployed" || !strings.HasSuffix(line["reason"].(string), "after gates web-migrate, web-smoke completed") {
		t.Fatalf("line %v, want deployed after the gates", line)
	}
	if live, _ := router(ctx, t, sb, "service"); live != green {
		t.Fatalf("router on %s, want %s", live, green)
	}
	jobs := gateJobs(ctx, t, sb, b.GetId())
	if diff := cmp.Diff([]string{migrate, smoke}, names(jobs)); diff != "" {
		t.Fatalf("jobs of the build (-want +got):\n%s", diff)
	}
	want := map[string]string{rollout.EnvBuildID: b.GetId(), rollout.EnvImage: pinned(b), rollout.EnvService: "web-green-svc"}
	if diff := cmp.Diff(want, envOf(jobs[smoke])); diff != "" {
		t.Errorf("the smoke test's environment (-want +got):\n%s", diff)
	}
	rolledOut := tl.first(ctx, t, "web-green rolled out on the release", func(c change) bool {
		d, ok := c.obj.(*appsv1.Deployment)
		return ok && d.Name == green && webContainer(d) == pinned(b) && statusOf(d) == `deployment "web-green" successfully rolled out`
	})
	migrated := tl.first(ctx, t, "the migration complete", jobDone(migrate))
	smoked := tl.first(ctx, t, "the smoke test complete", jobDone(smoke))
	smokeCreated := tl.first(ctx, t, "the smoke test created", func(c change) bool {
		j, ok := c.obj.(*batchv1.Job)
		return ok && j.Name == smoke
	})
	switched := tl.first(ctx, t, "the switch", func(c change) bool {
		s, ok := c.obj.(*corev1.Service)
		return ok && s.Name == "web" && routedTo(s) == green
	})
	order := []int64{rolledOut, migrated, smokeCreated, smoked, switched}
	if !slices.IsSorted(order) {
		t.Errorf("resourceVersions of rolled out, migration complete, smoke test created, smoke test complete, switch = %v: want them in that order", order)
	}
}

func TestE2EFailingSmokeTestNeverGetsTraffic(t *testing.T) {
	sb, ctx := gated(t, "blue-green", map[string]string{"GATES": "web-migrate,web-smoke", "GATE_TIMEOUT": "1m"})
	const message = "GET http://web-green-svc/healthz: 503 Service Unavailable"
	editGate(ctx, t, sb, "web-smoke", `{"spec":{"jobTemplate":{"spec":{"template":{"metadata":{"labels":{"`+
		localcluster.FailLabel+`":"true"},"annotations":{"`+localcluster.TerminationMessageAnnotation+`":"`+message+`"}}}}}}}`)
	b := FreshBuild(load(t, "web-1-success.json"))
	smoke := rollout.JobName("web-smoke", b.GetId())

	line := publish(ctx, t, sb, b)
	reason, _ := line["reason"].(string)
	if line["severity"] != "ERROR" || line["outcome"] != "failed" || line["retry"] != false {
		t.Errorf("line %v, want an ERROR, not retried", line)
	}
	for _, want := range []string{"gate web-smoke", "job default/" + smoke + " failed (BackoffLimitExceeded", "container web exited 1 (Error): " + message} {
		if !strings.Contains(reason, want) {
			t.Errorf("reason %q does not say %q", reason, want)
		}
	}
	live, ann := router(ctx, t, sb, "service")
	if live != blue || ann[rollout.AnnotationRejectedBuildID] != b.GetId() || ann[rollout.AnnotationDeploying] != "" {
		t.Errorf("router on %s with %v: want blue, the build recorded as rejected, no claim", live, ann)
	}

	// The same build again: skipped, no gate run again.
	line = publish(ctx, t, sb, b)
	if line["outcome"] != "skipped" || !strings.Contains(line["reason"].(string), "was rejected (a release gate failed") {
		t.Errorf("redelivery: %v, want skipped as rejected", line)
	}
	if diff := cmp.Diff([]string{rollout.JobName("web-migrate", b.GetId()), smoke}, names(gateJobs(ctx, t, sb, b.GetId()))); diff != "" {
		t.Errorf("jobs of the build after its redelivery (-want +got):\n%s", diff)
	}
	if live, _ := router(ctx, t, sb, "service"); live != blue {
		t.Errorf("router on %s after the redelivery, want blue", live)
	}
}

func TestE2EGateTimesOutThenCompletesOnRedelivery(t *testing.T) {
	sb, ctx := gated(t, "rolling", map[string]string{"GATES": "web-migrate", "GATE_TIMEOUT": "3s"})
	editGate(ctx, t, sb, "web-migrate", `{"spec":{"jobTemplate":{"spec":{"template":{"metadata":{"labels":{"`+localcluster.HoldLabel+`":"true"}}}}}}}`)
	b := FreshBuild(load(t, "web-1-success.json"))
	job := rollout.JobName("web-migrate", b.GetId())

	seen := len(sb.Function.Logs())
	line := publish(ctx, t, sb, b)
	if line["severity"] != "ERROR" || line["retry"] != true || !strings.Contains(line["reason"].(string), "job default/"+job+" is neither complete nor failed after 3s") {
		t.Fatalf("line %v, want a retried ERROR naming the job", line)
	}
	if got := webContainer(getWeb(ctx, t, sb)); got != initial {
		t.Fatalf("the deployment runs %s while its gate runs", got)
	}
	// Pub/Sub redelivers; let the migration finish.
	pods, err := sb.Admin.CoreV1().Pods(Namespace).List(ctx, metav1.ListOptions{LabelSelector: "batch.kubernetes.io/job-name=" + job})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("pods of %s: %v, %v; want one", job, pods, err)
	}
	patch := []byte(`{"metadata":{"labels":{"` + localcluster.HoldLabel + `":null}}}`)
	if _, err := sb.Admin.CoreV1().Pods(Namespace).Patch(ctx, pods.Items[0].Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	waitLine(ctx, t, sb, seen, b.GetId(), func(l map[string]any) bool { return l["outcome"] == "deployed" })
	if diff := cmp.Diff([]string{job}, names(gateJobs(ctx, t, sb, b.GetId()))); diff != "" {
		t.Errorf("jobs of the build (-want +got):\n%s", diff)
	}
	waitLive(ctx, t, sb, pinned(b))
}

func TestE2EConcurrentDeliveriesRunOneJobPerGate(t *testing.T) {
	sb, ctx := gated(t, "rolling", map[string]string{"GATES": "web-migrate,web-smoke", "GATE_TIMEOUT": "1m"})
	b := FreshBuild(load(t, "web-1-success.json"))
	seen := len(sb.Function.Logs())
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := sb.Publish(ctx, b); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	outcomes := map[any]int{}
	for _, l := range linesFor(ctx, t, sb, seen, b.GetId(), 2) {
		outcomes[l["outcome"]]++
	}
	if diff := cmp.Diff(map[any]int{"deployed": 1, "skipped": 1}, outcomes); diff != "" {
		t.Errorf("outcomes of the two deliveries (-want +got):\n%s", diff)
	}
	want := []string{rollout.JobName("web-migrate", b.GetId()), rollout.JobName("web-smoke", b.GetId())}
	if diff := cmp.Diff(want, names(gateJobs(ctx, t, sb, b.GetId()))); diff != "" {
		t.Errorf("jobs of the build (-want +got):\n%s", diff)
	}
}

func TestE2EGateErrors(t *testing.T) {
	sb, ctx := gated(t, "rolling", map[string]string{"GATES": "web-migrate,web-smoke"})
	tests := []struct {
		name  string
		setup func()
		want  []string
		retry bool
	}{
		{"a CronJob without the container", func() {
			editGate(ctx, t, sb, "web-migrate", `{"spec":{"jobTemplate":{"spec":{"template":{"spec":{"containers":[{"name":"web","$patch":"delete"},{"name":"tool","image":"busybox"}]}}}}}}`)
		}, []string{`gate web-migrate: cronjob default/web-migrate has no container "web" and none whose image is ` + Image + ` (it has containers "tool")`}, false},
		{"a missing CronJob", func() {
			if err := sb.Admin.BatchV1().CronJobs(Namespace).Delete(ctx, "web-migrate", metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
		}, []string{`gate web-migrate: getting cronjob default/web-migrate: cronjobs.batch "web-migrate" not found`}, false},
		// Last: Pub/Sub redelivers it until the test ends.
		{"missing RBAC", func() {
			if err := sb.Admin.RbacV1().RoleBindings(Namespace).Delete(ctx, "onnewimage-gates", metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			// The authorizer learns of it through a watch: wait until it answers no.
			review := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{User: ServiceAccount,
				ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: Namespace, Verb: "get", Group: "batch", Resource: "jobs"}}}
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			for {
				got, err := sb.Admin.AuthorizationV1().SubjectAccessReviews().Create(ctx, review, metav1.CreateOptions{})
				if err != nil {
					t.Fatal(err)
				}
				if !got.Status.Allowed {
					break
				}
				<-tick.C
			}
		}, []string{`cannot get resource "jobs" in API group "batch"`, "grant the function's identity this permission"}, true},
	}
	for _, tt := range tests {
		tt.setup()
		b := FreshBuild(load(t, "web-1-success.json"))
		line := publish(ctx, t, sb, b)
		reason, _ := line["reason"].(string)
		if line["severity"] != "ERROR" || line["retry"] != tt.retry {
			t.Errorf("%s: line %v, want an ERROR with retry %v", tt.name, line, tt.retry)
		}
		for _, want := range tt.want {
			if !strings.Contains(reason, want) {
				t.Errorf("%s: reason %q does not say %q", tt.name, reason, want)
			}
		}
		if jobs := gateJobs(ctx, t, sb, b.GetId()); len(jobs) != 0 {
			t.Errorf("%s: jobs %v, want none", tt.name, names(jobs))
		}
		if got := webContainer(getWeb(ctx, t, sb)); got != initial {
			t.Errorf("%s: the deployment runs %s", tt.name, got)
		}
	}
}
