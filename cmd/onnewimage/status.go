package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/onnewimage/onnewimage/internal/rollout"
	"github.com/onnewimage/onnewimage/internal/target"
	"github.com/onnewimage/onnewimage/internal/trigger"
)

// targetStatus is one target's block of status: -o json prints a list of
// them under "targets".
type targetStatus struct {
	Name     string `json:"name"`
	Strategy string `json:"strategy"`
	// Router is the blue-green router, as kind/name.
	Router string `json:"router,omitempty"`
	// Where is CLUSTER/NAMESPACE/DEPLOYMENT:CONTAINER.
	Where string `json:"where"`
	// State is nil when the target could not be read.
	*rollout.State
	// Error is why the target could not be read.
	Error string `json:"error,omitempty"`
}

// statusTimeout bounds the reading of one target.
const statusTimeout = time.Minute

// status prints, for each target or the one named, what is live, the
// strategy's state and the builds kept out.
func status(name string, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	envFile := fs.String("env-file", "", "read the variables from this gcloud --env-vars-file (as deployed) instead of the environment")
	output := fs.String("o", "text", "output format: text or json")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: onnewimage status [-env-file FILE] [-o text|json] [TARGET]

Show, for each target (or TARGET), one block: what is live (the image, the
build and commit it came from, and since when onNewImage made it live), the
strategy's state (blue-green: the live colour, what the idle colour holds,
a release on its way to it), and the builds the target keeps out (the
newest build ever deployed with rolling, the build last rolled back).
Everything is read from what the function records on the Deployments and
the router, with get requests only: the function's own rights are enough.

The targets are the function's: the targets file TARGETS names, or the
single-target variables (one target, "default"; IMAGE not needed), read
from the environment or -env-file.

Exit 0 when every target was read, 1 if the configuration is invalid or a
target could not be read (its block says why), 2 if the command line is
wrong (an unknown TARGET).

Examples:
  onnewimage status
  TARGETS=targets.yaml onnewimage status -o json web-prod

Flags:
`)
		fs.PrintDefaults()
	}
	if code, done := parseFlags(fs, args, stdout); done {
		return code
	}
	if fs.NArg() > 1 || (*output != "text" && *output != "json") {
		fmt.Fprintln(stderr, "onnewimage status: give at most one target, and -o text or -o json")
		fs.Usage()
		return exitUsage
	}
	fail := func(code int, err error) int {
		fmt.Fprintf(stderr, "onnewimage status: %v\n", err)
		return code
	}
	cfg, err := loadTarget(*envFile, getenv)
	if err != nil {
		return fail(exitInvalid, err)
	}
	targets := cfg.Targets
	if fs.NArg() == 1 {
		t, err := cfg.Target(fs.Arg(0))
		if err != nil {
			return fail(exitUsage, err)
		}
		targets = []target.Target{t}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	h := trigger.New(cfg, triggerOptions)
	code := exitOK
	var list []targetStatus
	for _, t := range targets {
		ts := targetStatus{Name: t.Name, Strategy: string(t.Strategy), Where: t.Where()}
		if t.Strategy == target.BlueGreen {
			ts.Router = "service/" + t.Service
			if t.Ingress != "" {
				ts.Router = "ingress/" + t.Ingress
			}
		}
		tctx, cancel := context.WithTimeout(ctx, statusTimeout)
		st, err := h.Inspect(tctx, t.Name)
		cancel()
		if err != nil {
			ts.Error, code = err.Error(), exitInvalid
		} else {
			ts.State = &st
		}
		list = append(list, ts)
	}
	if *output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(map[string]any{"targets": list})
		return code
	}
	for i, ts := range list {
		if i > 0 {
			fmt.Fprintln(stdout)
		}
		printStatus(stdout, ts)
	}
	return code
}

// printStatus prints one target's block.
func printStatus(w io.Writer, ts targetStatus) {
	head := ts.Name + "  " + ts.Strategy
	if ts.Router != "" {
		head += " " + ts.Router
	}
	fmt.Fprintf(w, "%s  %s\n", head, ts.Where)
	line := func(label, format string, args ...any) {
		fmt.Fprintf(w, "  %-12s %s\n", label, fmt.Sprintf(format, args...))
	}
	if ts.Error != "" {
		line("error", "%s", ts.Error)
		return
	}
	s := *ts.State
	live := s.Live.Deployment + " runs " + s.Live.Image
	if s.Live.Colour != "" {
		live = string(s.Live.Colour) + ": " + live
	}
	line("live", "%s (%s)", live, s.Live.Status)
	line("build", "%s", build(s.Live.Build))
	if !s.Live.DeployedAt.IsZero() {
		line("since", "%s", s.Live.DeployedAt.Format(time.RFC3339))
	}
	if s.Idle != nil {
		line("idle", "%s: %s runs %s, build %s, %d replicas (%s)", s.Idle.Colour, s.Idle.Deployment, s.Idle.Image, build(s.Idle.Build), s.Idle.Replicas, s.Idle.Status)
	}
	if s.Deploying != "" {
		line("deploying", "%s", s.Deploying)
	}
	if s.Weights != "" {
		line("weights", "%s", s.Weights)
	}
	if b := s.Records.NewestBuild; b != nil && (s.Live.Build == nil || b.ID != s.Live.Build.ID) {
		line("newest", "%s", build(b)) // JSON always has it; text when it is not the live build.
	}
	if b := s.Records.RolledBack; b != nil {
		line("rolled back", "%s", build(b))
	}
	for _, p := range s.Problems {
		line("problem", "%s", p)
	}
}

// build describes a recorded build in a phrase.
func build(b *rollout.Build) string {
	if b == nil {
		return "none recorded (not deployed by onNewImage)"
	}
	s := b.ID
	var about []string
	if b.Commit != "" {
		about = append(about, "commit "+b.Commit)
	}
	if !b.CreateTime.IsZero() {
		about = append(about, "created "+b.CreateTime.UTC().Format(time.RFC3339))
	}
	if len(about) > 0 {
		s += " (" + strings.Join(about, ", ") + ")"
	}
	return s
}
