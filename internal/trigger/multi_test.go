package trigger

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/onnewimage/onnewimage/internal/kube"
	"github.com/onnewimage/onnewimage/internal/rollout"
	"github.com/onnewimage/onnewimage/internal/target"
)

// A team's targets: two on the staging cluster from main, one on the prod
// cluster from a release tag, and one of an image no build here pushes.
const teamTargets = `  - {name: web-staging, image: ` + webRepo + `, when: {branch: main}, cluster: {project: demo-project, location: us-central1, name: staging}, namespace: web, deployment: web, container: web}
  - {name: worker-staging, image: ` + webRepo + `, when: {branch: main}, cluster: {project: demo-project, location: us-central1, name: staging}, namespace: worker, deployment: worker, container: web}
  - {name: web-prod, image: ` + webRepo + `, when: {tag: 'v[0-9]+\.[0-9]+\.[0-9]+'}, cluster: {project: demo-project, location: us-central1, name: prod}, namespace: web, deployment: web, container: web}
  - {name: api, image: us-docker.pkg.dev/demo-project/apps/api, cluster: {project: demo-project, location: us-central1, name: staging}, namespace: api, deployment: api, container: api}
`

// deployment is namespace/name running webRepo:initial in container web.
func deployment(namespace, name string) *appsv1.Deployment {
	d := webDeployment()
	d.Namespace, d.Name = namespace, name
	return d
}

// clusters are fake clusters by name, each reached through its own counted
// connector.
type clusters struct {
	mu       sync.Mutex
	conns    map[string]*connector
	connects map[string]int // Connect calls by cluster Key.
}

func newClusters(byName map[string]kubernetes.Interface) *clusters {
	c := &clusters{conns: map[string]*connector{}, connects: map[string]int{}}
	for name, client := range byName {
		c.conns[name] = &connector{client: client}
	}
	return c
}

func (c *clusters) connect(cl target.Cluster) Connector {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.connects[cl.Key()]++
	return c.conns[cl.Name]
}

// teamBuild is web-1 (built from main) with its BRANCH_NAME and TAG_NAME
// replaced ("" removes one) in its substitutions and its
// source.repoSource, as Cloud Build would publish it for that ref.
func teamBuild(t testing.TB, branch, tag string) []byte {
	t.Helper()
	var b map[string]any
	if err := json.Unmarshal(readBuild(t, "web-1-success.json"), &b); err != nil {
		t.Fatal(err)
	}
	subs := b["substitutions"].(map[string]any)
	for k, v := range map[string]string{"BRANCH_NAME": branch, "TAG_NAME": tag} {
		delete(subs, k)
		if v != "" {
			subs[k] = v
		}
	}
	rs := b["source"].(map[string]any)["repoSource"].(map[string]any)
	delete(rs, "branchName")
	if branch != "" {
		rs["branchName"] = branch
	}
	if tag != "" {
		rs["tagName"] = tag
	}
	raw, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// outcome is a report in brief.
type outcome struct {
	Target, Outcome, Reason string
	Retry                   bool
}

func brief(reps []Report) []outcome {
	var out []outcome
	for _, r := range reps {
		reason := r.Reason
		if r.Outcome == rollout.Deployed {
			reason = "" // Checked on the Deployments.
		}
		out = append(out, outcome{r.Target, string(r.Outcome), reason, Retryable(r.Err)})
	}
	return out
}

// images returns the image each Deployment runs, by cluster/namespace/name.
func images(t *testing.T, byName map[string]*fake.Clientset) map[string]string {
	t.Helper()
	out := map[string]string{}
	for name, cs := range byName {
		list, err := cs.AppsV1().Deployments("").List(context.Background(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range list.Items {
			out[name+"/"+d.Namespace+"/"+d.Name] = d.Spec.Template.Spec.Containers[0].Image
		}
	}
	return out
}

func TestHandleSeveralTargets(t *testing.T) {
	digest := "@sha256:4edb907ab84acf0d0ee47f6fa49b6dbc2725c7cc0205d2b249c17a64779b5eba"
	initial, deployed := webRepo+":initial", webRepo+":a1b2c3d"+digest
	stagingKey := "projects/demo-project/locations/us-central1/clusters/staging@public"
	prodKey := "projects/demo-project/locations/us-central1/clusters/prod@public"
	tests := []struct {
		name     string
		build    []byte
		want     []outcome
		images   map[string]string
		connects map[string]int
	}{
		{"main goes to both staging targets, on one connection", teamBuild(t, "main", ""), []outcome{
			{"web-staging: web/web:web", "deployed", "", false},
			{"worker-staging: worker/worker:web", "deployed", "", false},
			{"web-prod: web/web:web", "skipped", `when.tag "v[0-9]+\\.[0-9]+\\.[0-9]+": the build has no TAG_NAME`, false},
		}, map[string]string{"staging/web/web": deployed, "staging/worker/worker": deployed, "prod/web/web": initial}, map[string]int{stagingKey: 1}},
		{"a release tag goes to prod only", teamBuild(t, "", "v1.2.3"), []outcome{
			{"web-staging: web/web:web", "skipped", `when.branch "main": the build has no BRANCH_NAME`, false},
			{"worker-staging: worker/worker:web", "skipped", `when.branch "main": the build has no BRANCH_NAME`, false},
			{"web-prod: web/web:web", "deployed", "", false},
		}, map[string]string{"staging/web/web": initial, "staging/worker/worker": initial, "prod/web/web": deployed}, map[string]int{prodKey: 1}},
		{"a feature branch goes nowhere", teamBuild(t, "feature/x", ""), []outcome{
			{"web-staging: web/web:web", "skipped", `when.branch "main" does not match BRANCH_NAME "feature/x"`, false},
			{"worker-staging: worker/worker:web", "skipped", `when.branch "main" does not match BRANCH_NAME "feature/x"`, false},
			{"web-prod: web/web:web", "skipped", `when.tag "v[0-9]+\\.[0-9]+\\.[0-9]+": the build has no TAG_NAME`, false},
		}, map[string]string{"staging/web/web": initial, "staging/worker/worker": initial, "prod/web/web": initial}, map[string]int{}},
		{"no target's image: one report, no target", readBuild(t, "lookalike-web-evil-success.json"), []outcome{
			{"", "skipped", `no pushed image matches "` + webRepo + `"; no pushed image matches "us-docker.pkg.dev/demo-project/apps/api" (pushed: ` +
				webRepo + `-evil:c3d4e5f, ` + webRepo + `-evil:latest)`, false},
		}, map[string]string{"staging/web/web": initial, "staging/worker/worker": initial, "prod/web/web": initial}, map[string]int{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fakes := map[string]*fake.Clientset{
				"staging": fake.NewClientset(deployment("web", "web"), deployment("worker", "worker")),
				"prod":    fake.NewClientset(deployment("web", "web")),
			}
			cl := newClusters(map[string]kubernetes.Interface{"staging": fakes["staging"], "prod": fakes["prod"]})
			h := New(fileConfig(t, teamTargets), Options{Connect: cl.connect, Now: func() time.Time { return now }})
			reps, err := h.Handle(context.Background(), event(t, tt.build, nil, now))
			if err != nil {
				t.Errorf("Handle() error = %v, want nil", err)
			}
			if diff := cmp.Diff(tt.want, brief(reps)); diff != "" {
				t.Errorf("reports (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.images, images(t, fakes)); diff != "" {
				t.Errorf("deployments' images (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.connects, cl.connects, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("connectors made by cluster (-want +got):\n%s", diff)
			}
		})
	}
}

// forbidden makes cs refuse every request in namespace while *deny holds,
// as RBAC does without a Role there.
func forbidden(cs *fake.Clientset, namespace string, deny *atomic.Bool) {
	cs.PrependReactor("*", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetNamespace() != namespace || !deny.Load() {
			return false, nil, nil
		}
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: "apps", Resource: "deployments"}, namespace,
			errors.New(`User "deployer" cannot get resource "deployments" in namespace "`+namespace+`"`))
	})
}

// TestHandleRetriesOnlyTheFailedTargets delivers a main build to three
// staging targets: one deploys, one is forbidden (retryable: an operator
// grants the Role), one names a Deployment that does not exist (not
// retryable). Handle's error asks for a redelivery for the forbidden one
// only; on the redelivery, after the Role is granted, the deployed target
// skips the release it runs, the forbidden one deploys, and the missing one
// fails again with the same error, which asks for no further redelivery.
func TestHandleRetriesOnlyTheFailedTargets(t *testing.T) {
	targets := strings.Join(strings.Split(teamTargets, "\n")[:2], "\n") + "\n" +
		`  - {name: cron-staging, image: ` + webRepo + `, cluster: {project: demo-project, location: us-central1, name: staging}, namespace: cron, deployment: cron, container: web}` + "\n"
	cs := fake.NewClientset(deployment("web", "web"), deployment("worker", "worker"))
	var deny atomic.Bool
	deny.Store(true)
	forbidden(cs, "worker", &deny)
	cl := newClusters(map[string]kubernetes.Interface{"staging": cs})
	h := New(fileConfig(t, targets), Options{Connect: cl.connect, Now: func() time.Time { return now }})
	ev := event(t, teamBuild(t, "main", ""), nil, now)
	missing := `getting deployment cron/cron: deployments.apps "cron" not found`

	reps, err := h.Handle(context.Background(), ev)
	want := []outcome{
		{"web-staging: web/web:web", "deployed", "", false},
		{"worker-staging: worker/worker:web", "failed", `getting deployment worker/worker: deployments.apps "worker" is forbidden: User "deployer" cannot get resource "deployments" in namespace "worker"`, true},
		{"cron-staging: cron/cron:web", "failed", missing, false},
	}
	if diff := cmp.Diff(want, brief(reps), prefix); diff != "" {
		t.Errorf("first delivery (-want +got):\n%s", diff)
	}
	if !apierrors.IsForbidden(err) || !strings.HasPrefix(err.Error(), "target worker-staging: ") || strings.Contains(err.Error(), "cron") {
		t.Errorf("first delivery: error = %v, want the forbidden target's only, so Pub/Sub redelivers", err)
	}

	deny.Store(false) // The operator applies the Role.
	patches := func() int {
		n := 0
		for _, a := range cs.Actions() {
			if a.GetVerb() == "patch" && a.GetNamespace() == "web" {
				n++
			}
		}
		return n
	}
	before := patches()
	reps, err = h.Handle(context.Background(), ev)
	want = []outcome{
		{"web-staging: web/web:web", "skipped", "already running sha256:", false},
		{"worker-staging: worker/worker:web", "deployed", "", false},
		{"cron-staging: cron/cron:web", "failed", missing, false},
	}
	if diff := cmp.Diff(want, brief(reps), prefix); diff != "" {
		t.Errorf("redelivery (-want +got):\n%s", diff)
	}
	if err != nil {
		t.Errorf("redelivery: error = %v, want nil: nothing left that a redelivery can help", err)
	}
	if n := patches() - before; n != 0 {
		t.Errorf("redelivery patched the deployed target %d times, want 0", n)
	}
	if got := images(t, map[string]*fake.Clientset{"staging": cs}); got["staging/worker/worker"] != got["staging/web/web"] || got["staging/web/web"] == webRepo+":initial" {
		t.Errorf("after the redelivery: %v, want web and worker on the build", got)
	}
	if diff := cmp.Diff(map[string]int{"projects/demo-project/locations/us-central1/clusters/staging@public": 1}, cl.connects); diff != "" {
		t.Errorf("connectors made by cluster over two deliveries (-want +got):\n%s", diff)
	}
}

// prefix compares outcomes' reasons by prefix: want's is a prefix of got's.
var prefix = cmp.Comparer(func(a, b outcome) bool {
	if len(a.Reason) > len(b.Reason) {
		a, b = b, a
	}
	return a.Target == b.Target && a.Outcome == b.Outcome && a.Retry == b.Retry && strings.HasPrefix(b.Reason, a.Reason)
})

// slowConnector blocks Clientset until release is closed or ctx ends.
type slowConnector struct {
	connector
	release chan struct{}
}

func (c *slowConnector) Clientset(ctx context.Context) (kube.Interface, error) {
	select {
	case <-c.release:
		return c.connector.Clientset(ctx)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// TestDispatchDoesNotWaitForASlowTarget checks that the targets are served
// concurrently and each reported as soon as it is done: a target whose
// cluster does not answer (prod, listed first) holds back neither the other
// target's deploy nor its report; it is released only once that report is
// made, and the call returns when both are done.
func TestDispatchDoesNotWaitForASlowTarget(t *testing.T) {
	targets := `  - {name: web-prod, image: ` + webRepo + `, cluster: {project: demo-project, location: us-central1, name: prod}, namespace: web, deployment: web, container: web}
  - {name: web-staging, image: ` + webRepo + `, cluster: {project: demo-project, location: us-central1, name: staging}, namespace: web, deployment: web, container: web}
`
	slow := &slowConnector{connector: connector{client: fake.NewClientset(deployment("web", "web"))}, release: make(chan struct{})}
	fast := &connector{client: fake.NewClientset(deployment("web", "web"))}
	connect := func(c target.Cluster) Connector {
		if c.Name == "prod" {
			return slow
		}
		return fast
	}
	h := New(fileConfig(t, targets), Options{Connect: connect, Now: func() time.Time { return now }})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var mu sync.Mutex
	var order []string
	err := h.Dispatch(ctx, event(t, readBuild(t, "web-1-success.json"), nil, now), func(rep Report) {
		mu.Lock()
		defer mu.Unlock()
		order = append(order, rep.TargetName+" "+string(rep.Outcome))
		if rep.TargetName == "web-staging" {
			close(slow.release)
		}
	})
	if err != nil {
		t.Errorf("Dispatch() = %v, want nil", err)
	}
	if diff := cmp.Diff([]string{"web-staging deployed", "web-prod deployed"}, order); diff != "" {
		t.Errorf("reports in order made (-want +got):\n%s", diff)
	}
}

// TestHandleConnectsOncePerClusterUnderConcurrency delivers builds to three
// targets on two clusters from several goroutines at once, on a fresh
// Handler: each cluster's connector is made exactly once (run with -race).
func TestHandleConnectsOncePerClusterUnderConcurrency(t *testing.T) {
	targets := strings.Replace(teamTargets, `when: {tag: 'v[0-9]+\.[0-9]+\.[0-9]+'}, `, "", 1)
	cl := newClusters(map[string]kubernetes.Interface{
		"staging": fake.NewClientset(deployment("web", "web"), deployment("worker", "worker")),
		"prod":    fake.NewClientset(deployment("web", "web")),
	})
	h := New(fileConfig(t, targets), Options{Connect: cl.connect, Now: func() time.Time { return now }})
	ev := event(t, teamBuild(t, "main", ""), nil, now)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			reps, err := h.Handle(context.Background(), ev)
			if err != nil || len(reps) != 3 {
				t.Errorf("Handle() = %d reports, %v; want 3, nil", len(reps), err)
			}
		})
	}
	wg.Wait()
	want := map[string]int{
		"projects/demo-project/locations/us-central1/clusters/staging@public": 1,
		"projects/demo-project/locations/us-central1/clusters/prod@public":    1,
	}
	if diff := cmp.Diff(want, cl.connects); diff != "" {
		t.Errorf("connectors made by cluster (-want +got):\n%s", diff)
	}
}
