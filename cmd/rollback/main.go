// Command rollback switches a blue-green target's router back to the colour
// traffic left at the last switch, and prints one line saying what it did.
//
// It reads the same environment as the function (STRATEGY=blue-green,
// DEPLOYMENT, CONTAINER, SERVICE or INGRESS, CLUSTER or KUBECONFIG, ...; see
// the README) and connects to the cluster the same way. If the previous
// colour was scaled down it is scaled up first; traffic moves only once it is
// fully rolled out. The switch is a compare-and-set on the router: if the
// router changed since it was read, nothing is switched and rollback says so.
// With SCALE_DOWN_OLD=true it then waits SCALE_DOWN_DELAY and scales the
// colour it left to 0; an interrupt during that wait leaves it running.
//
//	STRATEGY=blue-green SERVICE=web ... go run ./cmd/rollback [-timeout 5m] [-dry-run]
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
	timeout := flag.Duration("timeout", 0, "how long to wait for the previous colour to become available (default ROLLOUT_TIMEOUT)")
	dryRun := flag.Bool("dry-run", false, "have the API server validate the writes without persisting them")
	flag.Parse()

	cfg, err := config.Load(os.Getenv)
	if err != nil {
		fail(err)
	}
	if *timeout > 0 {
		cfg.RolloutTimeout = *timeout
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
