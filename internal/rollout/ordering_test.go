package rollout

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/onnewimage/onnewimage/internal/image"
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
			rng := rand.New(rand.NewPCG(seed, 0x0dde2))
			n := 2 + rng.IntN(7)
			builds := make([]Release, n)
			newest := 0
			for i, minute := range rng.Perm(24 * 60)[:n] { // Distinct createTimes.
				builds[i] = Release{
					BuildID:    fmt.Sprintf("build-%d", i),
					CreateTime: t0.Add(time.Duration(minute) * time.Minute),
					Commit:     fmt.Sprintf("%040x", i),
					Image:      image.Reference{Repository: repo, Tag: fmt.Sprintf("v%d", i), Digest: fmt.Sprintf("sha256:%064x", i+1)},
				}
				if builds[i].CreateTime.After(builds[newest].CreateTime) {
					newest = i
				}
			}
			var deliveries []Release
			for _, b := range builds {
				for range 1 + rng.IntN(3) {
					deliveries = append(deliveries, b)
				}
			}
			rng.Shuffle(len(deliveries), func(i, j int) { deliveries[i], deliveries[j] = deliveries[j], deliveries[i] })

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
						_, err := Rolling(context.Background(), cs, target, r, Options{})
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
