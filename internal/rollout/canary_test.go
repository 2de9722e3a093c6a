package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"

	"github.com/onnewimage/onnewimage/internal/kube/kubetest"
)

var canaryTarget = CanaryTarget{Namespace: "prod", Deployment: "web", Container: "web"}

// canaryPair returns the stable Deployment web, running r with 3 replicas
// and recording it, and web-canary at 0 replicas.
func canaryPair(r Release) (*appsv1.Deployment, *appsv1.Deployment) {
	stable := deployment("web", r.Image.String(), recorded(r))
	stable.Labels = map[string]string{LabelNewestBuild: r.BuildID, LabelNewestBuildTime: r.CreateTime.UTC().Format(LabelTimeLayout)}
	three, zero := int32(3), int32(0)
	stable.Spec.Replicas = &three
	stable.Status = appsv1.DeploymentStatus{ObservedGeneration: 1, Replicas: 3, UpdatedReplicas: 3, ReadyReplicas: 3, AvailableReplicas: 3}
	canary := deployment("web-canary", r.Image.String(), nil)
	canary.Spec.Replicas = &zero
	canary.Status = appsv1.DeploymentStatus{ObservedGeneration: 1}
	return stable, canary
}

// history records, in order, the writes that move traffic or change the
// stable release: "web-canary replicas=N" and "web image=DIGEST", each with
// when it was applied.
type history struct {
	mu     sync.Mutex
	events []string
	at     []time.Time
}

func (h *history) get() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.events...)
}

func (h *history) when(event string) time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, e := range h.events {
		if e == event {
			return h.at[i]
		}
	}
	return time.Time{}
}

func recordCanary(t *testing.T, cs *fake.Clientset) *history {
	h := &history{}
	cs.PrependReactor("patch", "deployments", func(action clienttesting.Action) (bool, runtime.Object, error) {
		pa := action.(clienttesting.PatchActionImpl)
		if len(pa.PatchOptions.DryRun) > 0 {
			return false, nil, nil
		}
		var p struct {
			Metadata struct{ ResourceVersion string }
			Spec     struct {
				Replicas *int32
				Template struct {
					Spec struct{ Containers []corev1.Container }
				}
			}
		}
		if err := json.Unmarshal(pa.GetPatch(), &p); err != nil {
			t.Error(err)
		}
		// Only writes that will apply: the patch's precondition holds (the
		// clientset runs one action's reactors at a time).
		cur, err := cs.Tracker().Get(deploymentsGVR, "prod", pa.GetName())
		if err != nil || cur.(*appsv1.Deployment).ResourceVersion != p.Metadata.ResourceVersion {
			return false, nil, nil
		}
		h.mu.Lock()
		defer h.mu.Unlock()
		if pa.GetName() == "web-canary" && p.Spec.Replicas != nil {
			h.events = append(h.events, fmt.Sprintf("web-canary replicas=%d", *p.Spec.Replicas))
			h.at = append(h.at, time.Now())
		}
		if pa.GetName() == "web" {
			for _, c := range p.Spec.Template.Spec.Containers {
				h.events = append(h.events, "web image="+c.Image[strings.Index(c.Image, "@")+1:][:len("sha256:")+4])
				h.at = append(h.at, time.Now())
			}
		}
		return false, nil, nil
	})
	return h
}

// canaryPod is a pod of web-canary running r, ready, whose container web
// restarted `restarts` times (last exit code 1).
func canaryPod(name string, r Release, restarts int32) *corev1.Pod {
	st := corev1.ContainerStatus{Name: "web", Ready: true, RestartCount: restarts}
	if restarts > 0 {
		st.LastTerminationState.Terminated = &corev1.ContainerStateTerminated{ExitCode: 1, Reason: "Error", Message: "boom"}
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "prod", Labels: map[string]string{"app": "web-canary"}, ResourceVersion: "1"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: r.Image.String()}}},
		Status: corev1.PodStatus{
			Conditions:        []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
			ContainerStatuses: []corev1.ContainerStatus{st},
		},
	}
}

func canaryOptions(pause time.Duration) CanaryOptions {
	return CanaryOptions{Steps: []int{10, 50}, Pause: pause, Timeout: time.Minute, ClaimExpiry: time.Minute}
}

func TestCanaryReplicas(t *testing.T) {
	tests := []struct {
		percent   int
		stable    int32
		want      int32
		wantShare string
	}{
		{10, 3, 1, "25"}, // The example: "10%" is really 25%.
		{50, 3, 3, "50"},
		{10, 9, 1, "10"},
		{25, 3, 1, "25"},
		{5, 2, 1, "33"}, // At least 1.
		{90, 1, 9, "90"},
	}
	for _, tt := range tests {
		got := CanaryReplicas(tt.percent, tt.stable)
		share := fmt.Sprintf("%.0f", CanaryShare(got, tt.stable))
		if got != tt.want || share != tt.wantShare {
			t.Errorf("CanaryReplicas(%d, %d) = %d (really %s%%), want %d (%s%%)", tt.percent, tt.stable, got, share, tt.want, tt.wantShare)
		}
	}
}

func TestCanaryStepsThenPromotes(t *testing.T) {
	r1, r2 := release(1, digest1), release(2, digest2)
	stable, canary := canaryPair(r1)
	cs := newClientset(t, stable, canary)
	controller(t, cs, becomesAvailable)
	h := recordCanary(t, cs)
	const pause = 300 * time.Millisecond

	res, err := Canary(context.Background(), kubetest.Adapt(cs), canaryTarget, r2, canaryOptions(pause))
	if err != nil {
		t.Fatalf("Canary: %v", err)
	}
	want := []string{"web-canary replicas=1", "web-canary replicas=3", "web image=sha256:2222", "web-canary replicas=0"}
	if diff := cmp.Diff(want, h.get()); diff != "" {
		t.Errorf("traffic and stable writes (-want +got):\n%s", diff)
	}
	if held := h.when("web image=sha256:2222").Sub(h.when("web-canary replicas=3")); held < pause {
		t.Errorf("stable patched %s after the last step, want after its %s hold", held, pause)
	}
	if res.Outcome != Deployed || !strings.Contains(res.Reason, "canary 10% (1 replicas beside 3: really 25%), 50% (3 replicas beside 3: really 50%), each held 300ms; promoted") {
		t.Errorf("Canary = %s: %q, want deployed, naming the steps and their real shares", res.Outcome, res.Reason)
	}
	c := getDeployment(t, cs, "web-canary")
	if got := fmt.Sprintf("replicas=%d progress=%q image=%s", replicas(c), c.Annotations[AnnotationCanary], imageOf(t, cs, "web")); got != "replicas=0 progress=\"\" image="+r2.Image.String() {
		t.Errorf("after the canary: %s, want the canary at 0 without progress and stable running %s", got, r2.Image)
	}
}

func TestCanaryAbortsOnRestart(t *testing.T) {
	r1, r2 := release(1, digest1), release(2, digest2)
	tests := []struct {
		name string
		// pods exist from the start; change, when set, happens to pod
		// web-canary-a once the first step's hold has begun.
		pods    []*corev1.Pod
		change  func(*corev1.Pod)
		wantErr string
	}{
		{"restarted before the hold", []*corev1.Pod{canaryPod("web-canary-a", r2, 1)}, nil,
			"canary aborted at 10%: pod web-canary-a restarted, exit code 1: Error: boom; traffic is back on web"},
		{"restarted during the hold", []*corev1.Pod{canaryPod("web-canary-a", r2, 0)}, func(p *corev1.Pod) {
			p.Status.ContainerStatuses[0].RestartCount = 1
			p.Status.ContainerStatuses[0].LastTerminationState.Terminated = &corev1.ContainerStateTerminated{ExitCode: 137, Reason: "OOMKilled"}
		}, "canary aborted at 10%: pod web-canary-a restarted, exit code 137: OOMKilled; traffic is back on web"},
		{"unready after ready", []*corev1.Pod{canaryPod("web-canary-a", r2, 0)}, func(p *corev1.Pod) {
			p.Status.Conditions[0].Status = corev1.ConditionFalse
		}, "canary aborted at 10%: pod web-canary-a became unready after it was ready; traffic is back on web"},
		{"another release's pod restarting is not this canary's", []*corev1.Pod{canaryPod("web-canary-old", r1, 3), canaryPod("web-canary-a", r2, 0)},
			func(p *corev1.Pod) { p.Status.ContainerStatuses[0].RestartCount = 1 },
			"canary aborted at 10%: pod web-canary-a container web restarted 1 times; traffic is back on web"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stable, canary := canaryPair(r1)
			objs := []runtime.Object{stable, canary}
			for _, p := range tt.pods {
				objs = append(objs, p)
			}
			cs := newClientset(t, objs...)
			controller(t, cs, becomesAvailable)
			h := recordCanary(t, cs)
			if tt.change != nil {
				onHold(t, cs, func() {
					p, err := cs.CoreV1().Pods("prod").Get(context.Background(), "web-canary-a", metav1.GetOptions{})
					if err != nil {
						t.Error(err)
						return
					}
					tt.change(p)
					if _, err := cs.CoreV1().Pods("prod").UpdateStatus(context.Background(), p, metav1.UpdateOptions{}); err != nil {
						t.Error(err)
					}
				})
			}

			_, err := Canary(context.Background(), kubetest.Adapt(cs), canaryTarget, r2, canaryOptions(time.Minute))
			if !errors.Is(err, ErrCanaryAborted) || !strings.HasPrefix(err.Error(), tt.wantErr) {
				t.Fatalf("Canary error = %v, want ErrCanaryAborted starting %q", err, tt.wantErr)
			}
			if diff := cmp.Diff([]string{"web-canary replicas=1", "web-canary replicas=0"}, h.get()); diff != "" {
				t.Errorf("traffic and stable writes (-want +got):\n%s", diff)
			}
			if got := imageOf(t, cs, "web"); got != r1.Image.String() {
				t.Errorf("stable runs %s, want it untouched at %s", got, r1.Image)
			}
			if got := getDeployment(t, cs, "web").Labels[LabelRejectedBuild]; got != r2.BuildID {
				t.Errorf("stable's %s = %q, want the rejected build %s", LabelRejectedBuild, got, r2.BuildID)
			}

			// Redelivered, the rejected build does not start again.
			res, err := Canary(context.Background(), kubetest.Adapt(cs), canaryTarget, r2, canaryOptions(time.Minute))
			if err != nil || res.Outcome != Skipped || !strings.Contains(res.Reason, "was rejected") {
				t.Errorf("redelivery: %s %q %v, want skipped as rolled back", res.Outcome, res.Reason, err)
			}
		})
	}
}

// onHold calls f, from another goroutine, once a step's hold watches the
// canary's pods: when the canary records that the hold has begun and the
// hold then watches the Deployment (after its watch of the pods).
func onHold(t *testing.T, cs *fake.Clientset, f func()) {
	var once sync.Once
	done := make(chan struct{})
	fired := false
	t.Cleanup(func() {
		if fired {
			<-done
		}
	})
	cs.PrependWatchReactor("deployments", func(action clienttesting.Action) (bool, watch.Interface, error) {
		obj, err := cs.Tracker().Get(deploymentsGVR, "prod", "web-canary")
		if err != nil {
			return false, nil, nil
		}
		var p canaryProgress
		if json.Unmarshal([]byte(obj.(*appsv1.Deployment).Annotations[AnnotationCanary]), &p) == nil && !p.StepStart.IsZero() {
			once.Do(func() {
				fired = true
				go func() { defer close(done); f() }()
			})
		}
		return false, nil, nil
	})
}

// progressOn returns canary annotated with p.
func progressOn(canary *appsv1.Deployment, p canaryProgress) *appsv1.Deployment {
	canary.Annotations = map[string]string{AnnotationCanary: string(mustJSON(p))}
	return canary
}

func TestCanaryResumesAtTheRecordedStep(t *testing.T) {
	r1, r2 := release(1, digest1), release(2, digest2)
	stable, canary := canaryPair(r1)
	canary = progressOn(canary, canaryProgress{Build: r2.BuildID, CreateTime: r2.CreateTime, Image: r2.Image.String(),
		Step: 1, Percent: 50, StepStart: time.Now().Add(-time.Hour), ClaimedAt: time.Now().Add(-time.Minute)})
	cs := newClientset(t, stable, canary)
	controller(t, cs, becomesAvailable)
	h := recordCanary(t, cs)

	res, err := Canary(context.Background(), kubetest.Adapt(cs), canaryTarget, r2, canaryOptions(time.Hour))
	if err != nil {
		t.Fatalf("Canary: %v", err)
	}
	// The 50% step's hour was held before: only the promotion is left.
	if diff := cmp.Diff([]string{"web-canary replicas=3", "web image=sha256:2222", "web-canary replicas=0"}, h.get()); diff != "" {
		t.Errorf("traffic and stable writes (-want +got):\n%s", diff)
	}
	if !strings.HasPrefix(res.Reason, "resumed at 50%; canary 50%") {
		t.Errorf("reason %q, want it to say it resumed at 50%%", res.Reason)
	}
}

func TestCanaryClaims(t *testing.T) {
	r1, r2, r3 := release(1, digest1), release(2, digest2), release(3, digest3)
	progress := func(r Release, holder string, claimed time.Time) canaryProgress {
		return canaryProgress{Build: r.BuildID, CreateTime: r.CreateTime, Image: r.Image.String(), Step: 0, Percent: 10, Holder: holder, ClaimedAt: claimed}
	}
	tests := []struct {
		name       string
		progress   canaryProgress
		wantErr    error
		wantReason string
		wantWrites []string
	}{
		{"the same build driven by a live invocation", progress(r2, "other", time.Now()), ErrCanaryBusy, "", nil},
		{"the same build, its claim expired", progress(r2, "other", time.Now().Add(-2*time.Minute)), nil, "resumed at 10%; canary 10%",
			[]string{"web-canary replicas=1", "web-canary replicas=3", "web image=sha256:2222", "web-canary replicas=0"}},
		{"a newer build on its canary", progress(r3, "other", time.Now()), nil, "superseded: the newer build build-3", nil},
		{"an older build on its canary", progress(r1, "other", time.Now()), nil, "stopped the canary of the older build build-1 at 10%; canary 10%",
			[]string{"web-canary replicas=1", "web-canary replicas=3", "web image=sha256:2222", "web-canary replicas=0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stable, canary := canaryPair(release0)
			cs := newClientset(t, stable, progressOn(canary, tt.progress))
			controller(t, cs, becomesAvailable)
			h := recordCanary(t, cs)
			res, err := Canary(context.Background(), kubetest.Adapt(cs), canaryTarget, r2, canaryOptions(time.Millisecond))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Canary error = %v, want %v", err, tt.wantErr)
			}
			if !strings.HasPrefix(res.Reason, tt.wantReason) {
				t.Errorf("reason %q, want it to start %q", res.Reason, tt.wantReason)
			}
			if diff := cmp.Diff(tt.wantWrites, h.get()); diff != "" {
				t.Errorf("traffic and stable writes (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCanaryNewerBuildStopsTheOlderInvocation(t *testing.T) {
	r1, r2, r3 := release(1, digest1), release(2, digest2), release(3, digest3)
	stable, canary := canaryPair(r1)
	cs := newClientset(t, stable, canary)
	controller(t, cs, becomesAvailable)
	h := recordCanary(t, cs)
	type outcome struct {
		res Result
		err error
	}
	older := make(chan outcome, 1)
	go func() {
		res, err := Canary(context.Background(), kubetest.Adapt(cs), canaryTarget, r2, canaryOptions(time.Hour))
		older <- outcome{res, err}
	}()
	holding := make(chan struct{})
	onHold(t, cs, func() { close(holding) })
	<-holding

	res, err := Canary(context.Background(), kubetest.Adapt(cs), canaryTarget, r3, canaryOptions(time.Millisecond))
	if err != nil || res.Outcome != Deployed || !strings.HasPrefix(res.Reason, "stopped the canary of the older build build-2 at 10%") {
		t.Fatalf("newer Canary = %s %q %v, want deployed, stopping build-2's canary", res.Outcome, res.Reason, err)
	}
	o := <-older
	if o.err != nil || o.res.Outcome != Skipped {
		t.Errorf("older Canary = %s %q %v, want skipped", o.res.Outcome, o.res.Reason, o.err)
	}
	if got := imageOf(t, cs, "web"); got != r3.Image.String() {
		t.Errorf("stable runs %s, want %s", got, r3.Image)
	}
	for _, e := range h.get() {
		if e == "web image=sha256:2222" {
			t.Errorf("the older build was promoted: %q", h.get())
		}
	}
}

func TestAbortCanary(t *testing.T) {
	r1, r2 := release(1, digest1), release(2, digest2)
	stable, canary := canaryPair(r1)
	three := int32(3)
	canary.Spec.Replicas = &three
	canary = progressOn(canary, canaryProgress{Build: r2.BuildID, CreateTime: r2.CreateTime, Image: r2.Image.String(),
		Step: 1, Percent: 50, Holder: "other", ClaimedAt: time.Now()})
	cs := newClientset(t, stable, canary)

	s, err := InspectCanary(context.Background(), kubetest.Adapt(cs), canaryTarget)
	if err != nil {
		t.Fatal(err)
	}
	if want := "build build-2 at 50% on web-canary (3 replicas), claimed at "; !strings.HasPrefix(s.Deploying, want) {
		t.Errorf("InspectCanary deploying %q, want it to start %q", s.Deploying, want)
	}

	res, err := AbortCanary(context.Background(), kubetest.Adapt(cs), canaryTarget, Options{})
	if err != nil {
		t.Fatalf("AbortCanary: %v", err)
	}
	want := Result{Outcome: Deployed, Previous: r1.Image.String(),
		Reason: "aborted the canary of build build-2 at 50%: web-canary scaled to 0, traffic back on web; build build-2 is recorded as rejected (label onnewimage.dev/rejected-build): it is not deployed again"}
	if diff := cmp.Diff(want, res, ignorePatch); diff != "" {
		t.Errorf("AbortCanary (-want +got):\n%s", diff)
	}
	c := getDeployment(t, cs, "web-canary")
	got := fmt.Sprintf("canary replicas=%d progress=%q stable newest=%s image=%s", replicas(c), c.Annotations[AnnotationCanary],
		getDeployment(t, cs, "web").Labels[LabelRejectedBuild], imageOf(t, cs, "web"))
	if diff := cmp.Diff(`canary replicas=0 progress="" stable newest=build-2 image=`+r1.Image.String(), got); diff != "" {
		t.Errorf("after the abort (-want +got):\n%s", diff)
	}

	if _, err := AbortCanary(context.Background(), kubetest.Adapt(cs), canaryTarget, Options{}); !errors.Is(err, ErrNoCanary) {
		t.Errorf("AbortCanary with no canary in progress: %v, want ErrNoCanary", err)
	}
}

func TestAbortCanaryStopsTheRunningInvocation(t *testing.T) {
	r1, r2 := release(1, digest1), release(2, digest2)
	stable, canary := canaryPair(r1)
	cs := newClientset(t, stable, canary)
	controller(t, cs, becomesAvailable)
	h := recordCanary(t, cs)
	aborted := make(chan error, 1)
	onHold(t, cs, func() {
		_, err := AbortCanary(context.Background(), kubetest.Adapt(cs), canaryTarget, Options{})
		aborted <- err
	})
	res, err := Canary(context.Background(), kubetest.Adapt(cs), canaryTarget, r2, canaryOptions(time.Hour))
	if err := <-aborted; err != nil {
		t.Fatalf("AbortCanary: %v", err)
	}
	if err != nil || res.Outcome != Skipped || !strings.Contains(res.Reason, "was rejected") {
		t.Errorf("Canary = %s %q %v, want skipped: its build was rejected", res.Outcome, res.Reason, err)
	}
	if diff := cmp.Diff([]string{"web-canary replicas=1", "web-canary replicas=0"}, h.get()); diff != "" {
		t.Errorf("traffic and stable writes (-want +got):\n%s", diff)
	}
}

// TestCanaryGates checks that the gates run to completion before the canary
// takes any traffic, and that a failing gate moves nothing and rejects the
// build, so that its redelivery runs no gate again.
func TestCanaryGates(t *testing.T) {
	r1, r2 := release(1, digest1), release(2, digest2)
	tests := []struct {
		name    string
		outcome map[string]jobOutcome // By gate.
		wantErr error
		// wantWrites are the first writes; all of them when the release
		// fails.
		wantWrites []string
		wantImage  string
	}{
		{"every gate completes", map[string]jobOutcome{"migrate": completes, "smoke": completes}, nil,
			[]string{"create jobs migrate-build2-4f6caf", "create jobs smoke-build2-4f6caf", "patch deployments web-canary"},
			r2.Image.String()},
		{"the smoke test fails", map[string]jobOutcome{"migrate": completes, "smoke": fails}, ErrGateFailed,
			[]string{"create jobs migrate-build2-4f6caf", "create jobs smoke-build2-4f6caf", "patch deployments web"},
			r1.Image.String()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stable, canary := canaryPair(r1)
			cs := newClientset(t, stable, canary, cronJob("migrate", gateContainer()), cronJob("smoke", gateContainer()))
			controller(t, cs, becomesAvailable)
			jobController(t, cs, func(j *batchv1.Job) jobOutcome { return tt.outcome[j.Labels[LabelGate]] })
			h := recordCanary(t, cs)
			o := canaryOptions(10 * time.Millisecond)
			o.Gates = webGates(time.Minute, "migrate", "smoke")

			res, err := Canary(context.Background(), kubetest.Adapt(cs), canaryTarget, r2, o)
			if !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
				t.Fatalf("Canary = %+v, %v; want error %v", res, err, tt.wantErr)
			}
			got := writes(cs)
			if err == nil {
				got = got[:min(len(got), len(tt.wantWrites))]
			}
			if diff := cmp.Diff(tt.wantWrites, got); diff != "" {
				t.Errorf("writes (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantImage, imageOf(t, cs, "web")); diff != "" {
				t.Errorf("stable image (-want +got):\n%s", diff)
			}
			if err == nil {
				if !strings.Contains(res.Reason, "after gates migrate, smoke completed") {
					t.Errorf("reason %q does not name the gates", res.Reason)
				}
				return
			}
			if got := h.get(); len(got) != 0 {
				t.Errorf("a failed gate moved traffic or the stable release: %q", got)
			}
			// The redelivery: skipped, and no gate runs again.
			before := len(writes(cs))
			res, err = Canary(context.Background(), kubetest.Adapt(cs), canaryTarget, r2, o)
			if err != nil || res.Outcome != Skipped || len(writes(cs)) != before {
				t.Errorf("redelivery = %s %q, %v, writes %q; want skipped with no write", res.Outcome, res.Reason, err, writes(cs)[before:])
			}
		})
	}
}

// TestCanaryPodUnreadyAtHoldStart: a pod of this release ready when the
// canary was seen rolled out (the pods as they were at that
// resourceVersion) and unready when the hold begins became unready after
// it was ready; one created after that point is only starting.
func TestCanaryPodUnreadyAtHoldStart(t *testing.T) {
	r1, r2 := release(1, digest1), release(2, digest2)
	unready := func(name string) *corev1.Pod {
		p := canaryPod(name, r2, 0)
		p.Status.Conditions[0].Status = corev1.ConditionFalse
		return p
	}
	tests := []struct {
		name string
		// snapshot is the pods at the rolled-out resourceVersion.
		snapshot []corev1.Pod
		wantErr  string
	}{
		{"ready at the rollout, unready at the hold", []corev1.Pod{*canaryPod("web-canary-a", r2, 0)},
			"canary aborted at 10%: pod web-canary-a became unready after it was ready"},
		{"created after the rollout", nil, ""},
		{"unready at the rollout too (not counted available)", []corev1.Pod{*unready("web-canary-a")}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stable, canary := canaryPair(r1)
			cs := newClientset(t, stable, canary, unready("web-canary-a"))
			controller(t, cs, becomesAvailable)
			var exact []string
			cs.PrependReactor("list", "pods", func(action clienttesting.Action) (bool, runtime.Object, error) {
				opts := action.(clienttesting.ListActionImpl).ListOptions
				if opts.ResourceVersionMatch != metav1.ResourceVersionMatchExact {
					return false, nil, nil
				}
				exact = append(exact, opts.ResourceVersion)
				return true, &corev1.PodList{Items: tt.snapshot}, nil
			})
			_, err := Canary(context.Background(), kubetest.Adapt(cs), canaryTarget, r2, CanaryOptions{Steps: []int{10}, Pause: 50 * time.Millisecond, Timeout: time.Minute})
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (!errors.Is(err, ErrCanaryAborted) || !strings.HasPrefix(err.Error(), tt.wantErr)) {
				t.Fatalf("Canary error = %v, want %q", err, tt.wantErr)
			}
			if len(exact) == 0 || exact[0] == "" {
				t.Errorf("snapshot lists at resourceVersions %q, want one at the rolled-out canary's", exact)
			}
		})
	}
}
