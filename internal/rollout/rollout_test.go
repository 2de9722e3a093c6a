package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"

	"github.com/onnewimage/onnewimage/internal/image"
	"github.com/onnewimage/onnewimage/internal/kube/kubetest"
)

const (
	repo    = "us-docker.pkg.dev/p/apps/web"
	digest1 = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	digest2 = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
	digest3 = "sha256:3333333333333333333333333333333333333333333333333333333333333333"
)

var (
	t0     = time.Date(2026, 11, 2, 10, 0, 0, 123456789, time.UTC)
	target = Target{Namespace: "prod", Deployment: "web", Container: "web"}
)

func release(n int, digest string) Release {
	return Release{
		BuildID:    "build-" + string(rune('0'+n)),
		CreateTime: t0.Add(time.Duration(n) * time.Hour),
		Commit:     "c0ffee" + string(rune('0'+n)) + "aabbccddeeff00112233445566778899aabb",
		Image:      image.Reference{Repository: repo, Tag: "v" + string(rune('0'+n)), Digest: digest},
	}
}

// recorded returns the annotations a deployment of r leaves behind.
func recorded(r Release) map[string]string {
	return map[string]string{
		AnnotationBuildID:         r.BuildID,
		AnnotationBuildCreateTime: r.CreateTime.Format(time.RFC3339Nano),
		AnnotationImage:           r.Image.String(),
		AnnotationCommit:          r.Commit,
		AnnotationChangeCause:     r.ChangeCause(),
	}
}

func patches(cs *fake.Clientset) []clienttesting.PatchActionImpl {
	var out []clienttesting.PatchActionImpl
	for _, a := range cs.Actions() {
		if p, ok := a.(clienttesting.PatchActionImpl); ok {
			out = append(out, p)
		}
	}
	return out
}

func getDeployment(t *testing.T, cs *fake.Clientset, name string) *appsv1.Deployment {
	t.Helper()
	d, err := cs.AppsV1().Deployments("prod").Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestRollingDeploys(t *testing.T) {
	ctx := context.Background()
	cs := newClientset(t, deployment("web", "us-docker.pkg.dev/p/apps/web:old", map[string]string{"team": "payments"}))
	r := release(1, digest1)

	res, err := Rolling(ctx, kubetest.Adapt(cs), target, r, Options{})
	if err != nil {
		t.Fatalf("Rolling: %v", err)
	}
	if res.Outcome != Deployed || res.Previous != "us-docker.pkg.dev/p/apps/web:old" {
		t.Errorf("Rolling() = %+v, want deployed from the old image", res)
	}

	ps := patches(cs)
	if len(ps) != 1 || len(cs.Actions()) != 2 {
		t.Fatalf("got %d patches in %d calls, want one GET and one PATCH", len(ps), len(cs.Actions()))
	}
	p := ps[0]
	if p.GetPatchType() != types.StrategicMergePatchType || p.PatchOptions.FieldManager != FieldManager || len(p.PatchOptions.DryRun) != 0 {
		t.Errorf("patch type %s, options %+v; want a strategic merge patch by %q, not a dry run", p.GetPatchType(), p.PatchOptions, FieldManager)
	}
	var got map[string]any
	if err := json.Unmarshal(p.GetPatch(), &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"metadata": map[string]any{
			"resourceVersion": "1",
			"annotations": map[string]any{
				AnnotationBuildID:         "build-1",
				AnnotationBuildCreateTime: "2026-11-02T11:00:00.123456789Z",
				AnnotationImage:           repo + ":v1@" + digest1,
				AnnotationCommit:          r.Commit,
				AnnotationChangeCause:     "onNewImage: build build-1 commit c0ffee1aabbc image " + repo + ":v1@" + digest1,
			},
			"labels": map[string]any{
				LabelNewestBuild:     "build-1",
				LabelNewestBuildTime: "20261102T110000.123456789Z",
			},
		},
		"spec": map[string]any{"template": map[string]any{"spec": map[string]any{
			"containers": []any{map[string]any{"name": "web", "image": repo + ":v1@" + digest1}},
		}}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("patch (-want +got):\n%s", diff)
	}

	d := getDeployment(t, cs, "web")
	if got := d.Spec.Template.Spec.Containers[1].Image; got != repo+":v1@"+digest1 {
		t.Errorf("web container image = %q", got)
	}
	if got := d.Spec.Template.Spec.Containers[0].Image; got != "gcr.io/p/proxy:1" {
		t.Errorf("sidecar image changed to %q", got)
	}
	if d.Annotations["team"] != "payments" || d.Annotations[AnnotationBuildID] != "build-1" {
		t.Errorf("annotations = %v, want ours added and others kept", d.Annotations)
	}
}

func TestRollingSkips(t *testing.T) {
	r2 := release(2, digest2)
	tests := []struct {
		name   string
		deploy *appsv1.Deployment
		reason string
	}{
		{"same digest running", deployment("web", repo+"@"+digest2, nil), "already running " + digest2},
		{"same digest, another tag", deployment("web", repo+":other@"+digest2, recorded(release(1, digest1))), "already running " + digest2},
		{"newer build recorded", deployment("web", repo+"@"+digest3, recorded(release(3, digest3))),
			"stale: build build-2 (created 2026-11-02T12:00:00Z) is not newer than the deployed build build-3 (created 2026-11-02T13:00:00Z)"},
		{"same build, image changed by hand", deployment("web", repo+":hotfix", recorded(r2)),
			"build build-2 was already deployed here (the image has since been changed by hand to " + repo + ":hotfix)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cs := newClientset(t, tt.deploy)
			res, err := Rolling(context.Background(), kubetest.Adapt(cs), target, r2, Options{})
			if err != nil {
				t.Fatalf("Rolling: %v", err)
			}
			if res.Outcome != Skipped || res.Reason != tt.reason {
				t.Errorf("Rolling() = %s %q, want skipped %q", res.Outcome, res.Reason, tt.reason)
			}
			if n := len(patches(cs)); n != 0 {
				t.Errorf("sent %d patches, want none", n)
			}
		})
	}
}

func TestRollingOrdersSameInstantByBuildID(t *testing.T) {
	a := release(1, digest1)
	b := a
	b.BuildID, b.Image.Digest = "build-z", digest2
	cs := newClientset(t, deployment("web", repo+"@"+digest1, recorded(a)))
	if res, err := Rolling(context.Background(), kubetest.Adapt(cs), target, b, Options{}); err != nil || res.Outcome != Deployed {
		t.Fatalf("Rolling(build-z after build-1, same createTime) = %+v, %v; want deployed", res, err)
	}
	if res, err := Rolling(context.Background(), kubetest.Adapt(cs), target, a, Options{}); err != nil || res.Outcome != Skipped {
		t.Errorf("Rolling(build-1 after build-z, same createTime) = %+v, %v; want skipped", res, err)
	}
}

func TestRollingRemovesStaleCommit(t *testing.T) {
	r := release(2, digest2)
	r.Commit = ""
	cs := newClientset(t, deployment("web", repo+"@"+digest1, recorded(release(1, digest1))))
	if _, err := Rolling(context.Background(), kubetest.Adapt(cs), target, r, Options{}); err != nil {
		t.Fatal(err)
	}
	d := getDeployment(t, cs, "web")
	if c, ok := d.Annotations[AnnotationCommit]; ok {
		t.Errorf("commit annotation = %q, want it removed (the new build has no commit)", c)
	}
	if d.Annotations[AnnotationBuildID] != "build-2" {
		t.Errorf("build annotation = %q", d.Annotations[AnnotationBuildID])
	}
}

func TestRollingDryRun(t *testing.T) {
	cs := newClientset(t, deployment("web", repo+"@"+digest1, nil))
	res, err := Rolling(context.Background(), kubetest.Adapt(cs), target, release(2, digest2), Options{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Outcome != Skipped || len(res.Patch) == 0 {
		t.Errorf("Rolling(dry run) = %+v, want skipped with the patch", res)
	}
	ps := patches(cs)
	if len(ps) != 1 || cmp.Diff([]string{metav1.DryRunAll}, ps[0].PatchOptions.DryRun) != "" {
		t.Fatalf("patches = %+v, want one server-side dry run", ps)
	}
	if got := getDeployment(t, cs, "web").Spec.Template.Spec.Containers[1].Image; got != repo+"@"+digest1 {
		t.Errorf("dry run changed the image to %q", got)
	}
}

func TestRollingTargetMissing(t *testing.T) {
	cs := newClientset(t, deployment("web", repo+"@"+digest1, nil))
	_, err := Rolling(context.Background(), kubetest.Adapt(cs), Target{Namespace: "prod", Deployment: "web", Container: "api"}, release(2, digest2), Options{})
	if !errors.Is(err, ErrTargetMissing) {
		t.Errorf("missing container: error = %v, want ErrTargetMissing", err)
	}
	_, err = Rolling(context.Background(), kubetest.Adapt(cs), Target{Namespace: "prod", Deployment: "api", Container: "web"}, release(2, digest2), Options{})
	if !apierrors.IsNotFound(err) {
		t.Errorf("missing deployment: error = %v, want NotFound", err)
	}
	if n := len(patches(cs)); n != 0 {
		t.Errorf("sent %d patches, want none", n)
	}
}

// interleave makes the first patch of the deployment lose a race: just before
// it lands, another invocation deploys `other`. The fake holds its lock while
// reactors run, so the racing write goes to the tracker directly, bumping the
// resourceVersion as the API server would.
func interleave(t *testing.T, cs *fake.Clientset, other Release) {
	raced := false
	cs.PrependReactor("patch", "deployments", func(action clienttesting.Action) (bool, runtime.Object, error) {
		if raced {
			return false, nil, nil
		}
		raced = true
		gvr := appsv1.SchemeGroupVersion.WithResource("deployments")
		obj, err := cs.Tracker().Get(gvr, "prod", "web")
		if err != nil {
			t.Fatal(err)
		}
		d := obj.(*appsv1.Deployment)
		d.Annotations = recorded(other)
		d.Spec.Template.Spec.Containers[1].Image = other.Image.String()
		if err := bump(cs.Tracker(), gvr, "prod", d, d.ResourceVersion); err != nil {
			t.Fatal(err)
		}
		return false, nil, nil // Now let this patch reach the resourceVersion check.
	})
}

func TestRollingRaceNewerWins(t *testing.T) {
	r2, r3 := release(2, digest2), release(3, digest3)

	t.Run("older build loses to a newer one", func(t *testing.T) {
		cs := newClientset(t, deployment("web", repo+"@"+digest1, recorded(release(1, digest1))))
		interleave(t, cs, r3)
		res, err := Rolling(context.Background(), kubetest.Adapt(cs), target, r2, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if res.Outcome != Skipped {
			t.Errorf("build 2 after build 3 won the race: %+v, want skipped as stale", res)
		}
		if got := getDeployment(t, cs, "web").Annotations[AnnotationBuildID]; got != "build-3" {
			t.Errorf("deployment records %s, want build-3", got)
		}
	})

	t.Run("newer build retries over an older one", func(t *testing.T) {
		cs := newClientset(t, deployment("web", repo+"@"+digest1, recorded(release(1, digest1))))
		interleave(t, cs, r2)
		res, err := Rolling(context.Background(), kubetest.Adapt(cs), target, r3, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if res.Outcome != Deployed || res.Previous != r2.Image.String() {
			t.Errorf("Rolling(build 3) = %+v, want deployed over build 2", res)
		}
		d := getDeployment(t, cs, "web")
		if d.Annotations[AnnotationBuildID] != "build-3" || d.Spec.Template.Spec.Containers[1].Image != r3.Image.String() {
			t.Errorf("deployment records %s running %s, want build-3", d.Annotations[AnnotationBuildID], d.Spec.Template.Spec.Containers[1].Image)
		}
		if n := len(patches(cs)); n != 2 { // The first try (Conflict), then the retry.
			t.Errorf("sent %d patches, want 2", n)
		}
	})
}

func TestRollingGivesUpOnEndlessConflicts(t *testing.T) {
	cs := newClientset(t, deployment("web", repo+"@"+digest1, nil))
	cs.PrependReactor("patch", "deployments", func(clienttesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewConflict(appsv1.Resource("deployments"), "web", errors.New("busy"))
	})
	_, err := Rolling(context.Background(), kubetest.Adapt(cs), target, release(2, digest2), Options{})
	if !apierrors.IsConflict(err) {
		t.Errorf("error = %v, want the Conflict back (Pub/Sub retries later)", err)
	}
	if n := len(patches(cs)); n != conflictBackoff.Steps {
		t.Errorf("tried %d times, want %d", n, conflictBackoff.Steps)
	}
}

// undoByHand does to the Deployment what `kubectl rollout undo` does: the
// pod template and the annotations become those of the revision that
// recorded `to`; labels are left alone.
func undoByHand(t *testing.T, cs *fake.Clientset, to Release) {
	t.Helper()
	obj, err := cs.Tracker().Get(deploymentsGVR, "prod", "web")
	if err != nil {
		t.Fatal(err)
	}
	d := obj.(*appsv1.Deployment)
	d.Annotations = recorded(to)
	d.Spec.Template.Spec.Containers[1].Image = to.Image.String()
	if err := bump(cs.Tracker(), deploymentsGVR, "prod", d, d.ResourceVersion); err != nil {
		t.Fatal(err)
	}
}

// A rollback (kubectl rollout undo) sticks: the build it took out, and any
// build not newer than it, is skipped when delivered again; a newer build
// is deployed.
func TestRollingRollbackSticks(t *testing.T) {
	r1, r2, r3 := release(1, digest1), release(2, digest2), release(3, digest3)
	between := release(9, digest3)
	between.BuildID, between.CreateTime = "build-1b", r1.CreateTime.Add(time.Minute)
	cs := newClientset(t, deployment("web", repo+":initial", nil))
	for _, r := range []Release{r1, r2} {
		if res, err := Rolling(context.Background(), kubetest.Adapt(cs), target, r, Options{}); err != nil || res.Outcome != Deployed {
			t.Fatalf("Rolling(%s) = %+v, %v", r.BuildID, res, err)
		}
	}
	undoByHand(t, cs, r1)

	var got []string
	for _, r := range []Release{r2, between, r3} {
		res, err := Rolling(context.Background(), kubetest.Adapt(cs), target, r, Options{})
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(res.Outcome)+": "+res.Reason)
	}
	want := []string{
		"skipped: build build-2 was deployed here and rolled back (the deployment records build build-1): only a build newer than it is deployed",
		"skipped: stale: build build-1b (created 2026-11-02T11:01:00Z) is not newer than the newest build deployed here, build-2 (created 2026-11-02T12:00:00Z), which was rolled back (the deployment records build build-1)",
		"deployed: web rolls from " + r1.Image.String() + " to " + r3.Image.String(),
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("after kubectl rollout undo (-want +got):\n%s", diff)
	}
	d := getDeployment(t, cs, "web")
	wantLabels := map[string]string{LabelNewestBuild: "build-3", LabelNewestBuildTime: "20261102T130000.123456789Z"}
	if diff := cmp.Diff(wantLabels, d.Labels); diff != "" {
		t.Errorf("labels (-want +got):\n%s", diff)
	}
}

func TestRollingRefusesABuildIDThatIsNoLabelValue(t *testing.T) {
	r := release(2, digest2)
	r.BuildID = "build/2"
	cs := newClientset(t, deployment("web", repo+"@"+digest1, nil))
	res, err := Rolling(context.Background(), kubetest.Adapt(cs), target, r, Options{})
	if !errors.Is(err, ErrBuildIDInvalid) || res.Outcome != "" {
		t.Errorf("Rolling(build ID %q) = %+v, %v; want the zero Result and ErrBuildIDInvalid", r.BuildID, res, err)
	}
	if n := len(cs.Actions()); n != 0 {
		t.Errorf("made %d calls, want none", n)
	}
}

// A record that cannot be read is not taken as "no record": nothing is
// deployed, and the error names the object, the key and what to do.
func TestRollingUnreadableRecordFailsClosed(t *testing.T) {
	r1, r2 := release(1, digest1), release(2, digest2)
	with := func(edit func(d *appsv1.Deployment)) *appsv1.Deployment {
		d := deployment("web", r1.Image.String(), recorded(r1))
		d.Labels = map[string]string{LabelNewestBuild: "build-1", LabelNewestBuildTime: "20261102T110000.123456789Z"}
		edit(d)
		return d
	}
	tests := []struct {
		name   string
		deploy *appsv1.Deployment
		want   string
	}{
		{"createTime not RFC 3339", with(func(d *appsv1.Deployment) { d.Annotations[AnnotationBuildCreateTime] = "yesterday" }),
			`deployment prod/web has annotation onnewimage.dev/build-create-time="yesterday", which is not an RFC 3339 time: correct it by hand`},
		{"createTime without build ID", with(func(d *appsv1.Deployment) { delete(d.Annotations, AnnotationBuildID) }),
			`deployment prod/web has annotation onnewimage.dev/build-create-time="2026-11-02T11:00:00.123456789Z" but no onnewimage.dev/build-id`},
		{"build ID without createTime", with(func(d *appsv1.Deployment) { delete(d.Annotations, AnnotationBuildCreateTime) }),
			`deployment prod/web has annotation onnewimage.dev/build-id="build-1" but no onnewimage.dev/build-create-time`},
		{"mark time unreadable", with(func(d *appsv1.Deployment) { d.Labels[LabelNewestBuildTime] = "2026-11-02" }),
			`deployment prod/web has label onnewimage.dev/newest-build-time="2026-11-02", which is not a time like 20060102T150405.000000000Z`},
		{"mark time without build", with(func(d *appsv1.Deployment) { delete(d.Labels, LabelNewestBuild) }),
			`deployment prod/web has label onnewimage.dev/newest-build-time="20261102T110000.123456789Z" but no onnewimage.dev/newest-build`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cs := newClientset(t, tt.deploy)
			res, err := Rolling(context.Background(), kubetest.Adapt(cs), target, r2, Options{})
			if !errors.Is(err, ErrRecordUnreadable) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %v, want ErrRecordUnreadable saying %q", err, tt.want)
			}
			if res.Outcome != "" {
				t.Errorf("outcome %q, want the zero Result", res.Outcome)
			}
			if n := len(patches(cs)); n != 0 {
				t.Errorf("sent %d patches, want none", n)
			}
		})
	}
}

// The container may be an init container, a native sidecar among them.
func TestRollingInitContainer(t *testing.T) {
	always := corev1.ContainerRestartPolicyAlways
	d := deployment("web", repo+"@"+digest1, nil)
	d.Spec.Template.Spec.InitContainers = []corev1.Container{
		{Name: "migrate", Image: repo + "-migrate:1"},
		{Name: "proxy", Image: "gcr.io/p/proxy:1", RestartPolicy: &always},
	}
	r := release(2, digest2)
	cs := newClientset(t, d)
	res, err := Rolling(context.Background(), kubetest.Adapt(cs), Target{Namespace: "prod", Deployment: "web", Container: "proxy"}, r, Options{})
	if err != nil || res.Outcome != Deployed || res.Previous != "gcr.io/p/proxy:1" {
		t.Fatalf("Rolling(proxy) = %+v, %v; want deployed from gcr.io/p/proxy:1", res, err)
	}
	var p map[string]any
	if err := json.Unmarshal(patches(cs)[0].GetPatch(), &p); err != nil {
		t.Fatal(err)
	}
	wantSpec := map[string]any{"template": map[string]any{"spec": map[string]any{
		"initContainers": []any{map[string]any{"name": "proxy", "image": r.Image.String()}},
	}}}
	if diff := cmp.Diff(wantSpec, p["spec"]); diff != "" {
		t.Errorf("patch spec (-want +got):\n%s", diff)
	}
	spec := getDeployment(t, cs, "web").Spec.Template.Spec
	got := []string{spec.InitContainers[0].Image, spec.InitContainers[1].Image, spec.Containers[0].Image, spec.Containers[1].Image}
	if diff := cmp.Diff([]string{repo + "-migrate:1", r.Image.String(), "gcr.io/p/proxy:1", repo + "@" + digest1}, got); diff != "" {
		t.Errorf("images: migrate, proxy (init), sidecar, web (-want +got):\n%s", diff)
	}

	_, err = Rolling(context.Background(), kubetest.Adapt(cs), Target{Namespace: "prod", Deployment: "web", Container: "api"}, release(3, digest3), Options{})
	want := `deployment prod/web has no container "api" (it has containers "sidecar", "web" and init containers "migrate", "proxy")`
	if !errors.Is(err, ErrTargetMissing) || !strings.Contains(err.Error(), want) {
		t.Errorf("error = %v, want ErrTargetMissing saying %q", err, want)
	}
}

// A Result means something only when the error is nil: every function
// returns the zero Result with its error, whatever failed.
func TestResultIsZeroOnError(t *testing.T) {
	r1, r2, r3 := release(1, digest1), release(2, digest2), release(3, digest3)
	conflicts := func(cs *fake.Clientset, resource string) {
		cs.PrependReactor("patch", resource, func(clienttesting.Action) (bool, runtime.Object, error) {
			return true, nil, apierrors.NewConflict(appsv1.Resource(resource), "web", errors.New("busy"))
		})
	}
	tests := []struct {
		name string
		run  func(t *testing.T) (Result, error)
	}{
		{"rolling: the container is missing", func(t *testing.T) (Result, error) {
			cs := newClientset(t, deployment("web", repo+"@"+digest1, nil))
			return Rolling(context.Background(), kubetest.Adapt(cs), Target{Namespace: "prod", Deployment: "web", Container: "api"}, r2, Options{})
		}},
		{"rolling: endless conflicts", func(t *testing.T) (Result, error) {
			cs := newClientset(t, deployment("web", repo+"@"+digest1, nil))
			conflicts(cs, "deployments")
			return Rolling(context.Background(), kubetest.Adapt(cs), target, r2, Options{})
		}},
		{"blue-green: the release never becomes available", func(t *testing.T) (Result, error) {
			cs := newClientset(t, svcRouter(Blue, routerAnnotations(r1, Green)), colour(Blue, r1, 3), colour(Green, release0, 3))
			controller(t, cs, oneUnavailable)
			return BlueGreen(context.Background(), kubetest.Adapt(cs), bgTarget(ServiceRouter), r2, BlueGreenOptions{Timeout: 100 * time.Millisecond})
		}},
		{"blue-green: the router claim keeps conflicting", func(t *testing.T) (Result, error) {
			cs := newClientset(t, svcRouter(Blue, routerAnnotations(r1, Green)), colour(Blue, r1, 3), colour(Green, release0, 3))
			conflicts(cs, "services")
			return BlueGreen(context.Background(), kubetest.Adapt(cs), bgTarget(ServiceRouter), r2, BlueGreenOptions{})
		}},
		{"rollback: no previous release", func(t *testing.T) (Result, error) {
			cs := newClientset(t, svcRouter(Green, routerAnnotations(r2, Blue)), colour(Blue, r3, 3), colour(Green, r2, 3))
			return Rollback(context.Background(), kubetest.Adapt(cs), bgTarget(ServiceRouter), BlueGreenOptions{})
		}},
		{"undo: the deployment changed", func(t *testing.T) (Result, error) {
			cs := newClientset(t, revisions(r1, r2)...)
			conflicts(cs, "deployments")
			return Undo(context.Background(), kubetest.Adapt(cs), target, Options{})
		}},
		{"rollback: the router changed", func(t *testing.T) (Result, error) {
			cs := newClientset(t, svcRouter(Green, routerAnnotations(r2, Blue)), colour(Blue, r1, 3), colour(Green, r2, 3))
			conflicts(cs, "services")
			return Rollback(context.Background(), kubetest.Adapt(cs), bgTarget(ServiceRouter), BlueGreenOptions{})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := tt.run(t)
			if err == nil {
				t.Fatalf("no error (result %+v): the test needs a failure", res)
			}
			if diff := cmp.Diff(Result{}, res); diff != "" {
				t.Errorf("Result with error %q (-want +got):\n%s", err, diff)
			}
		})
	}
}
