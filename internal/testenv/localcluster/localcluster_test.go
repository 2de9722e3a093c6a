package localcluster

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/onnewimage/onnewimage/internal/rollout"
)

const (
	testToken = "test-token-deployer"
	testUser  = "deployer@demo-project.iam.gserviceaccount.com"
)

// TestCluster starts a real control plane (building it first if needed,
// which takes several minutes on a cold cache) and checks what the
// end-to-end tests of this repository rely on.
func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real control plane; skipped with -short")
	}
	// The first run builds five programs from source.
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()

	start := time.Now()
	c, err := Start(ctx, Options{
		Tokens: map[string]string{testToken: testUser},
		Log:    testLog{t},
	})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Logf("Start took %s", time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() { checkStop(t, c) })

	admin, err := kubernetes.NewForConfig(c.AdminConfig())
	if err != nil {
		t.Fatal(err)
	}

	t.Run("EnsureNamespace", func(t *testing.T) {
		for i := range 2 { // the second call finds everything in place
			if err := c.EnsureNamespace(ctx, "apps"); err != nil {
				t.Fatalf("EnsureNamespace call %d: %v", i+1, err)
			}
		}
		if _, err := admin.CoreV1().ServiceAccounts("apps").Get(ctx, "default", metav1.GetOptions{}); err != nil {
			t.Errorf("default service account: %v", err)
		}
	})

	t.Run("GatewayAPI", func(t *testing.T) {
		// Established before Start returned: an HTTPRoute is accepted, and
		// validated by the CRD's schema, at once.
		gw, err := gatewayclient.NewForConfig(c.AdminConfig())
		if err != nil {
			t.Fatal(err)
		}
		route := &gatewayv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Name: "web"}, Spec: gatewayv1.HTTPRouteSpec{
			Rules: []gatewayv1.HTTPRouteRule{{BackendRefs: []gatewayv1.HTTPBackendRef{
				{BackendRef: gatewayv1.BackendRef{BackendObjectReference: gatewayv1.BackendObjectReference{Name: "web", Port: ptr(gatewayv1.PortNumber(80))}, Weight: ptr(int32(100))}},
				{BackendRef: gatewayv1.BackendRef{BackendObjectReference: gatewayv1.BackendObjectReference{Name: "web-canary", Port: ptr(gatewayv1.PortNumber(80))}, Weight: ptr(int32(0))}},
			}}}}}
		routes := gw.GatewayV1().HTTPRoutes(metav1.NamespaceDefault)
		if _, err := routes.Create(ctx, route, metav1.CreateOptions{}); err != nil {
			t.Fatalf("creating an HTTPRoute: %v", err)
		}
		patch := []byte(`[{"op":"add","path":"/spec/rules/0/backendRefs/1/weight","value":10},{"op":"add","path":"/spec/rules/0/backendRefs/0/weight","value":90}]`)
		got, err := routes.Patch(ctx, "web", types.JSONPatchType, patch, metav1.PatchOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if w := got.Spec.Rules[0].BackendRefs; *w[0].Weight != 90 || *w[1].Weight != 10 {
			t.Errorf("weights after the patch: %d/%d, want 90/10", *w[0].Weight, *w[1].Weight)
		}
		bad := []byte(`[{"op":"add","path":"/spec/rules/0/backendRefs/1/weight","value":-1}]`)
		if _, err := routes.Patch(ctx, "web", types.JSONPatchType, bad, metav1.PatchOptions{}); !apierrors.IsInvalid(err) {
			t.Errorf("a negative weight: error %v, want Invalid (the CRD's schema)", err)
		}
	})

	t.Run("DeploymentRollsOut", func(t *testing.T) {
		ns := "rollout"
		if err := c.EnsureNamespace(ctx, ns); err != nil {
			t.Fatal(err)
		}
		deployments := admin.AppsV1().Deployments(ns)
		if _, err := deployments.Create(ctx, deployment("web", "example.com/web:v1", 2, nil), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		d := waitRolledOut(ctx, t, admin, ns, "web")
		if got := readyPods(ctx, t, admin, ns, "app=web"); got != 2 {
			t.Errorf("ready pods after first rollout = %d, want 2", got)
		}
		kubectlRolloutStatus(ctx, t, c.AdminKubeconfig, ns, "web")

		patch := []byte(`{"spec":{"template":{"spec":{"containers":[{"name":"app","image":"example.com/web:v2"}]}}}}`)
		if _, err := deployments.Patch(ctx, "web", types.StrategicMergePatchType, patch, metav1.PatchOptions{FieldManager: "localcluster-test"}); err != nil {
			t.Fatal(err)
		}
		d2 := waitRolledOut(ctx, t, admin, ns, "web")
		if d2.Generation <= d.Generation {
			t.Errorf("generation after image update = %d, want > %d", d2.Generation, d.Generation)
		}
		sets, err := admin.AppsV1().ReplicaSets(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]int32{}
		for _, rs := range sets.Items {
			got[rs.Spec.Template.Spec.Containers[0].Image] = rs.Status.ReadyReplicas
		}
		want := map[string]int32{"example.com/web:v1": 0, "example.com/web:v2": 2}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("ready replicas by image (-want +got):\n%s", diff)
		}
	})

	t.Run("NeverReadyPodStaysUnready", func(t *testing.T) {
		ns := "broken"
		if err := c.EnsureNamespace(ctx, ns); err != nil {
			t.Fatal(err)
		}
		pods := admin.CoreV1().Pods(ns)
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "stuck", Labels: map[string]string{NeverReadyLabel: "true"}},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "example.com/web:broken"}}},
		}
		if _, err := pods.Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		var running *corev1.Pod
		err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			p, err := pods.Get(ctx, "stuck", metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			running = p
			return p.Status.Phase == corev1.PodRunning, nil
		})
		if err != nil {
			t.Fatalf("waiting for pod phase Running (last status %+v): %v", running.Status, err)
		}
		if podReady(running) {
			t.Fatalf("pod labelled %s=true is Ready", NeverReadyLabel)
		}
		if cs := running.Status.ContainerStatuses; len(cs) != 1 || cs[0].State.Running == nil || cs[0].Ready {
			t.Errorf("container statuses = %+v, want one running, unready container", cs)
		}

		// Watch for a while from the Running version: no update may make it Ready.
		w, err := pods.Watch(ctx, metav1.ListOptions{
			FieldSelector:   "metadata.name=stuck",
			ResourceVersion: running.ResourceVersion,
		})
		if err != nil {
			t.Fatal(err)
		}
		defer w.Stop()
		deadline := time.After(4 * time.Second)
	watching:
		for {
			select {
			case ev, ok := <-w.ResultChan():
				if !ok {
					t.Fatal("watch ended early")
				}
				p, ok := ev.Object.(*corev1.Pod)
				if !ok {
					t.Fatalf("watch event %s carries %T", ev.Type, ev.Object)
				}
				if podReady(p) {
					t.Fatalf("pod became Ready (event %s)", ev.Type)
				}
			case <-deadline:
				break watching
			}
		}

		// A Deployment whose pods never get ready never becomes available.
		labels := map[string]string{NeverReadyLabel: "true"}
		if _, err := admin.AppsV1().Deployments(ns).Create(ctx, deployment("bad", "example.com/web:broken", 1, labels), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			list, err := pods.List(ctx, metav1.ListOptions{LabelSelector: "app=bad"})
			if err != nil {
				return false, err
			}
			return len(list.Items) == 1 && list.Items[0].Status.Phase == corev1.PodRunning, nil
		})
		if err != nil {
			t.Fatalf("waiting for the bad deployment's pod to run: %v", err)
		}
		time.Sleep(2 * time.Second) // give the controller time to (wrongly) count it available
		d, err := admin.AppsV1().Deployments(ns).Get(ctx, "bad", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if status, done, _ := rollout.Status(d); done || d.Status.AvailableReplicas != 0 {
			t.Errorf("deployment of never-ready pods: %q, available %d; want not rolled out, 0", status, d.Status.AvailableReplicas)
		}
	})

	t.Run("LabelledPodRestartsOnce", func(t *testing.T) {
		ns := "crashing"
		if err := c.EnsureNamespace(ctx, ns); err != nil {
			t.Fatal(err)
		}
		pods := admin.CoreV1().Pods(ns)
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "crasher",
				Labels:      map[string]string{RestartLabel: "true"},
				Annotations: map[string]string{TerminationMessageAnnotation: "crashed on purpose"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "example.com/web:crashing"}}},
		}
		created, err := pods.Create(ctx, pod, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		w, err := pods.Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=crasher", ResourceVersion: created.ResourceVersion})
		if err != nil {
			t.Fatal(err)
		}
		defer w.Stop()
		// Wait, by watch, for the restart; then watch a while longer: the
		// container restarts once, not every second.
		var running, restarted time.Time
		var last *corev1.Pod
		restarts := 0
		timeout := time.After(30 * time.Second)
		var settled <-chan time.Time
	watching:
		for {
			select {
			case ev, ok := <-w.ResultChan():
				if !ok {
					t.Fatal("watch ended early")
				}
				p, ok := ev.Object.(*corev1.Pod)
				if !ok {
					t.Fatalf("watch event %s carries %T", ev.Type, ev.Object)
				}
				if p.Status.Phase == corev1.PodRunning && running.IsZero() {
					running = time.Now()
				}
				if cs := p.Status.ContainerStatuses; len(cs) == 1 && cs[0].LastTerminationState.Terminated != nil &&
					(last == nil || last.Status.ContainerStatuses[0].LastTerminationState.Terminated == nil ||
						!cs[0].LastTerminationState.Terminated.FinishedAt.Equal(&last.Status.ContainerStatuses[0].LastTerminationState.Terminated.FinishedAt)) {
					restarts++
					if restarted.IsZero() {
						restarted = time.Now()
						settled = time.After(3 * time.Second)
					}
				}
				last = p
			case <-timeout:
				t.Fatalf("no restart within 30s of creation (last status %+v)", last.Status)
			case <-settled:
				break watching
			}
		}
		t.Logf("restarted %s after running", restarted.Sub(running).Round(time.Millisecond))
		if restarts != 1 {
			t.Errorf("container terminated %d times, want once", restarts)
		}
		if last.Status.Phase != corev1.PodRunning || !podReady(last) {
			t.Errorf("after the restart: phase %s, ready %v; want Running and ready again", last.Status.Phase, podReady(last))
		}
		st := last.Status.ContainerStatuses[0]
		term := st.LastTerminationState.Terminated
		got := fmt.Sprintf("restartCount=%d running=%v ready=%v exit=%d reason=%s message=%q",
			st.RestartCount, st.State.Running != nil, st.Ready, term.ExitCode, term.Reason, term.Message)
		want := `restartCount=1 running=true ready=true exit=1 reason=Error message="crashed on purpose"`
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("container status after the restart (-want +got):\n%s", diff)
		}
	})

	t.Run("RBAC", func(t *testing.T) {
		ns := "secured"
		if err := c.EnsureNamespace(ctx, ns); err != nil {
			t.Fatal(err)
		}
		if _, err := admin.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{}); err != nil {
			t.Fatalf("admin listing secrets: %v", err)
		}

		path := c.Dir + "/deployer.kubeconfig"
		if err := c.WriteKubeconfig(path, testToken); err != nil {
			t.Fatal(err)
		}
		cfg, err := clientcmd.BuildConfigFromFlags("", path)
		if err != nil {
			t.Fatal(err)
		}
		fromFile, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		review, err := fromFile.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		wantUser := authenticationv1.UserInfo{Username: testUser, UID: testUser, Groups: []string{"system:authenticated"}}
		if diff := cmp.Diff(wantUser, review.Status.UserInfo); diff != "" {
			t.Errorf("token user (-want +got):\n%s", diff)
		}

		user, err := kubernetes.NewForConfig(c.TokenConfig(testToken))
		if err != nil {
			t.Fatal(err)
		}
		_, err = user.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{})
		if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), testUser) {
			t.Errorf("token user listing secrets without a binding: got %v, want Forbidden for %s", err, testUser)
		}

		binding := &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "deployer-view", Namespace: ns},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "admin"},
			Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: testUser}},
		}
		if _, err := admin.RbacV1().RoleBindings(ns).Create(ctx, binding, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		// RBAC caches are updated by watch, so allow a moment.
		err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
			_, err := user.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{})
			return err == nil, nil
		})
		if err != nil {
			t.Errorf("token user listing secrets after a binding to admin: %v", err)
		}

		stranger, err := kubernetes.NewForConfig(c.TokenConfig("no-such-token"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := stranger.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{}); !apierrors.IsUnauthorized(err) {
			t.Errorf("unknown token listing secrets: got %v, want Unauthorized", err)
		}
	})

	t.Run("RestartAPIServer", func(t *testing.T) {
		ns := "restart"
		if err := c.EnsureNamespace(ctx, ns); err != nil {
			t.Fatal(err)
		}
		// An informer started before the restart must resume afterwards.
		factory := informers.NewSharedInformerFactoryWithOptions(admin, 0, informers.WithNamespace(ns))
		seen := make(chan string, 10)
		cms := factory.Core().V1().ConfigMaps().Informer()
		if _, err := cms.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: func(obj any) { seen <- obj.(*corev1.ConfigMap).Name },
		}); err != nil {
			t.Fatal(err)
		}
		stop := make(chan struct{})
		defer close(stop)
		factory.Start(stop)
		if !cache.WaitForCacheSync(ctx.Done(), cms.HasSynced) {
			t.Fatal("informer did not sync")
		}

		// Probe the apiserver during the restart to see it really go down.
		var down atomic.Bool
		probeCtx, stopProbe := context.WithCancel(ctx)
		var probing sync.WaitGroup
		probing.Add(1)
		go func() {
			defer probing.Done()
			for probeCtx.Err() == nil {
				if _, err := admin.Discovery().ServerVersion(); err != nil {
					down.Store(true)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}()
		err := c.RestartAPIServer(ctx, 2*time.Second)
		stopProbe()
		probing.Wait()
		if err != nil {
			t.Fatalf("RestartAPIServer: %v", err)
		}
		if !down.Load() {
			t.Error("no request failed during the restart; was the apiserver stopped?")
		}

		// The clients built before the restart work again.
		v, err := admin.Discovery().ServerVersion()
		if err != nil {
			t.Fatalf("server version after restart: %v", err)
		}
		if v.GitVersion != KubernetesVersion {
			t.Errorf("server version = %q, want %q", v.GitVersion, KubernetesVersion)
		}
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "after-restart"}}
		if _, err := admin.CoreV1().ConfigMaps(ns).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		timeout := time.After(60 * time.Second)
	waiting:
		for {
			select {
			case name := <-seen:
				if name == "after-restart" {
					break waiting
				}
			case <-timeout:
				t.Fatal("informer did not see a config map created after the restart")
			}
		}

		// Controllers, scheduler and kwok reconnected too: scale a deployment.
		deployments := admin.AppsV1().Deployments(ns)
		if _, err := deployments.Create(ctx, deployment("web", "example.com/web:v1", 1, nil), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitRolledOut(ctx, t, admin, ns, "web")
		scale := []byte(`{"spec":{"replicas":3}}`)
		if _, err := deployments.Patch(ctx, "web", types.MergePatchType, scale, metav1.PatchOptions{FieldManager: "localcluster-test"}); err != nil {
			t.Fatal(err)
		}
		if d := waitRolledOut(ctx, t, admin, ns, "web"); d.Status.AvailableReplicas != 3 {
			t.Errorf("available replicas after scaling = %d, want 3", d.Status.AvailableReplicas)
		}
	})
}

// checkStop stops the cluster and checks that nothing is left behind.
func checkStop(t *testing.T, c *Cluster) {
	t.Helper()
	if err := c.Stop(); err != nil {
		t.Errorf("Stop: %v", err)
	}
	if err := c.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	for _, p := range c.procs {
		if err := syscall.Kill(p.cmd.Process.Pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("%s (pid %d) still exists after Stop: kill 0 = %v", p.name, p.cmd.Process.Pid, err)
		}
	}
	if _, err := os.Stat(c.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cluster directory after Stop: stat = %v, want not exist", err)
	}
}

func deployment(name, image string, replicas int32, extraLabels map[string]string) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	for k, v := range extraLabels {
		labels[k] = v
	}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: image}}},
			},
		},
	}
}

func waitRolledOut(ctx context.Context, t *testing.T, client kubernetes.Interface, ns, name string) *appsv1.Deployment {
	t.Helper()
	start := time.Now()
	var d *appsv1.Deployment
	var why string
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		var err error
		if d, err = client.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{}); err != nil {
			return false, err
		}
		var done bool
		why, done, err = rollout.Status(d)
		return done, err
	})
	if err != nil {
		t.Fatalf("deployment %s/%s not rolled out (%s): %v", ns, name, why, err)
	}
	t.Logf("deployment %s/%s rolled out in %s", ns, name, time.Since(start).Round(time.Millisecond))
	return d
}

func readyPods(ctx context.Context, t *testing.T, client kubernetes.Interface, ns, selector string) int {
	t.Helper()
	list, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for i := range list.Items {
		if list.Items[i].DeletionTimestamp == nil && podReady(&list.Items[i]) {
			n++
		}
	}
	return n
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// kubectlRolloutStatus checks AdminKubeconfig with kubectl, if installed.
func kubectlRolloutStatus(ctx context.Context, t *testing.T, kubeconfig, ns, name string) {
	t.Helper()
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Log("kubectl not installed; skipping the kubeconfig check")
		return
	}
	out, err := exec.CommandContext(ctx, kubectl, "--kubeconfig", kubeconfig, "-n", ns,
		"rollout", "status", "deployment/"+name, "--timeout=30s").CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl rollout status: %v\n%s", err, out)
	}
	if !bytes.Contains(out, []byte("successfully rolled out")) {
		t.Errorf("kubectl rollout status printed %q, want it to report success", out)
	}
}

// testLog sends progress lines to t.Log.
type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func TestWriteTokenFile(t *testing.T) {
	tests := []struct {
		name    string
		tokens  map[string]string
		want    [][]string
		wantErr bool
	}{
		{
			name:   "sorted by token, user doubles as uid",
			tokens: map[string]string{"b-token": "b@x.iam.gserviceaccount.com", "a-token": "a@x.iam.gserviceaccount.com"},
			want: [][]string{
				{"a-token", "a@x.iam.gserviceaccount.com", "a@x.iam.gserviceaccount.com"},
				{"b-token", "b@x.iam.gserviceaccount.com", "b@x.iam.gserviceaccount.com"},
			},
		},
		{name: "user with a comma is quoted", tokens: map[string]string{"t": "a,b"}, want: [][]string{{"t", "a,b", "a,b"}}},
		{name: "no tokens", tokens: nil, want: nil},
		{name: "empty token", tokens: map[string]string{"": "a"}, wantErr: true},
		{name: "empty user", tokens: map[string]string{"t": ""}, wantErr: true},
		{name: "comma in token", tokens: map[string]string{"t,u": "a"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := t.TempDir() + "/tokens.csv"
			err := writeTokenFile(path, tt.tokens)
			if gotErr := err != nil; gotErr != tt.wantErr {
				t.Fatalf("writeTokenFile() error = %v, want error %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			got, err := csv.NewReader(f).ReadAll()
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("token file records (-want +got):\n%s", diff)
			}
		})
	}
}

// stagesConfig is the kwok configuration writeStages writes.
func stagesConfig(t *testing.T) string {
	t.Helper()
	path := t.TempDir() + "/kwok.yaml"
	if err := writeStages(path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestStagesKeepNeverReadyPodsUnready(t *testing.T) {
	config := stagesConfig(t)
	for _, name := range []string{"node-initialize", "pod-ready", "pod-never-ready", "pod-complete", "pod-delete"} {
		if !strings.Contains(config, "\n  name: "+name+"\n") {
			t.Errorf("kwok configuration lacks stage %s", name)
		}
	}
	// Both pod-ready (NotIn) and pod-never-ready (In) must select on the label.
	if got := strings.Count(config, `.metadata.labels["`+NeverReadyLabel+`"]`); got != 2 {
		t.Errorf("stages select on %s %d times, want 2", NeverReadyLabel, got)
	}
}

// TestStagesRestartLabelledPods checks that pod-restart takes running pods
// labelled RestartLabel=true, once: not those it already restarted.
func TestStagesRestartLabelledPods(t *testing.T) {
	config := stagesConfig(t)
	if !strings.Contains(config, "\n  name: pod-restart\n") {
		t.Fatal("kwok configuration lacks stage pod-restart")
	}
	stage := config[strings.Index(config, "\n  name: pod-restart\n"):]
	if end := strings.Index(stage, "\n---\n"); end >= 0 {
		stage = stage[:end]
	}
	for _, want := range []string{
		`.metadata.labels["` + RestartLabel + `"]`,
		`.status.containerStatuses.[].lastState.terminated`,
		`index . "` + TerminationMessageAnnotation + `"`,
	} {
		if !strings.Contains(stage, want) {
			t.Errorf("stage pod-restart lacks %s", want)
		}
	}
	if got := strings.Count(config, `"`+RestartLabel+`"`); got != 1 {
		t.Errorf("stages name %s %d times, want 1 (pod-restart only)", RestartLabel, got)
	}
}

func TestAwaitQuotesLogOfExitedProcess(t *testing.T) {
	dir := t.TempDir()
	p, err := startProcess("crasher", "/bin/sh", []string{"-c", "echo bad flag --foo; exit 3"}, nil, dir+"/crasher.log")
	if err != nil {
		t.Fatal(err)
	}
	c := &Cluster{log: testLog{t}}
	err = c.awaitPart(context.Background(), p, time.Now(), func(context.Context) error {
		return errors.New("not listening")
	})
	if err == nil {
		t.Fatal("awaitPart succeeded for a process that exited")
	}
	for _, want := range []string{"starting crasher", "exit status 3", "not listening", "bad flag --foo"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestPrebuiltAssets(t *testing.T) {
	dir := t.TempDir()
	for _, b := range binaries[:len(binaries)-1] {
		if err := os.WriteFile(dir+"/"+b.name, []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(dir+"/kwok", []byte("not executable"), 0o644)
	t.Setenv(AssetsEnv, dir)
	cache := t.TempDir()
	_, err := EnsureBinaries(context.Background(), cache, nil)
	if err == nil || !strings.Contains(err.Error(), "kwok is not an executable file") {
		t.Fatalf("EnsureBinaries with a non-executable kwok: error %v, want it named", err)
	}
	os.Remove(dir + "/kwok")
	if _, err := EnsureBinaries(context.Background(), cache, nil); err == nil || !strings.Contains(err.Error(), "kwok is missing") {
		t.Fatalf("EnsureBinaries without kwok: error %v, want it named", err)
	}
	if err := os.WriteFile(dir+"/kwok", []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	got, err := EnsureBinaries(context.Background(), cache, nil)
	if err != nil || got != dir {
		t.Fatalf("EnsureBinaries() = %q, %v; want %q (the assets, nothing built)", got, err, dir)
	}
	if entries, _ := os.ReadDir(cache); len(entries) != 0 {
		t.Errorf("the cache directory has %d entries, want none: nothing may be built", len(entries))
	}
}

// TestStagesEndJobPodsByLabel checks that pod-complete leaves FailLabel
// and HoldLabel pods alone and pod-fail takes FailLabel pods.
func TestStagesEndJobPodsByLabel(t *testing.T) {
	config := stagesConfig(t)
	if !strings.Contains(config, "\n  name: pod-fail\n") {
		t.Error("kwok configuration lacks stage pod-fail")
	}
	for label, want := range map[string]int{FailLabel: 2, HoldLabel: 1, TerminationMessageAnnotation: 2 /* pod-fail, pod-restart */} {
		if got := strings.Count(config, `"`+label+`"`); got != want {
			t.Errorf("stages name %s %d times, want %d", label, got, want)
		}
	}
}

func ptr[T any](v T) *T { return &v }
