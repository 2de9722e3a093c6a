package rollout

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/onnewimage/onnewimage/internal/image"
	"github.com/onnewimage/onnewimage/internal/kube/kubetest"
)

// TestRollingOrderingProperty delivers N builds with random createTimes,
// shuffled, duplicated and concurrently, to the resourceVersion-enforcing
// fake, for many seeds. Whatever the interleaving, the Deployment ends on
// the newest build, and no write ever moves it to an older build than the
// one before. A delivery that fails with a Conflict is delivered again, as
// Pub/Sub would.
func TestRollingOrderingProperty(t *testing.T) {
	defer func(b wait.Backoff) { conflictBackoff = b }(conflictBackoff)
	conflictBackoff = wait.Backoff{Steps: 6} // No sleeping between tries here.
	seeds := 200
	if testing.Short() {
		seeds = 50
	}
	for seed := range uint64(seeds) {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
			builds, newest, deliveries := shuffledBuilds(seed)
			n := len(builds)

			cs := newClientset(t, deployment("web", repo+":initial", nil))
			w, err := cs.Tracker().Watch(appsv1.SchemeGroupVersion.WithResource("deployments"), "prod")
			if err != nil {
				t.Fatal(err)
			}
			var history []string // The build each write recorded, in order.
			watched := make(chan struct{})
			go func() {
				defer close(watched)
				for ev := range w.ResultChan() {
					// The fake reports a write twice: applied, then its
					// resourceVersion bumped.
					created := ev.Object.(*appsv1.Deployment).Annotations[AnnotationBuildCreateTime]
					if ev.Type == watch.Modified && (len(history) == 0 || history[len(history)-1] != created) {
						history = append(history, created)
					}
				}
			}()

			var wg sync.WaitGroup
			for _, r := range deliveries {
				wg.Go(func() {
					for {
						_, err := Rolling(context.Background(), kubetest.Adapt(cs), target, r, Options{})
						if !apierrors.IsConflict(err) {
							if err != nil {
								t.Errorf("Rolling(%s): %v", r.BuildID, err)
							}
							return
						}
					}
				})
			}
			wg.Wait()
			w.Stop()
			<-watched

			d := getDeployment(t, cs, "web")
			want := builds[newest]
			if got := d.Annotations[AnnotationBuildID]; got != want.BuildID || d.Spec.Template.Spec.Containers[1].Image != want.Image.String() {
				t.Errorf("%d builds, %d deliveries: ends on %s running %s, want %s running %s",
					n, len(deliveries), got, d.Spec.Template.Spec.Containers[1].Image, want.BuildID, want.Image)
			}
			for i := 1; i < len(history); i++ {
				if history[i] <= history[i-1] { // RFC 3339 in UTC, one precision: ordered as text.
					t.Errorf("write %d moved from a build created at %s to one created at %s, not newer; history %v", i, history[i-1], history[i], history)
				}
			}
			if len(history) == 0 || len(history) > n {
				t.Errorf("%d writes for %d builds, want 1 to %d", len(history), n, n)
			}
		})
	}
}

// shuffledBuilds returns, for seed, 2 to 8 builds with distinct random
// createTimes (all after t0), the index of the newest, and their deliveries:
// each build one to three times, shuffled.
func shuffledBuilds(seed uint64) (builds []Release, newest int, deliveries []Release) {
	rng := rand.New(rand.NewPCG(seed, 0x0dde2))
	n := 2 + rng.IntN(7)
	builds = make([]Release, n)
	for i, minute := range rng.Perm(24 * 60)[:n] {
		builds[i] = Release{
			BuildID:    fmt.Sprintf("b-%d", i), // Not release0's build-0.
			CreateTime: t0.Add(time.Duration(minute+1) * time.Minute),
			Commit:     fmt.Sprintf("%040x", i),
			Image:      image.Reference{Repository: repo, Tag: fmt.Sprintf("v%d", i), Digest: fmt.Sprintf("sha256:%064x", i+1)},
		}
		if builds[i].CreateTime.After(builds[newest].CreateTime) {
			newest = i
		}
	}
	for _, b := range builds {
		for range 1 + rng.IntN(3) {
			deliveries = append(deliveries, b)
		}
	}
	rng.Shuffle(len(deliveries), func(i, j int) { deliveries[i], deliveries[j] = deliveries[j], deliveries[i] })
	return builds, newest, deliveries
}

// TestBlueGreenOrderingProperty is TestRollingOrderingProperty for
// blue-green, with the simulated Deployment controller completing every
// rollout: whatever the interleaving, the router ends on the colour
// running the newest build, recording it, and no switch ever moves traffic
// to an older build than the one before. A delivery that fails is
// delivered again, as Pub/Sub would (every failure here is retryable).
func TestBlueGreenOrderingProperty(t *testing.T) {
	defer func(b wait.Backoff) { conflictBackoff = b }(conflictBackoff)
	conflictBackoff = wait.Backoff{Steps: 6}
	seeds := 100
	if testing.Short() {
		seeds = 20
	}
	for seed := range uint64(seeds) {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
			builds, newest, deliveries := shuffledBuilds(seed)
			cs := newClientset(t, svcRouter(Blue, routerAnnotations(release0, Green)), colour(Blue, release0, 2), colour(Green, release0, 2))
			controller(t, cs, becomesAvailable)
			w, err := cs.Tracker().Watch(servicesGVR, "prod")
			if err != nil {
				t.Fatal(err)
			}
			var history []string // The build each switch recorded, in order.
			watched := make(chan struct{})
			go func() {
				defer close(watched)
				for ev := range w.ResultChan() {
					svc := ev.Object.(*corev1.Service)
					created := svc.Annotations[AnnotationBuildCreateTime]
					if ev.Type == watch.Modified && (len(history) == 0 || history[len(history)-1] != created) {
						history = append(history, created)
					}
				}
			}()

			var wg sync.WaitGroup
			var mu sync.Mutex
			failures := map[string]int{}
			for _, r := range deliveries {
				wg.Go(func() {
					for try := 0; ; try++ {
						_, err := BlueGreen(context.Background(), kubetest.Adapt(cs), bgTarget(ServiceRouter), r, BlueGreenOptions{Timeout: 10 * time.Second, ClaimExpiry: time.Minute})
						if err == nil {
							return
						}
						mu.Lock()
						failures[err.Error()]++
						mu.Unlock()
						if try == 50 {
							t.Errorf("BlueGreen(%s) still fails after %d deliveries: %v", r.BuildID, try+1, err)
							return
						}
					}
				})
			}
			wg.Wait()
			w.Stop()
			<-watched

			want := builds[newest]
			route, annotations := routerState(t, cs, ServiceRouter)
			live := strings.TrimPrefix(route, "version=")
			if annotations[AnnotationBuildID] != want.BuildID || imageOf(t, cs, "web-"+live) != want.Image.String() {
				t.Errorf("%d builds, %d deliveries: router on %s (running %s) records %s, want %s running %s; failures: %v",
					len(builds), len(deliveries), live, imageOf(t, cs, "web-"+live), annotations[AnnotationBuildID], want.BuildID, want.Image, failures)
			}
			for i := 1; i < len(history); i++ {
				if history[i] < history[i-1] {
					t.Errorf("switch %d moved from a build created at %s to one created at %s; history %v", i, history[i-1], history[i], history)
				}
			}
		})
	}
}
