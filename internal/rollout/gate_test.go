package rollout

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"

	"github.com/onnewimage/onnewimage/internal/image"
	"github.com/onnewimage/onnewimage/internal/kube/kubetest"
)

var (
	jobsGVR = batchv1.SchemeGroupVersion.WithResource("jobs")
)

// jobOutcome is how the simulated Job controller ends a gate's Job.
type jobOutcome int

const (
	completes jobOutcome = iota
	fails
	hangs
)

// smokeMessage is the termination message of a failing gate's container.
const smokeMessage = "GET http://web-green-svc/healthz: 503 Service Unavailable"

// jobController simulates the Job controller: the API server gives each
// Job a UID and a selector on it; once a Job is watched, it is finished as
// outcome says (a failed Job leaves a failed pod with a termination
// message), and the watch delivers that change.
func jobController(t *testing.T, cs *fake.Clientset, outcome func(*batchv1.Job) jobOutcome) {
	t.Helper()
	var mu sync.Mutex
	n := 0
	cs.PrependReactor("create", "jobs", func(action clienttesting.Action) (bool, runtime.Object, error) {
		j := action.(clienttesting.CreateActionImpl).GetObject().(*batchv1.Job)
		mu.Lock()
		n++
		j.UID = types.UID("uid-" + j.Name)
		mu.Unlock()
		j.ResourceVersion = "1"
		j.Spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"batch.kubernetes.io/controller-uid": string(j.UID)}}
		return false, nil, nil
	})
	cs.PrependWatchReactor("jobs", func(action clienttesting.Action) (bool, watch.Interface, error) {
		name, _ := action.(clienttesting.WatchActionImpl).WatchRestrictions.Fields.RequiresExactMatch("metadata.name")
		w := watch.NewRaceFreeFake()
		obj, err := cs.Tracker().Get(jobsGVR, "prod", name)
		if err != nil {
			return true, nil, err
		}
		j := obj.(*batchv1.Job).DeepCopy()
		switch outcome(j) {
		case completes:
			j.Status = batchv1.JobStatus{Succeeded: 1, Conditions: []batchv1.JobCondition{{Type: batchv1.JobComplete, Status: corev1.ConditionTrue}}}
		case fails:
			j.Status = batchv1.JobStatus{Failed: 1, Conditions: []batchv1.JobCondition{{Type: batchv1.JobFailed, Status: corev1.ConditionTrue,
				Reason: "BackoffLimitExceeded", Message: "Job has reached the specified backoff limit"}}}
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: j.Name + "-x7k2p", Namespace: "prod", Labels: j.Spec.Selector.MatchLabels},
				Status: corev1.PodStatus{Phase: corev1.PodFailed, ContainerStatuses: []corev1.ContainerStatus{
					{Name: "proxy", State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0}}},
					{Name: "web", State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, Reason: "Error", Message: smokeMessage + "\n"}}},
				}},
			}
			if err := cs.Tracker().Add(pod); err != nil {
				return true, nil, err
			}
		case hangs:
			return true, w, nil
		}
		j.ResourceVersion = "2"
		if err := cs.Tracker().Update(jobsGVR, j, "prod"); err != nil {
			return true, nil, err
		}
		w.Modify(j)
		return true, w, nil
	})
}

// cronJob is a suspended gate template whose pod runs containers.
func cronJob(name string, containers ...corev1.Container) *batchv1.CronJob {
	suspend, backoff := true, int32(0)
	return &batchv1.CronJob{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "prod", UID: types.UID("uid-cronjob-" + name)},
		Spec: batchv1.CronJobSpec{
			Schedule: "@yearly",
			Suspend:  &suspend,
			JobTemplate: batchv1.JobTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"team": "db"}, Annotations: map[string]string{"owner": "db-team"}},
				Spec: batchv1.JobSpec{
					BackoffLimit: &backoff,
					Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
						RestartPolicy: corev1.RestartPolicyNever,
						Containers:    containers,
					}},
				},
			},
		},
	}
}

// gateContainer is a gate's container running the release's repository.
func gateContainer() corev1.Container {
	return corev1.Container{Name: "web", Image: repo + ":old", Command: []string{"/app", "migrate"}}
}

func webGates(timeout time.Duration, names ...string) Gates {
	pattern, err := image.ParsePattern(repo)
	if err != nil {
		panic(err)
	}
	return Gates{Namespace: "prod", Names: names, Container: "web", Repository: pattern, Timeout: timeout}
}

// writes lists the creates and patches sent, as "VERB RESOURCE NAME".
func writes(cs *fake.Clientset) []string {
	var out []string
	for _, a := range cs.Actions() {
		switch a := a.(type) {
		case clienttesting.CreateActionImpl:
			out = append(out, "create "+a.GetResource().Resource+" "+mustMeta(a.GetObject()).GetName())
		case clienttesting.PatchActionImpl:
			out = append(out, "patch "+a.GetResource().Resource+" "+a.GetName())
		}
	}
	return out
}

func jobs(t *testing.T, cs *fake.Clientset) []batchv1.Job {
	t.Helper()
	list, err := cs.BatchV1().Jobs("prod").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return list.Items
}

func TestGateJobIsTheCronJobsTemplate(t *testing.T) {
	r := release(1, digest1)
	cj := cronJob("migrate",
		corev1.Container{Name: "proxy", Image: "gcr.io/p/proxy:1"},
		corev1.Container{Name: "web", Image: "busybox", Env: []corev1.EnvVar{{Name: EnvImage, Value: "stale"}, {Name: "DB", Value: "main"}}},
		corev1.Container{Name: "tools", Image: repo + ":tools"},
	)
	cs := newClientset(t, deployment("web", repo+":old", nil), cj)
	jobController(t, cs, func(*batchv1.Job) jobOutcome { return completes })
	if _, err := Rolling(context.Background(), kubetest.Adapt(cs), target, r, Options{Gates: webGates(time.Minute, "migrate")}); err != nil {
		t.Fatalf("Rolling: %v", err)
	}
	got := jobs(t, cs)
	if len(got) != 1 {
		t.Fatalf("%d jobs, want 1", len(got))
	}
	controller := true
	env := []corev1.EnvVar{{Name: EnvBuildID, Value: "build-1"}, {Name: EnvImage, Value: r.Image.String()}}
	want := cj.Spec.JobTemplate.Spec.DeepCopy()
	want.Template.Spec.Containers[1].Image = r.Image.String()
	want.Template.Spec.Containers[1].Env = append([]corev1.EnvVar{{Name: "DB", Value: "main"}}, env...)
	want.Template.Spec.Containers[2].Image = r.Image.String()
	want.Template.Spec.Containers[2].Env = env
	wantMeta := metav1.ObjectMeta{
		Name: "migrate-build1-e844ad", Namespace: "prod", UID: "uid-migrate-build1-e844ad", ResourceVersion: "2",
		Labels:      map[string]string{"team": "db", LabelGateBuild: "build-1", LabelGate: "migrate"},
		Annotations: map[string]string{"owner": "db-team", AnnotationInstantiate: "manual", AnnotationImage: r.Image.String()},
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "batch/v1", Kind: "CronJob", Name: "migrate",
			UID: "uid-cronjob-migrate", Controller: &controller}},
	}
	got[0].ManagedFields = nil // The fake's bookkeeping.
	if diff := cmp.Diff(wantMeta, got[0].ObjectMeta); diff != "" {
		t.Errorf("job metadata (-want +got):\n%s", diff)
	}
	got[0].Spec.Selector = nil // Set by the API server.
	if diff := cmp.Diff(*want, got[0].Spec); diff != "" {
		t.Errorf("job spec (-want +got):\n%s", diff)
	}
}

func TestJobName(t *testing.T) {
	tests := []struct{ gate, build, want string }{
		{"web-migrate", "0b7e5c1a-9f3d-4c2e-8a61-5f0e2d9c7b44", "web-migrate-0b7e5c1a-7ca7fd"},
		{"web-smoke", "BUILD-1", "web-smoke-build1-9b16a9"},
		// Two builds whose IDs share their first eight characters.
		{"web-smoke", "0b1d0000-0000-4000-8000-000000000001", "web-smoke-0b1d0000-cedb88"},
		{"web-smoke", "0b1d0000-0000-4000-8000-000000000002", "web-smoke-0b1d0000-c05abb"},
		{strings.Repeat("g", 52), "0b7e5c1a", strings.Repeat("g", 47) + "-0b7e5c1a-1164ab"},
		{"x", "---", "x-cb3f91"},
	}
	for _, tt := range tests {
		got := JobName(tt.gate, tt.build)
		if got != tt.want {
			t.Errorf("JobName(%q, %q) = %q, want %q", tt.gate, tt.build, got, tt.want)
		}
		if errs := validation.IsDNS1123Label(got); len(errs) > 0 {
			t.Errorf("JobName(%q, %q) = %q: %v", tt.gate, tt.build, got, errs)
		}
	}
}

func TestRollingGates(t *testing.T) {
	r1 := release(1, digest1)
	tests := []struct {
		name    string
		outcome map[string]jobOutcome // by gate
		wantErr error
		// wantReason is in the error, or the Result's reason.
		wantReason []string
		wantWrites []string
		wantImage  string
	}{
		{"every gate completes", map[string]jobOutcome{"migrate": completes, "smoke": completes}, nil,
			[]string{"web rolls from " + repo + ":old to " + r1.Image.String() + " after gates migrate, smoke completed"},
			[]string{"create jobs migrate-build1-e844ad", "create jobs smoke-build1-e844ad", "patch deployments web"}, r1.Image.String()},
		{"the second gate fails", map[string]jobOutcome{"migrate": completes, "smoke": fails}, ErrGateFailed,
			[]string{"gate smoke: job prod/smoke-build1-e844ad failed (BackoffLimitExceeded: Job has reached the specified backoff limit); " +
				"pod smoke-build1-e844ad-x7k2p container web exited 1 (Error): " + smokeMessage + "; traffic did not move"},
			[]string{"create jobs migrate-build1-e844ad", "create jobs smoke-build1-e844ad", "patch deployments web"}, repo + ":old"},
		{"the first gate fails", map[string]jobOutcome{"migrate": fails}, ErrGateFailed,
			[]string{"gate migrate: job prod/migrate-build1-e844ad failed"},
			[]string{"create jobs migrate-build1-e844ad", "patch deployments web"}, repo + ":old"},
		{"a gate times out", map[string]jobOutcome{"migrate": hangs}, ErrGateTimeout,
			[]string{"gate migrate: job prod/migrate-build1-e844ad is neither complete nor failed after 50ms (0 active, 0 succeeded, 0 failed); it goes on, and a redelivery waits for it"},
			[]string{"create jobs migrate-build1-e844ad"}, repo + ":old"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cs := newClientset(t, deployment("web", repo+":old", nil),
				cronJob("migrate", gateContainer()), cronJob("smoke", gateContainer()))
			jobController(t, cs, func(j *batchv1.Job) jobOutcome { return tt.outcome[j.Labels[LabelGate]] })
			// Only the gate that hangs is waited for until the timeout: the
			// others must not depend on how fast a loaded machine is.
			timeout := time.Minute
			if tt.wantErr == ErrGateTimeout {
				timeout = 50 * time.Millisecond
			}
			res, err := Rolling(context.Background(), kubetest.Adapt(cs), target, r1, Options{Gates: webGates(timeout, "migrate", "smoke")})
			text := res.Reason
			if !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
				t.Fatalf("Rolling = %+v, %v; want error %v", res, err, tt.wantErr)
			}
			if err != nil {
				text = err.Error()
			}
			for _, want := range tt.wantReason {
				if !strings.Contains(text, want) {
					t.Errorf("reason %q does not say %q", text, want)
				}
			}
			if diff := cmp.Diff(tt.wantWrites, writes(cs)); diff != "" {
				t.Errorf("writes (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantImage, getDeployment(t, cs, "web").Spec.Template.Spec.Containers[1].Image); diff != "" {
				t.Errorf("image (-want +got):\n%s", diff)
			}
		})
	}
}

// TestRollingRejection checks that a build a gate rejected is recorded on
// the Deployment: its redelivery runs no gate again and deploys nothing, an
// older build is not deployed in its place, and a newer build goes through.
func TestRollingRejection(t *testing.T) {
	ctx := context.Background()
	r0, r1, r2 := release(0, digest0), release(1, digest1), release(2, digest2)
	cs := newClientset(t, deployment("web", repo+":old", nil), cronJob("smoke", gateContainer()))
	jobController(t, cs, func(j *batchv1.Job) jobOutcome {
		if j.Labels[LabelGateBuild] == r1.BuildID {
			return fails
		}
		return completes
	})
	o := Options{Gates: webGates(time.Minute, "smoke")}
	if _, err := Rolling(ctx, kubetest.Adapt(cs), target, r1, o); !errors.Is(err, ErrGateFailed) {
		t.Fatalf("Rolling(build-1) error = %v, want ErrGateFailed", err)
	}
	labels := getDeployment(t, cs, "web").Labels
	if diff := cmp.Diff([]string{"build-1", "20261102T110000.123456789Z"}, []string{labels[LabelRejectedBuild], labels[LabelRejectedBuildTime]}); diff != "" {
		t.Errorf("rejection labels (-want +got):\n%s", diff)
	}

	tests := []struct {
		r          Release
		want       Result
		wantWrites []string
	}{
		{r1, Result{Outcome: Skipped, Previous: repo + ":old",
			Reason: "build build-1 was rejected (a release gate failed, or its canary was aborted): it is not deployed, nor are its gates run again"}, nil},
		{r0, Result{Outcome: Skipped, Previous: repo + ":old",
			Reason: "stale: build build-0 (created 2026-11-02T10:00:00Z) is not newer than build build-1 (created 2026-11-02T11:00:00Z), which was rejected (a release gate failed, or its canary was aborted)"}, nil},
		{r2, Result{Outcome: Deployed, Previous: repo + ":old",
			Reason: "web rolls from " + repo + ":old to " + r2.Image.String() + " after gates smoke completed"},
			[]string{"create jobs smoke-build2-4f6caf", "patch deployments web"}},
	}
	for _, tt := range tests {
		cs.ClearActions()
		res, err := Rolling(ctx, kubetest.Adapt(cs), target, tt.r, o)
		if err != nil {
			t.Fatalf("Rolling(%s): %v", tt.r.BuildID, err)
		}
		if diff := cmp.Diff(tt.want, res, ignorePatch); diff != "" {
			t.Errorf("Rolling(%s) (-want +got):\n%s", tt.r.BuildID, diff)
		}
		if diff := cmp.Diff(tt.wantWrites, writes(cs)); diff != "" {
			t.Errorf("Rolling(%s) writes (-want +got):\n%s", tt.r.BuildID, diff)
		}
	}
}

// TestGateRunsOncePerBuild checks that a gate's Job is found again rather
// than created twice: after a timeout, and when a concurrent delivery
// created it first; and that a Job of the same name for another build is
// never waited for.
func TestGateRunsOncePerBuild(t *testing.T) {
	ctx := context.Background()
	r1 := release(1, digest1)
	t.Run("redelivery after a timeout", func(t *testing.T) {
		cs := newClientset(t, deployment("web", repo+":old", nil), cronJob("migrate", gateContainer()))
		outcome := hangs
		jobController(t, cs, func(*batchv1.Job) jobOutcome { return outcome })
		o := Options{Gates: webGates(20*time.Millisecond, "migrate")}
		if _, err := Rolling(ctx, kubetest.Adapt(cs), target, r1, o); !errors.Is(err, ErrGateTimeout) {
			t.Fatalf("first delivery: error = %v, want ErrGateTimeout", err)
		}
		outcome = completes
		o.Gates.Timeout = time.Minute
		if res, err := Rolling(ctx, kubetest.Adapt(cs), target, r1, o); err != nil || res.Outcome != Deployed {
			t.Fatalf("redelivery = %+v, %v; want deployed", res, err)
		}
		if diff := cmp.Diff([]string{"create jobs migrate-build1-e844ad", "patch deployments web"}, writes(cs)); diff != "" {
			t.Errorf("writes (-want +got):\n%s", diff)
		}
	})
	t.Run("a concurrent delivery created it first", func(t *testing.T) {
		cs := newClientset(t, deployment("web", repo+":old", nil), cronJob("migrate", gateContainer()))
		jobController(t, cs, func(*batchv1.Job) jobOutcome { return completes })
		// The other delivery's create lands between this one's get and create.
		cs.PrependReactor("create", "jobs", func(action clienttesting.Action) (bool, runtime.Object, error) {
			j := action.(clienttesting.CreateActionImpl).GetObject().(*batchv1.Job).DeepCopy()
			j.ResourceVersion = "1"
			if err := cs.Tracker().Add(j); err != nil {
				return true, nil, err
			}
			return true, nil, apierrors.NewAlreadyExists(jobsGVR.GroupResource(), j.Name)
		})
		if res, err := Rolling(ctx, kubetest.Adapt(cs), target, r1, Options{Gates: webGates(time.Minute, "migrate")}); err != nil || res.Outcome != Deployed {
			t.Fatalf("Rolling = %+v, %v; want deployed", res, err)
		}
		if n := len(jobs(t, cs)); n != 1 {
			t.Errorf("%d jobs, want 1", n)
		}
	})
	t.Run("a job of another build", func(t *testing.T) {
		other := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "migrate-build1-e844ad", Namespace: "prod",
			Labels: map[string]string{LabelGateBuild: "build-1-but-another"}}}
		cs := newClientset(t, deployment("web", repo+":old", nil), cronJob("migrate", gateContainer()), other)
		jobController(t, cs, func(*batchv1.Job) jobOutcome { return completes })
		_, err := Rolling(ctx, kubetest.Adapt(cs), target, r1, Options{Gates: webGates(time.Minute, "migrate")})
		if !errors.Is(err, ErrGateInvalid) || !strings.Contains(err.Error(), `job prod/migrate-build1-e844ad holds build "build-1-but-another", not build-1`) {
			t.Errorf("error = %v, want ErrGateInvalid naming the job and both builds", err)
		}
		if w := writes(cs); len(w) != 0 {
			t.Errorf("writes %v, want none", w)
		}
	})
}

func TestGateConfigurationErrors(t *testing.T) {
	tests := []struct {
		name    string
		objs    []runtime.Object
		check   func(error) bool
		wantErr string
	}{
		{"no cronjob", nil, apierrors.IsNotFound, `gate migrate: getting cronjob prod/migrate: cronjobs.batch "migrate" not found`},
		{"no container runs the release", []runtime.Object{cronJob("migrate", corev1.Container{Name: "tool", Image: "gcr.io/p/tool"})},
			func(err error) bool { return errors.Is(err, ErrGateInvalid) },
			`gate migrate: cronjob prod/migrate has no container "web" and none whose image is ` + repo + ` (it has containers "tool"): nothing would run the release`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cs := newClientset(t, append(tt.objs, deployment("web", repo+":old", nil))...)
			_, err := Rolling(context.Background(), kubetest.Adapt(cs), target, release(1, digest1), Options{Gates: webGates(time.Minute, "migrate")})
			if err == nil || !tt.check(err) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error = %v, want one saying %q", err, tt.wantErr)
			}
			if w := writes(cs); len(w) != 0 {
				t.Errorf("writes %v, want none", w)
			}
		})
	}
}

func TestBlueGreenGates(t *testing.T) {
	ctx := context.Background()
	r1, r2 := release(1, digest1), release(2, digest2)
	for _, tt := range []struct {
		name       string
		outcome    jobOutcome
		wantWrites []string
		wantRoute  Colour
	}{
		{"the gate completes before the switch", completes,
			[]string{"patch services web", "patch deployments web-green", "create jobs smoke-build2-4f6caf", "patch services web"}, Green},
		{"the gate fails: no switch", fails,
			[]string{"patch services web", "patch deployments web-green", "create jobs smoke-build2-4f6caf", "patch services web"}, Blue},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cs := newClientset(t, svcRouter(Blue, routerAnnotations(r1, Green)), colour(Blue, r1, 3), colour(Green, release0, 3),
				cronJob("smoke", gateContainer()))
			controller(t, cs, becomesAvailable)
			jobController(t, cs, func(*batchv1.Job) jobOutcome { return tt.outcome })
			// The gate's Job is created only once the idle colour is rolled out.
			cs.PrependReactor("create", "jobs", func(clienttesting.Action) (bool, runtime.Object, error) {
				obj, err := cs.Tracker().Get(deploymentsGVR, "prod", "web-green") // Not cs: it is locked here.
				if err != nil {
					return true, nil, err
				}
				d := obj.(*appsv1.Deployment)
				if _, done, _ := Status(d); !done || d.Spec.Template.Spec.Containers[1].Image != r2.Image.String() {
					t.Errorf("gate created before web-green rolled out on %s", r2.Image)
				}
				return false, nil, nil
			})
			o := BlueGreenOptions{Timeout: time.Minute, Gates: webGates(time.Minute, "smoke")}
			res, err := BlueGreen(ctx, kubetest.Adapt(cs), bgTarget(ServiceRouter), r2, o)
			if tt.outcome == fails {
				if !errors.Is(err, ErrGateFailed) || !strings.Contains(err.Error(), smokeMessage) {
					t.Fatalf("BlueGreen = %+v, %v; want ErrGateFailed with the termination message", res, err)
				}
			} else if err != nil || !strings.HasSuffix(res.Reason, "after gates smoke completed") {
				t.Fatalf("BlueGreen = %+v, %v; want deployed after the gate", res, err)
			}
			if diff := cmp.Diff(tt.wantWrites, writes(cs)); diff != "" {
				t.Errorf("writes (-want +got):\n%s", diff)
			}
			gotRoutes, annotations := routerState(t, cs, ServiceRouter)
			if diff := cmp.Diff(routes(ServiceRouter, tt.wantRoute), gotRoutes); diff != "" {
				t.Errorf("router (-want +got):\n%s", diff)
			}
			env := jobs(t, cs)[0].Spec.Template.Spec.Containers[0].Env
			if diff := cmp.Diff([]corev1.EnvVar{{Name: EnvBuildID, Value: "build-2"}, {Name: EnvImage, Value: r2.Image.String()}, {Name: EnvService, Value: "web-green-svc"}}, env); diff != "" {
				t.Errorf("gate's environment (-want +got):\n%s", diff)
			}
			if tt.outcome != fails {
				return
			}
			got := []string{annotations[AnnotationRejectedBuildID], annotations[AnnotationRejectedCreateTime], annotations[AnnotationDeploying]}
			if diff := cmp.Diff([]string{"build-2", "2026-11-02T12:00:00.123456789Z", ""}, got); diff != "" {
				t.Errorf("router's rejection record and claim (-want +got):\n%s", diff)
			}
			cs.ClearActions()
			res, err = BlueGreen(ctx, kubetest.Adapt(cs), bgTarget(ServiceRouter), r2, o)
			if err != nil || res.Reason != "build build-2 was rejected (a release gate failed, or its canary was aborted): it is not deployed, nor are its gates run again" {
				t.Errorf("redelivery = %+v, %v; want skipped as rejected", res, err)
			}
			if w := writes(cs); len(w) != 0 {
				t.Errorf("redelivery writes %v, want none", w)
			}
		})
	}
}
