package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"

	"github.com/onnewimage/onnewimage/internal/config"
	"github.com/onnewimage/onnewimage/internal/rollout"
	"github.com/onnewimage/onnewimage/internal/trigger"
)

// abort stops the canary in progress on one target, and prints one line
// saying what it did.
func abort(name string, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	envFile := fs.String("env-file", "", "read the variables from this gcloud --env-vars-file (as deployed) instead of the environment")
	dryRun := fs.Bool("dry-run", false, "have the API server validate the writes without persisting them")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: onnewimage abort [-env-file FILE] [-dry-run] [TARGET]

Stop the canary in progress on TARGET (a canary target) at once, and print
one line saying what was done (OUTCOME: REASON): traffic goes back on the
stable Deployment (with HTTPROUTE, its weights to 100/0 first), the canary
Deployment to 0 replicas, and its build is recorded as rejected, so that
the invocation driving it stops without promoting and its redelivery does
not start it again. Nothing else changes: with no canary in progress it
fails and changes nothing (onnewimage rollback would then take the stable
Deployment back).

The targets are the function's: the targets file TARGETS names, or the
single-target variables (one target, "default"; IMAGE not needed), read from
the environment or -env-file. TARGET may be omitted when there is one.

Exit 0 once done, 1 if the configuration is invalid, no canary is in
progress or the abort failed, 2 if the command line is wrong (an unknown
TARGET, none among several, or a target that is not a canary's).

Examples:
  onnewimage abort
  TARGETS=targets.yaml onnewimage abort web-prod

Flags:
`)
		fs.PrintDefaults()
	}
	if code, done := parseFlags(fs, args, stdout); done {
		return code
	}
	fail := func(code int, format string, args ...any) int {
		fmt.Fprintf(stderr, "onnewimage abort: "+format+"\n", args...)
		return code
	}
	if fs.NArg() > 1 {
		code := fail(exitUsage, "give at most one target")
		fs.Usage()
		return code
	}
	cfg, err := loadTarget(*envFile, getenv)
	if err != nil {
		return fail(exitInvalid, "%v", err)
	}
	cfg.DryRun = cfg.DryRun || *dryRun

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	res, err := trigger.New(cfg, triggerOptions).Abort(ctx, fs.Arg(0))
	switch {
	case errors.Is(err, config.ErrNoTarget):
		return fail(exitUsage, "%v", err)
	case errors.Is(err, trigger.ErrNotCanary):
		t, _ := cfg.Target(fs.Arg(0))
		return fail(exitUsage, "target %s uses the %s strategy: abort stops a canary in progress (onnewimage rollback takes a rolling or blue-green target back)", t.Name, t.Strategy)
	case errors.Is(err, rollout.ErrNoCanary):
		return fail(exitInvalid, "%v; nothing was changed", err)
	case err != nil:
		return fail(exitInvalid, "%v", err)
	}
	fmt.Fprintf(stdout, "%s: %s\n", res.Outcome, res.Reason)
	return exitOK
}
