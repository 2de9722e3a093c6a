// Package config reads the function's settings from its environment, once
// per instance, and reports every problem at once.
//
// The targets come either from the single-target variables (IMAGE,
// DEPLOYMENT, ...: one target named "default") or from the targets file
// TARGETS names; both are checked by target.Build. The function-wide
// settings (MAX_EVENT_AGE, DRY_RUN, RESULT_TOPIC, emulator hosts) are always
// variables.
package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/onnewimage/onnewimage/internal/emulator"
	"github.com/onnewimage/onnewimage/internal/result"
	"github.com/onnewimage/onnewimage/internal/target"
)

// Config is the function's validated configuration.
type Config struct {
	// Targets are where releases go: one, named "default", from the
	// single-target variables, or those of the targets file.
	Targets []target.Target
	// TargetsFile is the targets file read, its path resolved; "" when the
	// single-target variables are used.
	TargetsFile string

	// ContainerEmulatorHost, when set, is a loopback host:port where the
	// Container API is reached over plaintext gRPC without credentials (local
	// runs, tests).
	ContainerEmulatorHost string
	// MaxEventAge drops events published longer ago than this.
	MaxEventAge time.Duration
	// DryRun asks the API server to validate every write without persisting it.
	DryRun bool
	// ResultTopic, when set, is the Pub/Sub topic each target's result of
	// a build is published to: projects/P/topics/T, or a topic ID in the
	// function's project.
	ResultTopic string
	// PubSubEmulatorHost is PUBSUB_EMULATOR_HOST, a loopback host:port the
	// Pub/Sub client then publishes to without credentials (local runs,
	// tests). The client reads the variable itself.
	PubSubEmulatorHost string

	// VerifyBuild confirms every build to deploy with the Cloud Build API
	// first (VERIFY_BUILD, default true). See BuildProjects.
	VerifyBuild bool
	// BuildProjects are the projects whose builds may be deployed
	// (BUILD_PROJECTS; by default PROJECT, or every cluster project of the
	// targets file).
	BuildProjects []string
	// CloudBuildEmulatorHost, when set, is a loopback host:port where the
	// Cloud Build API is reached over plaintext gRPC without credentials
	// (local runs, tests).
	CloudBuildEmulatorHost string
}

// DefaultMaxEventAge is MAX_EVENT_AGE when unset.
const DefaultMaxEventAge = time.Hour

// SourceDir is where the Go functions-framework buildpack leaves the
// function's source, relative to the working directory of the running
// function. A relative TARGETS is resolved there when it exists, else
// against the working directory (local runs from the repository's root).
const SourceDir = "serverless_function_source_code"

// singleTarget are the single-target variables, in the order a conflict
// with TARGETS names them.
var singleTarget = []string{
	"IMAGE", "PROJECT", "LOCATION", "ZONE", "CLUSTER", "ENDPOINT", "KUBECONFIG", "NAMESPACE", "DEPLOYMENT", "CONTAINER",
	"STRATEGY", "SERVICE", "INGRESS", "ROLLOUT_TIMEOUT", "SCALE_DOWN_OLD", "SCALE_DOWN_DELAY",
	"GATES", "GATE_TIMEOUT",
	"CANARY_STEPS", "CANARY_PAUSE", "HTTPROUTE",
}

// ErrInvalid is wrapped by Load's error: the configuration cannot work until
// an operator changes it.
var ErrInvalid = errors.New("invalid configuration")

// ErrNoTarget is wrapped by Config.Target's error: the name given does not
// pick one target.
var ErrNoTarget = errors.New("no such target")

// Error is Load's error: every problem found. It wraps ErrInvalid.
type Error struct {
	// Problems are the problems, one sentence each, in the order found (a
	// targets file's in the order of the file).
	Problems []string
}

func (e *Error) Error() string {
	return ErrInvalid.Error() + ": " + strings.Join(e.Problems, "; ")
}

func (e *Error) Unwrap() error { return ErrInvalid }

// Load reads the configuration through getenv (os.Getenv in production). Its
// error is an *Error naming every problem found, not just the first.
// With TARGETS set, it reads that file (see target.Decode).
func Load(getenv func(string) string) (Config, error) { return load(getenv, true) }

// LoadTarget is Load for commands that act on the target but deploy no
// build (rollback): the single-target variables need no IMAGE.
func LoadTarget(getenv func(string) string) (Config, error) { return load(getenv, false) }

func load(getenv func(string) string, needImage bool) (Config, error) {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	get := func(name string) string { return strings.TrimSpace(getenv(name)) }

	c := Config{
		ContainerEmulatorHost:  get("CONTAINER_EMULATOR_HOST"),
		CloudBuildEmulatorHost: get("CLOUDBUILD_EMULATOR_HOST"),
		MaxEventAge:            DefaultMaxEventAge,
		ResultTopic:            get("RESULT_TOPIC"),
		PubSubEmulatorHost:     get("PUBSUB_EMULATOR_HOST"),
	}

	values := map[string]string{}
	var set []string
	for _, name := range singleTarget {
		if v := get(name); v != "" {
			values[name] = v
			set = append(set, name)
		}
	}
	switch file := get("TARGETS"); {
	case file != "" && len(set) > 0:
		bad("TARGETS=%q and the single-target variables %s are both set: set TARGETS or those, not both",
			file, strings.Join(set, ", "))
	case file != "":
		c.TargetsFile = Resolve(file)
		targets, err := target.ReadFile(c.TargetsFile)
		var list target.Problems
		switch {
		case errors.As(err, &list):
			problems = append(problems, list...)
		case err != nil:
			bad("TARGETS=%q: %v", file, err)
		}
		c.Targets = targets
	default:
		t, ok := variables(values, needImage, bad)
		if ok {
			c.Targets = []target.Target{t}
		}
	}

	// Emulators are reached without credentials and trusted: this machine only.
	for _, e := range []struct{ name, value string }{
		{"CONTAINER_EMULATOR_HOST", c.ContainerEmulatorHost},
		{"PUBSUB_EMULATOR_HOST", c.PubSubEmulatorHost},
		{"CLOUDBUILD_EMULATOR_HOST", c.CloudBuildEmulatorHost},
	} {
		if e.value == "" {
			continue
		}
		if err := emulator.CheckHost(e.value); err != nil {
			bad("%s=%q: %v", e.name, e.value, err)
		}
	}

	if raw := get("MAX_EVENT_AGE"); raw != "" {
		d, err := time.ParseDuration(raw)
		switch {
		case err != nil:
			bad("MAX_EVENT_AGE=%q is not a Go duration (e.g. 1h, 30m)", raw)
		case d <= 0:
			bad("MAX_EVENT_AGE=%q must be positive", raw)
		default:
			c.MaxEventAge = d
		}
	}
	if c.ResultTopic != "" {
		if err := result.CheckTopic(c.ResultTopic); err != nil {
			bad("RESULT_TOPIC=%q: %v", c.ResultTopic, err)
		}
	}
	if raw := get("DRY_RUN"); raw != "" {
		b, err := strconv.ParseBool(raw)
		if err != nil {
			bad("DRY_RUN=%q is not a boolean (true or false)", raw)
		}
		c.DryRun = b
	}
	c.VerifyBuild, c.BuildProjects = provenance(get, values["PROJECT"], c.Targets, needImage, bad)

	if len(problems) > 0 {
		return c, &Error{Problems: problems}
	}
	return c, nil
}

// variables builds the one target named "default" from the single-target
// variables' values.
func variables(values map[string]string, needImage bool, bad func(string, ...any)) (target.Target, bool) {
	location := values["LOCATION"]
	if zone := values["ZONE"]; location == "" {
		location = zone
	} else if zone != "" && zone != location {
		bad("LOCATION=%q and ZONE=%q disagree: set only one", location, zone)
	}
	s := target.Settings{Name: "default", Variables: true, ImageOptional: !needImage, Values: map[target.Key]target.Value{}}
	for _, k := range []target.Key{
		target.KeyImage, target.KeyProject, target.KeyClusterName, target.KeyEndpoint, target.KeyKubeconfig, target.KeyNamespace,
		target.KeyDeployment, target.KeyContainer, target.KeyStrategy, target.KeyService, target.KeyIngress,
		target.KeyRolloutTimeout, target.KeyScaleDownOld, target.KeyScaleDownDelay,
		target.KeyGates, target.KeyGateTimeout,
		target.KeyCanarySteps, target.KeyCanaryPause, target.KeyHTTPRoute,
	} {
		if v := values[k.Variable()]; v != "" {
			s.Values[k] = target.Value{Text: v}
		}
	}
	if location != "" {
		s.Values[target.KeyLocation] = target.Value{Text: location}
	}
	t, problems := target.Build(s)
	for _, p := range problems {
		bad("%s", p.Variable())
	}
	return t, len(problems) == 0
}

// Resolve returns where the function finds the targets file path: path
// itself when absolute, else path inside SourceDir when the working
// directory holds SourceDir (a deployed function), else path relative to
// the working directory.
func Resolve(path string) string {
	if filepath.IsAbs(path) {
		return path
	}
	if st, err := os.Stat(SourceDir); err == nil && st.IsDir() {
		return filepath.Join(SourceDir, path)
	}
	return path
}

// Target returns the target named name. An empty name picks the one target
// of a configuration that has exactly one. The error wraps ErrNoTarget and
// lists the names to choose from.
func (c Config) Target(name string) (target.Target, error) {
	var names []string
	for _, t := range c.Targets {
		if t.Name == name || (name == "" && len(c.Targets) == 1) {
			return t, nil
		}
		names = append(names, t.Name)
	}
	source := c.TargetsFile
	if source == "" {
		source = "the single-target variables"
	}
	if name == "" {
		return target.Target{}, noTarget(fmt.Sprintf("%s has %d targets: name one of %s", source, len(names), strings.Join(names, ", ")))
	}
	return target.Target{}, noTarget(fmt.Sprintf("no target %q in %s: name one of %s", name, source, strings.Join(names, ", ")))
}

// noTarget is Config.Target's error.
type noTarget string

func (e noTarget) Error() string { return string(e) }
func (e noTarget) Unwrap() error { return ErrNoTarget }
