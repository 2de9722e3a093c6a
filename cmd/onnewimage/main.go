// Command onnewimage gathers the operator's commands for onNewImage, the
// way kubectl and gcloud gather theirs:
//
//	onnewimage check [-env-file FILE] [TARGETS_FILE]
//
// Run onnewimage -h for the list, and onnewimage COMMAND -h for one.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"go.yaml.in/yaml/v3"

	"github.com/onnewimage/onnewimage/internal/config"
	"github.com/onnewimage/onnewimage/internal/target"
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
}

// Exit codes.
const (
	exitOK      = 0
	exitInvalid = 1 // The configuration checked is invalid.
	exitUsage   = 2 // The command line is.
)

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
	for _, a := range args {
		if a == "-h" || a == "-help" || a == "--help" {
			fs.SetOutput(stdout)
			fs.Usage()
			return exitOK
		}
	}
	if err := fs.Parse(args); err != nil {
		return exitUsage
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

// strategy is a target's strategy in a few words: rolling, or blue-green
// and its router.
func strategy(t target.Target) string {
	switch {
	case t.Strategy != target.BlueGreen:
		return string(t.Strategy)
	case t.Ingress != "":
		return fmt.Sprintf("%s ingress/%s", t.Strategy, t.Ingress)
	}
	return fmt.Sprintf("%s service/%s", t.Strategy, t.Service)
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
