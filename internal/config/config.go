// Package config reads the function's settings from its environment, once
// per instance, and reports every problem at once.
package config

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/onnewimage/onnewimage/internal/cluster"
	"github.com/onnewimage/onnewimage/internal/emulator"
	"github.com/onnewimage/onnewimage/internal/image"
)

// Config is the function's validated configuration.
type Config struct {
	// Project, Location and Cluster name the GKE cluster. Cluster is empty
	// when Kubeconfig is used instead.
	Project, Location, Cluster string
	// Kubeconfig, used only when Cluster is empty, targets the file's current
	// context (local clusters).
	Kubeconfig string
	// Endpoint is which of the GKE cluster's control-plane endpoints is used.
	Endpoint cluster.Endpoint
	// ContainerEmulatorHost, when set, is a loopback host:port where the
	// Container API is reached over plaintext gRPC without credentials (local
	// runs, tests).
	ContainerEmulatorHost string

	// Namespace, Deployment and Container name what is updated.
	Namespace, Deployment, Container string
	// Image is the repository whose pushed digest is deployed.
	Image image.Pattern

	// Strategy is how a release reaches traffic.
	Strategy Strategy
	// Service or Ingress (exactly one, with the blue-green strategy) names
	// the router that sends traffic to one colour.
	Service, Ingress string
	// RolloutTimeout bounds how long the blue-green strategy waits for the
	// idle colour to become available before it gives up without switching.
	RolloutTimeout time.Duration
	// ScaleDownOld scales the colour traffic left to 0 after a switch.
	ScaleDownOld bool
	// ScaleDownDelay, with ScaleDownOld, is how long the colour traffic left
	// keeps running after the switch, for the requests still in flight to
	// it while the router change spreads: DefaultServiceScaleDownDelay or
	// DefaultIngressScaleDownDelay unless set. It is 0 without ScaleDownOld.
	ScaleDownDelay time.Duration

	// MaxEventAge drops events published longer ago than this.
	MaxEventAge time.Duration
	// DryRun asks the API server to validate every write without persisting it.
	DryRun bool
}

// Strategy names how a release reaches traffic.
type Strategy string

// The strategies STRATEGY accepts.
const (
	// Rolling patches the one Deployment DEPLOYMENT; Kubernetes replaces its
	// pods gradually.
	Rolling Strategy = "rolling"
	// BlueGreen deploys to the idle one of DEPLOYMENT-blue and
	// DEPLOYMENT-green, waits until it is available, then switches the
	// router (SERVICE or INGRESS) to it.
	BlueGreen Strategy = "blue-green"
)

// Defaults of the optional settings.
const (
	// DefaultMaxEventAge is MAX_EVENT_AGE when unset.
	DefaultMaxEventAge = time.Hour
	// DefaultRolloutTimeout is ROLLOUT_TIMEOUT when unset.
	DefaultRolloutTimeout = 5 * time.Minute
	// DefaultServiceScaleDownDelay is SCALE_DOWN_DELAY when unset with a
	// Service router: a selector change reaches every node's proxy within
	// seconds (Argo Rollouts waits 30s by default too).
	DefaultServiceScaleDownDelay = 30 * time.Second
	// DefaultIngressScaleDownDelay is SCALE_DOWN_DELAY when unset with an
	// Ingress router: GKE's load balancer takes one to several minutes to
	// apply a backend change.
	DefaultIngressScaleDownDelay = 2 * time.Minute
)

// The bounds of one event's work.
const (
	// RollingBudget bounds the cluster work of one event with the rolling
	// strategy: connecting, reading and patching one Deployment.
	RollingBudget = time.Minute
	// MaxBudget is the longest an event-driven Cloud Function may run (its
	// --timeout is at most 540s), so the longest Budget may be: past it the
	// platform ends the invocation before the function can decide anything.
	MaxBudget = 540 * time.Second
)

// ErrInvalid is wrapped by Load's error: the configuration cannot work until
// an operator changes it.
var ErrInvalid = errors.New("invalid configuration")

// Load reads the configuration through getenv (os.Getenv in production). Its
// error wraps ErrInvalid and names every problem found, not just the first.
func Load(getenv func(string) string) (Config, error) { return load(getenv, true) }

// LoadTarget is Load for commands that act on the target but deploy no
// build (rollback): IMAGE is not required.
func LoadTarget(getenv func(string) string) (Config, error) { return load(getenv, false) }

func load(getenv func(string) string, needImage bool) (Config, error) {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	get := func(name string) string { return strings.TrimSpace(getenv(name)) }

	c := Config{
		Project:               get("PROJECT"),
		Location:              get("LOCATION"),
		Cluster:               get("CLUSTER"),
		Kubeconfig:            get("KUBECONFIG"),
		ContainerEmulatorHost: get("CONTAINER_EMULATOR_HOST"),
		Namespace:             get("NAMESPACE"),
		Deployment:            get("DEPLOYMENT"),
		Container:             get("CONTAINER"),
		Strategy:              Strategy(get("STRATEGY")),
		Service:               get("SERVICE"),
		Ingress:               get("INGRESS"),
		RolloutTimeout:        DefaultRolloutTimeout,
		MaxEventAge:           DefaultMaxEventAge,
	}
	if zone := get("ZONE"); c.Location == "" {
		c.Location = zone
	} else if zone != "" && zone != c.Location {
		bad("LOCATION=%q and ZONE=%q disagree: set only one", c.Location, zone)
	}
	if c.Namespace == "" {
		c.Namespace = "default"
	}

	switch {
	case c.Cluster != "":
		if c.Project == "" {
			bad("PROJECT is required with CLUSTER")
		}
		if c.Location == "" {
			bad("LOCATION (or ZONE) is required with CLUSTER")
		}
	case c.Kubeconfig != "":
		// A local cluster: the kubeconfig's current context is the target.
	default:
		bad("CLUSTER is required (or KUBECONFIG, to target a local cluster)")
	}
	if raw := get("ENDPOINT"); raw != "" && c.Cluster == "" {
		bad("ENDPOINT=%q is used only with CLUSTER (a kubeconfig names its own server)", raw)
	} else if e, err := cluster.ParseEndpoint(raw); err != nil {
		bad("ENDPOINT=%v", err)
	} else {
		c.Endpoint = e
	}

	for _, f := range []struct {
		name, value string
		validate    func(string) []string
	}{
		{"NAMESPACE", c.Namespace, validation.IsDNS1123Label},
		{"DEPLOYMENT", c.Deployment, validation.IsDNS1123Subdomain},
		{"CONTAINER", c.Container, validation.IsDNS1123Label},
	} {
		if f.value == "" {
			bad("%s is required", f.name)
		} else if errs := f.validate(f.value); len(errs) > 0 {
			bad("%s=%q: %s", f.name, f.value, strings.Join(errs, "; "))
		}
	}

	if raw := get("IMAGE"); raw == "" {
		if needImage {
			bad("IMAGE is required (the repository to deploy, e.g. us-docker.pkg.dev/PROJECT/REPO/NAME)")
		}
	} else if p, err := image.ParsePattern(raw); err != nil {
		bad("IMAGE: %v", err)
	} else {
		c.Image = p
	}

	// Emulators are reached without credentials and trusted: this machine only.
	for _, e := range []struct{ name, value string }{
		{"CONTAINER_EMULATOR_HOST", c.ContainerEmulatorHost},
	} {
		if e.value == "" {
			continue
		}
		if err := emulator.CheckHost(e.value); err != nil {
			bad("%s=%q: %v", e.name, e.value, err)
		}
	}

	switch c.Strategy {
	case "":
		c.Strategy = Rolling
	case Rolling, BlueGreen:
	default:
		bad("STRATEGY=%q is not %q or %q", c.Strategy, Rolling, BlueGreen)
	}
	switch {
	case c.Strategy == BlueGreen && c.Service == "" && c.Ingress == "":
		bad("STRATEGY=%s needs the router: set SERVICE or INGRESS", BlueGreen)
	case c.Strategy == BlueGreen && c.Service != "" && c.Ingress != "":
		bad("SERVICE=%q and INGRESS=%q are both set: set only one router", c.Service, c.Ingress)
	case c.Strategy != BlueGreen && (c.Service != "" || c.Ingress != ""):
		bad("SERVICE and INGRESS are used only with STRATEGY=%s (STRATEGY is %s)", BlueGreen, c.Strategy)
	}
	if c.Service != "" {
		if errs := validation.IsDNS1035Label(c.Service); len(errs) > 0 {
			bad("SERVICE=%q: %s", c.Service, strings.Join(errs, "; "))
		}
	}
	if c.Ingress != "" {
		if errs := validation.IsDNS1123Subdomain(c.Ingress); len(errs) > 0 {
			bad("INGRESS=%q: %s", c.Ingress, strings.Join(errs, "; "))
		}
	}
	if c.Strategy == BlueGreen && c.Deployment != "" && len(validation.IsDNS1123Subdomain(c.Deployment)) == 0 {
		// The colours' names derive from DEPLOYMENT; the longest must be valid too.
		if errs := validation.IsDNS1123Subdomain(c.Deployment + "-green"); len(errs) > 0 {
			bad("DEPLOYMENT=%q: %s-green: %s", c.Deployment, c.Deployment, strings.Join(errs, "; "))
		}
		if c.Ingress != "" {
			if errs := validation.IsDNS1035Label(c.Deployment + "-green-svc"); len(errs) > 0 {
				bad("DEPLOYMENT=%q: the colour service %s-green-svc: %s", c.Deployment, c.Deployment, strings.Join(errs, "; "))
			}
		}
	}

	duration := func(name string, into *time.Duration) {
		raw := get(name)
		if raw == "" {
			return
		}
		d, err := time.ParseDuration(raw)
		switch {
		case err != nil:
			bad("%s=%q is not a Go duration (e.g. 1h, 30m)", name, raw)
		case d <= 0:
			bad("%s=%q must be positive", name, raw)
		default:
			*into = d
		}
	}
	boolean := func(name string, into *bool) {
		raw := get(name)
		if raw == "" {
			return
		}
		b, err := strconv.ParseBool(raw)
		if err != nil {
			bad("%s=%q is not a boolean (true or false)", name, raw)
		}
		*into = b
	}
	duration("MAX_EVENT_AGE", &c.MaxEventAge)
	duration("ROLLOUT_TIMEOUT", &c.RolloutTimeout)
	boolean("DRY_RUN", &c.DryRun)
	boolean("SCALE_DOWN_OLD", &c.ScaleDownOld)
	if raw := get("SCALE_DOWN_DELAY"); raw != "" {
		d, err := time.ParseDuration(raw)
		switch {
		case !c.ScaleDownOld:
			bad("SCALE_DOWN_DELAY is used only with SCALE_DOWN_OLD=true (nothing is scaled down otherwise)")
		case err != nil:
			bad("SCALE_DOWN_DELAY=%q is not a Go duration (e.g. 30s, 2m)", raw)
		case d < 0:
			bad("SCALE_DOWN_DELAY=%q must not be negative", raw)
		default:
			c.ScaleDownDelay = d
		}
	} else if c.ScaleDownOld && c.Ingress != "" {
		c.ScaleDownDelay = DefaultIngressScaleDownDelay
	} else if c.ScaleDownOld {
		c.ScaleDownDelay = DefaultServiceScaleDownDelay
	}

	if b := c.Budget(); b > MaxBudget && c.ScaleDownOld {
		bad("ROLLOUT_TIMEOUT=%q with SCALE_DOWN_DELAY=%s is too long: an event may then take %s (%s to connect and patch, plus ROLLOUT_TIMEOUT, plus SCALE_DOWN_DELAY), over %.0fs, the longest --timeout of an event-driven function; keep ROLLOUT_TIMEOUT + SCALE_DOWN_DELAY at most %s",
			get("ROLLOUT_TIMEOUT"), c.ScaleDownDelay, b, RollingBudget, MaxBudget.Seconds(), MaxBudget-RollingBudget)
	} else if b > MaxBudget {
		bad("ROLLOUT_TIMEOUT=%q is too long: an event may then take %s (%s to connect and patch, plus ROLLOUT_TIMEOUT), over %.0fs, the longest --timeout of an event-driven function; set at most %s",
			get("ROLLOUT_TIMEOUT"), b, RollingBudget, MaxBudget.Seconds(), MaxBudget-RollingBudget)
	}

	if len(problems) > 0 {
		return c, fmt.Errorf("%w: %s", ErrInvalid, strings.Join(problems, "; "))
	}
	return c, nil
}

// Budget is how long one event's cluster work may take: RollingBudget, plus
// RolloutTimeout with blue-green, which waits for the idle colour, plus
// ScaleDownDelay when the old colour is scaled down after the switch. Load
// rejects a configuration whose Budget is over MaxBudget.
func (c Config) Budget() time.Duration {
	if c.Strategy != BlueGreen {
		return RollingBudget
	}
	budget := RollingBudget + c.RolloutTimeout
	if c.ScaleDownOld {
		budget += c.ScaleDownDelay
	}
	return budget
}

// ClusterName is the Container API resource name of the GKE cluster:
// projects/P/locations/L/clusters/C.
func (c Config) ClusterName() string {
	return fmt.Sprintf("projects/%s/locations/%s/clusters/%s", c.Project, c.Location, c.Cluster)
}
