package sandbox

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/cloudbuild/apiv1/v2/cloudbuildpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/onnewimage/onnewimage/internal/rollout"
	"github.com/onnewimage/onnewimage/internal/testenv/pubsubemu"
)

// start starts a sandbox for one test, waits until the Deployments named
// (default: the sample app's) are rolled out, and stops it when the test
// ends, whatever happens.
func start(t *testing.T, opts Options, deployments ...string) (*Sandbox, context.Context) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end: starts a local control plane and the Pub/Sub emulator")
	}
	// The first run builds the control plane's binaries: allow for it.
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	t.Cleanup(cancel)
	if opts.Log == nil {
		opts.Log = testWriter{t}
	}
	sb, err := Start(ctx, opts)
	if errors.Is(err, pubsubemu.ErrNotInstalled) && os.Getenv("CI") == "" {
		t.Skipf("end-to-end: %v (install the Google Cloud CLI's pubsub-emulator component; CI never skips)", err)
	}
	if err != nil {
		t.Fatalf("starting the sandbox: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, l := range sb.Function.Logs() {
				t.Logf("function: %v", l)
			}
		}
		if err := sb.Stop(); err != nil {
			t.Errorf("stopping the sandbox: %v", err)
		}
	})
	if len(deployments) == 0 {
		deployments = []string{Deployment}
	}
	for _, name := range deployments {
		if _, err := sb.WaitRolledOut(ctx, name, nil); err != nil {
			t.Fatal(err)
		}
	}
	return sb, ctx
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func load(t *testing.T, name string) *cloudbuildpb.Build {
	t.Helper()
	b, err := LoadBuild("testdata/builds/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func pinned(b *cloudbuildpb.Build) string {
	imgs := b.GetResults().GetImages()
	return imgs[0].GetName() + "@" + imgs[0].GetDigest()
}

// publish publishes b and waits for the function's decision on it.
func publish(ctx context.Context, t *testing.T, sb *Sandbox, b *cloudbuildpb.Build) map[string]any {
	t.Helper()
	seen := len(sb.Function.Logs())
	if _, err := sb.Publish(ctx, b); err != nil {
		t.Fatal(err)
	}
	wait, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	line, err := sb.Function.WaitLog(wait, seen, func(l map[string]any) bool {
		return l["buildId"] == b.GetId() && l["status"] == b.GetStatus().String()
	})
	if err != nil {
		t.Fatal(err)
	}
	return line
}

func webContainer(d *appsv1.Deployment) string {
	for _, c := range d.Spec.Template.Spec.Containers {
		if c.Name == "web" {
			return c.Image
		}
	}
	return ""
}

// waitLive waits until the Deployment is rolled out on image.
func waitLive(ctx context.Context, t *testing.T, sb *Sandbox, image string) *appsv1.Deployment {
	t.Helper()
	return waitRolledOutOn(ctx, t, sb, Deployment, image)
}

// waitRolledOutOn waits until the Deployment name is rolled out on image.
func waitRolledOutOn(ctx context.Context, t *testing.T, sb *Sandbox, name, image string) *appsv1.Deployment {
	t.Helper()
	wait, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	d, err := sb.WaitRolledOut(wait, name, func(d *appsv1.Deployment) bool { return webContainer(d) == image })
	if err != nil {
		t.Fatalf("deployment never rolled out on %s (last: %s): %v", image, webContainer(d), err)
	}
	return d
}

func getWeb(ctx context.Context, t *testing.T, sb *Sandbox) *appsv1.Deployment {
	t.Helper()
	d, err := sb.Admin.AppsV1().Deployments(Namespace).Get(ctx, Deployment, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// revisions counts the Deployment's ReplicaSets: one per rollout.
func revisions(ctx context.Context, t *testing.T, sb *Sandbox) int {
	t.Helper()
	rss, err := sb.Admin.AppsV1().ReplicaSets(Namespace).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil {
		t.Fatal(err)
	}
	return len(rss.Items)
}

func TestE2ESuccessDeploysAndNothingElseDoes(t *testing.T) {
	sb, ctx := start(t, Options{})
	before := getWeb(ctx, t, sb)
	b := load(t, "web-1-success.json")

	for _, st := range []cloudbuildpb.Build_Status{cloudbuildpb.Build_QUEUED, cloudbuildpb.Build_WORKING, cloudbuildpb.Build_FAILURE} {
		line := publish(ctx, t, sb, WithStatus(b, st))
		if line["outcome"] != "skipped" || line["reason"] != fmt.Sprintf("build status is %s, not SUCCESS", st) {
			t.Errorf("%s: %v", st, line)
		}
	}
	if after := getWeb(ctx, t, sb); after.Generation != before.Generation || after.ResourceVersion != before.ResourceVersion {
		t.Errorf("non-SUCCESS messages changed the deployment (generation %d→%d)", before.Generation, after.Generation)
	}

	line := publish(ctx, t, sb, b)
	if line["outcome"] != "deployed" || line["severity"] != "NOTICE" || line["image"] != pinned(b) {
		t.Fatalf("SUCCESS: %v", line)
	}
	d := waitLive(ctx, t, sb, pinned(b))
	for k, want := range map[string]string{
		rollout.AnnotationBuildID:         b.GetId(),
		rollout.AnnotationBuildCreateTime: "2026-11-02T10:00:00.123456789Z",
		rollout.AnnotationCommit:          "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678",
		rollout.AnnotationImage:           pinned(b),
	} {
		if got := d.Annotations[k]; got != want {
			t.Errorf("annotation %s = %q, want %q", k, got, want)
		}
	}
	if got := d.ManagedFields; !managedBy(got, rollout.FieldManager) {
		t.Errorf("no managed fields owned by %q: the patch did not carry the field manager", rollout.FieldManager)
	}
	if n := revisions(ctx, t, sb); n != 2 {
		t.Errorf("%d ReplicaSets, want 2 (initial and build 1)", n)
	}
}

func managedBy(entries []metav1.ManagedFieldsEntry, manager string) bool {
	for _, e := range entries {
		if e.Manager == manager {
			return true
		}
	}
	return false
}

func TestE2EFunctionHasOnlyTheShippedRights(t *testing.T) {
	sb, ctx := start(t, Options{})
	as, err := kubernetes.NewForConfig(sb.FunctionIdentity())
	if err != nil {
		t.Fatal(err)
	}
	other := getWeb(ctx, t, sb).DeepCopy()
	other.Name, other.ResourceVersion, other.UID, other.ManagedFields = "other", "", "", nil
	if _, err := sb.Admin.AppsV1().Deployments(Namespace).Create(ctx, other, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	patch := []byte(`{"metadata":{"annotations":{"probe":"x"}}}`)
	dry := metav1.PatchOptions{DryRun: []string{metav1.DryRunAll}}

	if _, err := as.AppsV1().Deployments(Namespace).Patch(ctx, Deployment, types.StrategicMergePatchType, patch, dry); err != nil {
		t.Errorf("patching deployment web as the function: %v, want allowed", err)
	}
	for name, call := range map[string]func() error{
		"list secrets": func() error { _, err := as.CoreV1().Secrets(Namespace).List(ctx, metav1.ListOptions{}); return err },
		"get a secret": func() error {
			_, err := as.CoreV1().Secrets(Namespace).Get(ctx, "any", metav1.GetOptions{})
			return err
		},
		"patch another deployment": func() error {
			_, err := as.AppsV1().Deployments(Namespace).Patch(ctx, "other", types.StrategicMergePatchType, patch, dry)
			return err
		},
		"list deployments": func() error { _, err := as.AppsV1().Deployments(Namespace).List(ctx, metav1.ListOptions{}); return err },
		"delete web": func() error {
			return as.AppsV1().Deployments(Namespace).Delete(ctx, Deployment, metav1.DeleteOptions{DryRun: dry.DryRun})
		},
		"patch web in kube-system": func() error {
			_, err := as.AppsV1().Deployments("kube-system").Patch(ctx, Deployment, types.StrategicMergePatchType, patch, dry)
			return err
		},
	} {
		if err := call(); !apierrors.IsForbidden(err) {
			t.Errorf("%s as the function: %v, want Forbidden", name, err)
		}
	}

	// And with exactly those rights, a build deploys.
	b := load(t, "web-1-success.json")
	if line := publish(ctx, t, sb, b); line["outcome"] != "deployed" {
		t.Fatalf("deploy with the shipped RBAC: %v", line)
	}
	waitLive(ctx, t, sb, pinned(b))
}

func TestE2EDuplicatesAndOutOfOrderEndOnTheNewest(t *testing.T) {
	sb, ctx := start(t, Options{})
	b1, b2, b3 := load(t, "web-1-success.json"), load(t, "web-2-success.json"), load(t, "web-3-success.json")
	order := []*cloudbuildpb.Build{b2, b1, b2, b3, b1, b3, b2}
	seen := publishOverlapping(ctx, t, sb, order, 2*time.Minute, func(map[string]any) bool { return true })
	waitLive(ctx, t, sb, pinned(b3))

	lines := sb.Function.Logs()[seen:]
	for _, l := range lines {
		if l["outcome"] != "deployed" && l["outcome"] != "skipped" {
			t.Errorf("unexpected decision: %v", l)
		}
	}
	deployed := deployedInOrder(t, lines, b1, b2, b3)
	if len(deployed) == 0 || deployed[len(deployed)-1] != b3.GetId() {
		t.Errorf("deployed %v, want build 3 last", deployed)
	}
	if n := revisions(ctx, t, sb); n != 1+len(deployed) {
		t.Errorf("%d ReplicaSets for %d deploys: want one rollout per deploy and none for the rest", n, len(deployed))
	}
	if got := getWeb(ctx, t, sb).Annotations[rollout.AnnotationBuildID]; got != b3.GetId() {
		t.Errorf("deployment records build %s, want %s", got, b3.GetId())
	}
	t.Logf("%d messages, deployed %v", len(order), deployed)
}

// publishOverlapping publishes builds back to back, so that their deliveries
// overlap, and waits (at most timeout) until one log line per message
// satisfies counts. It returns how many log lines there were before, so that
// the caller can read what came since.
func publishOverlapping(ctx context.Context, t *testing.T, sb *Sandbox, builds []*cloudbuildpb.Build, timeout time.Duration, counts func(map[string]any) bool) (seen int) {
	t.Helper()
	seen = len(sb.Function.Logs())
	for _, b := range builds {
		if _, err := sb.Publish(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	wait, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	counted := func() int {
		n := 0
		for _, l := range sb.Function.Logs()[seen:] {
			if counts(l) {
				n++
			}
		}
		return n
	}
	for counted() < len(builds) {
		if _, err := sb.Function.WaitLog(wait, len(sb.Function.Logs()), func(map[string]any) bool { return true }); err != nil {
			t.Fatalf("%d decisions for %d messages: %v", counted(), len(builds), err)
		}
	}
	return seen
}

// deployedInOrder returns the builds that log lines record as deployed, in
// order, and fails the test unless each is newer (by createTime) than the
// one before it: no regression, no repeat.
func deployedInOrder(t *testing.T, lines []map[string]any, builds ...*cloudbuildpb.Build) []string {
	t.Helper()
	created := map[string]time.Time{}
	for _, b := range builds {
		created[b.GetId()] = b.GetCreateTime().AsTime()
	}
	var deployed []string
	for _, l := range lines {
		if l["outcome"] == "deployed" {
			deployed = append(deployed, l["buildId"].(string))
		}
	}
	for i := 1; i < len(deployed); i++ {
		if !created[deployed[i]].After(created[deployed[i-1]]) {
			t.Errorf("deployed %v: build %s after %s is a regression or a repeat", deployed, deployed[i], deployed[i-1])
		}
	}
	return deployed
}

// TestE2EFaultsAreRetriedAndNothingIsLost breaks, in turn, each thing the
// function depends on, publishes a build meanwhile, and checks that the
// function asks for redelivery (an ERROR line with retry=true), and that
// once the fault clears the build is deployed.
func TestE2EFaultsAreRetriedAndNothingIsLost(t *testing.T) {
	sb, ctx := start(t, Options{})
	builds := []*cloudbuildpb.Build{load(t, "web-1-success.json"), load(t, "web-2-success.json"), load(t, "web-3-success.json")}
	faults := []struct {
		name   string
		inject func()
		heal   func()
	}{
		{"container api denies GetCluster (IAM not granted yet)",
			func() { sb.ContainerAPI.Fail(status.Error(codes.PermissionDenied, "container.clusters.get denied")) },
			func() { sb.ContainerAPI.Fail(nil) }},
		{"token service down",
			func() { sb.Tokens.Fail(http.StatusServiceUnavailable) },
			func() { sb.Tokens.Fail(0) }},
		{"kube-apiserver restarting",
			nil, nil}, // Handled below: the restart itself is the fault.
	}
	for i, f := range faults {
		b := builds[i]
		// A cold instance: the next event has to connect again.
		if err := sb.StartFunction(ctx, nil); err != nil {
			t.Fatal(err)
		}
		seen := len(sb.Function.Logs())
		restarted := make(chan error, 1)
		if f.inject != nil {
			f.inject()
		} else {
			go func() { restarted <- sb.Cluster.RestartAPIServer(ctx, 4*time.Second) }()
			time.Sleep(500 * time.Millisecond) // Let the apiserver go down first.
		}
		if _, err := sb.Publish(ctx, b); err != nil {
			t.Fatal(err)
		}
		wait, cancel := context.WithTimeout(ctx, 2*time.Minute)
		failed, err := sb.Function.WaitLog(wait, seen, func(l map[string]any) bool { return l["buildId"] == b.GetId() })
		cancel()
		if err != nil {
			t.Fatalf("%s: %v", f.name, err)
		}
		if failed["outcome"] != "failed" || failed["retry"] != true || failed["severity"] != "ERROR" {
			t.Errorf("%s: first decision %v, want a failure asking for redelivery", f.name, failed)
		}
		if f.heal != nil {
			time.Sleep(2 * time.Second) // The fault lasts a while: several redeliveries fail.
			f.heal()
		} else if err := <-restarted; err != nil {
			t.Fatal(err)
		}
		wait, cancel = context.WithTimeout(ctx, 2*time.Minute)
		ok, err := sb.Function.WaitLog(wait, seen, func(l map[string]any) bool { return l["buildId"] == b.GetId() && l["outcome"] == "deployed" })
		cancel()
		if err != nil {
			t.Fatalf("%s: the build was never deployed after the fault cleared: %v", f.name, err)
		}
		waitLive(ctx, t, sb, pinned(b))
		t.Logf("%s: failed first (%s), deployed on redelivery: %s", f.name, failed["reason"], ok["reason"])
	}
}

// TestE2EForbiddenUntilAnOperatorGrantsRBAC starts without k8s/rbac.yaml:
// the function must say which permission is missing and ask for
// redelivery, and the build must deploy once the Role is applied.
func TestE2EForbiddenUntilAnOperatorGrantsRBAC(t *testing.T) {
	sb, ctx := start(t, Options{Manifests: []string{"k8s/deployment.yaml", "k8s/service.yaml"}})
	b := load(t, "web-1-success.json")
	line := publish(ctx, t, sb, b)
	reason, _ := line["reason"].(string)
	if line["outcome"] != "failed" || line["retry"] != true ||
		!strings.Contains(reason, `User "`+ServiceAccount+`" cannot get resource "deployments"`) || !strings.Contains(reason, "k8s/rbac.yaml") {
		t.Fatalf("without RBAC: %v; want a retried failure naming the missing permission", line)
	}
	if err := sb.Apply(ctx, "k8s/rbac.yaml"); err != nil {
		t.Fatal(err)
	}
	wait, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if _, err := sb.Function.WaitLog(wait, 0, func(l map[string]any) bool { return l["buildId"] == b.GetId() && l["outcome"] == "deployed" }); err != nil {
		t.Fatalf("never deployed after the Role was applied: %v", err)
	}
	waitLive(ctx, t, sb, pinned(b))
}
