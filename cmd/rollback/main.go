// Command rollback takes the target back to the release before the live
// one, and prints one line saying what it did. The build it takes out is
// not deployed again when its event is delivered again; a newer build is.
//
// It reads the same environment as the function (STRATEGY, DEPLOYMENT,
// CONTAINER, SERVICE or INGRESS, CLUSTER or KUBECONFIG, ...; see the README;
// IMAGE is not needed) and connects to the cluster the same way.
//
// With STRATEGY=blue-green it switches the router back to the colour traffic
// left at the last switch. If that colour was scaled down it is scaled up
// first; traffic moves only once it is fully rolled out. The switch is a
// compare-and-set on the router: if the router changed since it was read,
// nothing is switched and rollback says so. With SCALE_DOWN_OLD=true it then
// waits SCALE_DOWN_DELAY and scales the colour it left to 0; an interrupt
// during that wait leaves it running.
//
// With STRATEGY=rolling it does what `kubectl rollout undo` does: the
// Deployment gets its previous revision's pod template and release
// annotations back, in one compare-and-set on its resourceVersion. It lists
// ReplicaSets, so it runs with an operator's identity, not the function's.
//
//	STRATEGY=blue-green SERVICE=web ... go run ./cmd/rollback [-timeout 5m] [-dry-run]
//	STRATEGY=rolling DEPLOYMENT=web ... go run ./cmd/rollback [-dry-run]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"

	"github.com/onnewimage/onnewimage/internal/config"
	"github.com/onnewimage/onnewimage/internal/trigger"
)

func main() {
	timeout := flag.Duration("timeout", 0, "blue-green: how long to wait for the previous colour to become available (default ROLLOUT_TIMEOUT)")
	dryRun := flag.Bool("dry-run", false, "have the API server validate the writes without persisting them")
	flag.Parse()

	cfg, err := config.LoadTarget(os.Getenv)
	if err != nil {
		fail(err)
	}
	if *timeout > 0 {
		for i := range cfg.Targets {
			cfg.Targets[i].RolloutTimeout = *timeout
		}
	}
	cfg.DryRun = cfg.DryRun || *dryRun

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	res, err := trigger.New(cfg, trigger.Options{}).Rollback(ctx)
	if err != nil {
		fail(err)
	}
	fmt.Printf("%s: %s\n", res.Outcome, res.Reason)
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "rollback failed: %v\n", err)
	os.Exit(1)
}
