// Command onnewimage gathers the operator's commands for onNewImage, the
// way kubectl and gcloud gather theirs:
//
//	onnewimage check [-env-file FILE] [TARGETS_FILE]
//	onnewimage rollback [-env-file FILE] [-timeout D] [-dry-run] [TARGET]
//	onnewimage abort [-env-file FILE] [-dry-run] [TARGET]
//	onnewimage status [-env-file FILE] [-o text|json] [TARGET]
//
// Run onnewimage -h for the list, and onnewimage COMMAND -h for one.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"text/tabwriter"

	"go.yaml.in/yaml/v3"

	"github.com/onnewimage/onnewimage/internal/config"
	"github.com/onnewimage/onnewimage/internal/target"
	"github.com/onnewimage/onnewimage/internal/trigger"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr, os.Getenv))
}

// command is one subcommand.
type command struct {
	name, group, summary string
	run                  func(name string, args []string, stdout, stderr io.Writer, getenv func(string) string) int
}

// commands are the subcommands, listed by group in this order.
var commands = []command{
	{"check", "Configuration", "Validate a targets file, or the variables, without touching any cluster", check},
	{"rollback", "Release", "Take a target back to the release before the live one", rollback},
	{"abort", "Release", "Stop a canary in progress at once: traffic back on stable, its build rejected", abort},
	{"status", "Release", "Show what is live on each target, from which build and commit, and what was kept out", status},
}

// Exit codes.
const (
	exitOK      = 0
	exitInvalid = 1 // The configuration is invalid, or the command failed.
	exitUsage   = 2 // The command line is wrong.
)

// triggerOptions are the options of the Handler rollback and status use;
// tests give it a Connector to a fake cluster.
var triggerOptions trigger.Options

// run runs the command line args (without the program's name) and returns
// the exit code.
func run(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		usage(stdout)
		return exitOK
	}
	for _, c := range commands {
		if c.name == args[0] {
			return c.run(c.name, args[1:], stdout, stderr, getenv)
		}
	}
	fmt.Fprintf(stderr, "onnewimage: unknown command %q\nRun 'onnewimage -h' for the commands.\n", args[0])
	return exitUsage
}

func usage(w io.Writer) {
	fmt.Fprint(w, "onnewimage: the operator's commands for onNewImage, a continuous-deployment trigger for GKE.\n")
	group := ""
	for _, c := range commands {
		if c.group != group {
			group = c.group
			fmt.Fprintf(w, "\n%s commands:\n", group)
		}
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, "\nUsage:\n  onnewimage COMMAND [flags] [args]\n\nRun 'onnewimage COMMAND -h' for a command's flags.\n")
}

// check validates a targets file, or the configuration of the variables,
// and prints each target on one line.
func check(name string, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	envFile := fs.String("env-file", "", "read the variables from this gcloud --env-vars-file (as deployed) instead of the environment")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: onnewimage check [-env-file FILE] [TARGETS_FILE]

Validate a targets file, or without one the function's configuration (the
single-target variables, or the targets file TARGETS names), without
touching any cluster. Print each target on one line: its name, the image it
deploys, its when rules (* for every build), where it deploys
(CLUSTER/NAMESPACE/DEPLOYMENT:CONTAINER) and its strategy. Exit 1 listing
every problem when the configuration is invalid.

Examples:
  onnewimage check targets.yaml
  onnewimage check -env-file=env.yaml

Flags:
`)
		fs.PrintDefaults()
	}
	if code, done := parseFlags(fs, args, stdout); done {
		return code
	}
	if fs.NArg() > 1 || (fs.NArg() == 1 && *envFile != "") {
		fmt.Fprintln(stderr, "onnewimage check: give one targets file, or -env-file, or neither")
		fs.Usage()
		return exitUsage
	}

	var targets []target.Target
	var problems []string
	var err error
	switch {
	case fs.NArg() == 1:
		targets, err = target.ReadFile(fs.Arg(0))
	default:
		if *envFile != "" {
			getenv, err = readEnvFile(*envFile)
			if err != nil {
				break
			}
		}
		var c config.Config
		c, err = config.Load(getenv)
		targets = c.Targets
	}
	var list target.Problems
	var cerr *config.Error
	switch {
	case errors.As(err, &list):
		problems = list
	case errors.As(err, &cerr):
		problems = cerr.Problems
	case err != nil:
		problems = []string{err.Error()}
	}
	if len(problems) > 0 {
		for _, p := range problems {
			fmt.Fprintln(stderr, p)
		}
		noun := "problems"
		if len(problems) == 1 {
			noun = "problem"
		}
		fmt.Fprintf(stderr, "onnewimage check: %d %s\n", len(problems), noun)
		return exitInvalid
	}

	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tIMAGE\tWHEN\tWHERE\tSTRATEGY")
	for _, t := range targets {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.Name, t.Image, t.When, t.Where(), strategy(t))
	}
	tw.Flush()
	return exitOK
}

// strategy is a target's strategy in a few words: rolling, blue-green and
// its router, or canary, its router and steps; then its gates if any.
func strategy(t target.Target) string {
	s := string(t.Strategy)
	switch {
	case t.Strategy == target.Canary:
		router := "replica ratio"
		if t.HTTPRoute != "" {
			router = "httproute/" + t.HTTPRoute
		}
		steps := make([]string, len(t.CanarySteps))
		for i, n := range t.CanarySteps {
			steps[i] = strconv.Itoa(n)
		}
		s = fmt.Sprintf("%s %s steps %s (%s each)", t.Strategy, router, strings.Join(steps, ","), t.CanaryPause)
	case t.Strategy != target.BlueGreen:
	case t.Ingress != "":
		s = fmt.Sprintf("%s ingress/%s", t.Strategy, t.Ingress)
	default:
		s = fmt.Sprintf("%s service/%s", t.Strategy, t.Service)
	}
	if len(t.Gates) > 0 {
		s += fmt.Sprintf(" gates %s (%s each)", strings.Join(t.Gates, ","), t.GateTimeout)
	}
	return s
}

// loadTarget loads the configuration as config.LoadTarget does, from the
// env file when one is named, else through getenv.
func loadTarget(envFile string, getenv func(string) string) (config.Config, error) {
	if envFile != "" {
		var err error
		if getenv, err = readEnvFile(envFile); err != nil {
			return config.Config{}, err
		}
	}
	return config.LoadTarget(getenv)
}

// readEnvFile reads a gcloud --env-vars-file: a YAML map of strings. Its
// variables are the function's whole environment, as gcloud deploys them.
func readEnvFile(path string) (func(string) string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var values map[string]string
	if err := yaml.Unmarshal(raw, &values); err != nil {
		return nil, fmt.Errorf("%s: not a map of variables to strings: %s", path, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	return func(name string) string { return values[name] }, nil
}

// rollback takes one target back to the release before the live one, and
// prints one line saying what it did.
func rollback(name string, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	envFile := fs.String("env-file", "", "read the variables from this gcloud --env-vars-file (as deployed) instead of the environment")
	timeout := fs.Duration("timeout", 0, "blue-green: how long to wait for the previous colour to become available (default the target's rolloutTimeout, or ROLLOUT_TIMEOUT)")
	dryRun := fs.Bool("dry-run", false, "have the API server validate the writes without persisting them")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: onnewimage rollback [-env-file FILE] [-timeout D] [-dry-run] [TARGET]

Take TARGET back to the release before the live one, and print one line
saying what was done (OUTCOME: REASON). The build taken out is not deployed
again when its event is delivered again; a newer build is.

The targets are the function's: the targets file TARGETS names, or the
single-target variables (one target, "default"; IMAGE not needed), read from
the environment or -env-file. TARGET may be omitted when there is one.
onnewimage check lists them, and where each lives.

blue-green: switch the router back to the colour traffic left at the last
switch, once that colour is fully rolled out (scaled back up first if it was
scaled down). The switch is a compare-and-set on the router: if it changed
since it was read, nothing is switched. With scaleDownOld the colour left is
scaled to 0 after scaleDownDelay; an interrupt during that wait leaves it
running.

canary: abort the canary in progress at once (the canary Deployment to 0
replicas, its build recorded as rejected; the invocation driving it stops
without promoting); with none in progress, the stable Deployment goes back
as with rolling.

rolling: what kubectl rollout undo does: the Deployment gets its previous
revision's pod template and release annotations back, in one compare-and-set.
It lists ReplicaSets, so run it with an operator's identity, not the
function's.

Exit 0 once done, 1 if the configuration is invalid or the rollback failed,
2 if the command line is wrong (an unknown TARGET, or none among several).

Examples:
  onnewimage rollback
  TARGETS=targets.yaml onnewimage rollback -timeout 5m web-prod
  onnewimage rollback -env-file=env.yaml -dry-run

Flags:
`)
		fs.PrintDefaults()
	}
	if code, done := parseFlags(fs, args, stdout); done {
		return code
	}
	if fs.NArg() > 1 {
		fmt.Fprintln(stderr, "onnewimage rollback: give at most one target")
		fs.Usage()
		return exitUsage
	}
	fail := func(code int, err error) int {
		fmt.Fprintf(stderr, "onnewimage rollback: %v\n", err)
		return code
	}
	cfg, err := loadTarget(*envFile, getenv)
	if err != nil {
		return fail(exitInvalid, err)
	}
	cfg.DryRun = cfg.DryRun || *dryRun
	if *timeout > 0 {
		for i := range cfg.Targets {
			cfg.Targets[i].RolloutTimeout = *timeout
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	res, err := trigger.New(cfg, triggerOptions).Rollback(ctx, fs.Arg(0))
	switch {
	case errors.Is(err, config.ErrNoTarget):
		return fail(exitUsage, err)
	case err != nil:
		return fail(exitInvalid, err)
	}
	fmt.Fprintf(stdout, "%s: %s\n", res.Outcome, res.Reason)
	return exitOK
}

// parseFlags parses a command's flags. Asked for help, it prints the usage
// to stdout (not stderr: it was asked for) and is done with exitOK; on a bad
// flag it is done with exitUsage (the flag package has printed why).
func parseFlags(fs *flag.FlagSet, args []string, stdout io.Writer) (code int, done bool) {
	for _, a := range args {
		if a == "-h" || a == "-help" || a == "--help" {
			fs.SetOutput(stdout)
			fs.Usage()
			return exitOK, true
		}
	}
	if err := fs.Parse(args); err != nil {
		return exitUsage, true
	}
	return 0, false
}
