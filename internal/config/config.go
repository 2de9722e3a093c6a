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
	// ContainerEmulatorHost, when set, is a host:port where the Container API
	// is reached over plaintext gRPC without credentials (local runs, tests).
	ContainerEmulatorHost string

	// Namespace, Deployment and Container name what is updated.
	Namespace, Deployment, Container string
	// Image is the repository whose pushed digest is deployed.
	Image image.Pattern

	// MaxEventAge drops events published longer ago than this.
	MaxEventAge time.Duration
	// DryRun asks the API server to validate every write without persisting it.
	DryRun bool
}

// DefaultMaxEventAge is MAX_EVENT_AGE when unset.
const DefaultMaxEventAge = time.Hour

// ErrInvalid is wrapped by Load's error: the configuration cannot work until
// an operator changes it.
var ErrInvalid = errors.New("invalid configuration")

// Load reads the configuration through getenv (os.Getenv in production). Its
// error wraps ErrInvalid and names every problem found, not just the first.
func Load(getenv func(string) string) (Config, error) {
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
		bad("IMAGE is required (the repository to deploy, e.g. us-docker.pkg.dev/PROJECT/REPO/NAME)")
	} else if p, err := image.ParsePattern(raw); err != nil {
		bad("IMAGE: %v", err)
	} else {
		c.Image = p
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
	if raw := get("DRY_RUN"); raw != "" {
		b, err := strconv.ParseBool(raw)
		if err != nil {
			bad("DRY_RUN=%q is not a boolean (true or false)", raw)
		}
		c.DryRun = b
	}

	if len(problems) > 0 {
		return c, fmt.Errorf("%w: %s", ErrInvalid, strings.Join(problems, "; "))
	}
	return c, nil
}

// ClusterName is the Container API resource name of the GKE cluster:
// projects/P/locations/L/clusters/C.
func (c Config) ClusterName() string {
	return fmt.Sprintf("projects/%s/locations/%s/clusters/%s", c.Project, c.Location, c.Cluster)
}

// Target names what is updated, for logs: namespace/deployment:container.
func (c Config) Target() string {
	return c.Namespace + "/" + c.Deployment + ":" + c.Container
}
