package target

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/onnewimage/onnewimage/internal/cluster"
	"github.com/onnewimage/onnewimage/internal/image"
)

// Key names one setting of a target: its key in a targets file, dotted
// below cluster.
type Key string

// The settings of a target.
const (
	KeyName           Key = "name"
	KeyImage          Key = "image"
	KeyWhen           Key = "when"
	KeyCluster        Key = "cluster"
	KeyProject        Key = "cluster.project"
	KeyLocation       Key = "cluster.location"
	KeyClusterName    Key = "cluster.name"
	KeyKubeconfig     Key = "cluster.kubeconfig"
	KeyEndpoint       Key = "cluster.endpoint"
	KeyNamespace      Key = "namespace"
	KeyDeployment     Key = "deployment"
	KeyContainer      Key = "container"
	KeyStrategy       Key = "strategy"
	KeyService        Key = "service"
	KeyIngress        Key = "ingress"
	KeyRolloutTimeout Key = "rolloutTimeout"
	KeyScaleDownOld   Key = "scaleDownOld"
	KeyScaleDownDelay Key = "scaleDownDelay"
	KeyGates          Key = "gates"
	KeyGateTimeout    Key = "gateTimeout"
	KeyCanarySteps    Key = "canarySteps"
	KeyCanaryPause    Key = "canaryPause"
	KeyHTTPRoute      Key = "httpRoute"
)

// variables are the single-target variables, by the key each sets.
var variables = map[Key]string{
	KeyImage:          "IMAGE",
	KeyCluster:        "CLUSTER",
	KeyProject:        "PROJECT",
	KeyLocation:       "LOCATION",
	KeyClusterName:    "CLUSTER",
	KeyKubeconfig:     "KUBECONFIG",
	KeyEndpoint:       "ENDPOINT",
	KeyNamespace:      "NAMESPACE",
	KeyDeployment:     "DEPLOYMENT",
	KeyContainer:      "CONTAINER",
	KeyStrategy:       "STRATEGY",
	KeyService:        "SERVICE",
	KeyIngress:        "INGRESS",
	KeyRolloutTimeout: "ROLLOUT_TIMEOUT",
	KeyScaleDownOld:   "SCALE_DOWN_OLD",
	KeyScaleDownDelay: "SCALE_DOWN_DELAY",
	KeyGates:          "GATES",
	KeyGateTimeout:    "GATE_TIMEOUT",
	KeyCanarySteps:    "CANARY_STEPS",
	KeyCanaryPause:    "CANARY_PAUSE",
	KeyHTTPRoute:      "HTTPROUTE",
}

// Variable is the single-target variable that sets k; "" when none does.
func (k Key) Variable() string { return variables[k] }

// Value is one setting as written.
type Value struct {
	// Text is the value as written, trimmed; "" when unset.
	Text string
	// Line is the value's line in a targets file; 0 for a variable.
	Line int
	// Invalid marks a value given but already reported (of the wrong type):
	// Build treats it as unset, without reporting it missing.
	Invalid bool
}

// Settings are one target's settings as written, before Build checks them.
type Settings struct {
	// Name and Line are the target's name and line in its file; "default"
	// and 0 for the single-target variables.
	Name string
	Line int
	// Values holds every setting given, by key.
	Values map[Key]Value
	// When holds the target's rules, already parsed.
	When Rules
	// Variables is true for the single-target variables: problems then name
	// the variable (NAMESPACE) instead of the key (namespace).
	Variables bool
	// ImageOptional accepts a target without an image, for commands that
	// act on a target but deploy no build (rollback).
	ImageOptional bool
}

// Problem is one thing wrong with a target's settings.
type Problem struct {
	// Key is the setting at fault.
	Key Key
	// Line is where it is written (the target's line when it is missing); 0
	// for a variable.
	Line int
	// Value is the offending value, quoted, or "" when the problem is not
	// about one value.
	Value string
	// Text says what is wrong, naming other settings as Settings does.
	Text string
}

// Variable renders p for the single-target variables: NAME="value": text,
// NAME is ..., or NAME: text.
func (p Problem) Variable() string {
	name := p.Key.Variable()
	switch {
	case p.Value != "":
		return name + "=" + p.Value + ": " + p.Text
	case strings.HasPrefix(p.Text, "is ") || strings.HasPrefix(p.Text, "and "):
		return name + " " + p.Text
	}
	return name + ": " + p.Text
}

// InFile renders p for a targets file: FILE:LINE: target NAME: KEY: text.
func (p Problem) InFile(file, target string) string {
	s := fmt.Sprintf("%s:%d: target %s: %s: ", file, p.Line, target, p.Key)
	if p.Value != "" {
		s += p.Value + ": "
	}
	return s + p.Text
}

// Build checks s and returns its target, with every problem found (none
// when the target is valid). Unset optional settings take their defaults.
func Build(s Settings) (Target, []Problem) {
	var problems []Problem
	name := func(k Key) string {
		if s.Variables {
			return k.Variable()
		}
		return string(k)
	}
	value := func(k Key) string { return s.Values[k].Text }
	// setting names k set to v: K=v for a variable, k: v in a file.
	setting := func(k Key, v string) string {
		if s.Variables {
			return k.Variable() + "=" + v
		}
		return string(k) + ": " + v
	}
	given := func(k Key) bool { return value(k) != "" || s.Values[k].Invalid }
	line := func(k Key) int {
		if l := s.Values[k].Line; l > 0 {
			return l
		}
		if l := s.Values[KeyCluster].Line; l > 0 && strings.HasPrefix(string(k), string(KeyCluster)+".") {
			return l // A key missing from the cluster: the cluster's line.
		}
		return s.Line
	}
	bad := func(k Key, quoted bool, format string, args ...any) {
		p := Problem{Key: k, Line: line(k), Text: fmt.Sprintf(format, args...)}
		if quoted {
			p.Value = strconv.Quote(value(k))
		}
		problems = append(problems, p)
	}

	t := Target{
		Name: s.Name,
		Line: s.Line,
		When: s.When,
		Cluster: Cluster{
			Project:    value(KeyProject),
			Location:   value(KeyLocation),
			Name:       value(KeyClusterName),
			Kubeconfig: value(KeyKubeconfig),
		},
		Namespace:      value(KeyNamespace),
		Deployment:     value(KeyDeployment),
		Container:      value(KeyContainer),
		Strategy:       Strategy(value(KeyStrategy)),
		Service:        value(KeyService),
		Ingress:        value(KeyIngress),
		RolloutTimeout: DefaultRolloutTimeout,
	}
	if t.Namespace == "" {
		t.Namespace = DefaultNamespace
	}

	switch c := t.Cluster; {
	case c.Name != "":
		if c.Project == "" {
			bad(KeyProject, false, "is required with %s", name(KeyClusterName))
		}
		if c.Location == "" {
			bad(KeyLocation, false, "is required with %s", name(KeyClusterName))
		}
	case c.Kubeconfig != "":
		// A local cluster: the kubeconfig's current context is the target.
	case given(KeyCluster):
		// Reported already.
	case s.Variables:
		bad(KeyCluster, false, "is required (or KUBECONFIG, to target a local cluster)")
	default:
		bad(KeyCluster, false, "is required: {project, location, name} of a GKE cluster, or {kubeconfig} of a local one")
	}
	if e, err := cluster.ParseEndpoint(value(KeyEndpoint)); err != nil {
		bad(KeyEndpoint, true, "is not %s, %s or %s", cluster.Public, cluster.Private, cluster.DNS)
	} else if value(KeyEndpoint) != "" && !t.Cluster.GKE() && t.Cluster.Kubeconfig != "" {
		bad(KeyEndpoint, true, "is used only with %s (a kubeconfig names its own server)", name(KeyClusterName))
	} else {
		t.Cluster.Endpoint = e
	}

	for _, f := range []struct {
		key      Key
		validate func(string) []string
	}{
		{KeyNamespace, validation.IsDNS1123Label},
		{KeyDeployment, validation.IsDNS1123Subdomain},
		{KeyContainer, validation.IsDNS1123Label},
	} {
		if !given(f.key) && f.key != KeyNamespace {
			bad(f.key, false, "is required")
		} else if value(f.key) == "" && f.key != KeyNamespace {
			// Reported already.
		} else if errs := f.validate(t.fieldOf(f.key)); len(errs) > 0 {
			bad(f.key, true, "%s", strings.Join(errs, "; "))
		}
	}

	if raw := value(KeyImage); raw == "" && s.ImageOptional {
		// Not needed.
	} else if raw == "" && !given(KeyImage) {
		bad(KeyImage, false, "is required (the repository to deploy, e.g. us-docker.pkg.dev/PROJECT/REPO/NAME)")
	} else if raw == "" {
		// Reported already.
	} else if p, err := image.ParsePattern(raw); err != nil {
		bad(KeyImage, false, "%v", err)
	} else {
		t.Image = p
	}

	switch t.Strategy {
	case "":
		t.Strategy = Rolling
	case Rolling, BlueGreen, Canary:
	default:
		bad(KeyStrategy, true, "is not %q, %q or %q", Rolling, BlueGreen, Canary)
	}
	switch {
	case t.Strategy == BlueGreen && t.Service == "" && t.Ingress == "":
		bad(KeyStrategy, true, "needs the router: set %s or %s", name(KeyService), name(KeyIngress))
	case t.Strategy == BlueGreen && t.Service != "" && t.Ingress != "":
		bad(later(s, KeyService, KeyIngress), false, "and %s are both set: set only one router",
			name(earlier(s, KeyService, KeyIngress)))
	case t.Strategy != BlueGreen && (t.Service != "" || t.Ingress != ""):
		k := KeyService
		if t.Service == "" {
			k = KeyIngress
		}
		bad(k, false, "is used only with the %s strategy (%s is %s)", BlueGreen, name(KeyStrategy), t.Strategy)
	}
	if t.Service != "" {
		if errs := validation.IsDNS1035Label(t.Service); len(errs) > 0 {
			bad(KeyService, true, "%s", strings.Join(errs, "; "))
		}
	}
	if t.Ingress != "" {
		if errs := validation.IsDNS1123Subdomain(t.Ingress); len(errs) > 0 {
			bad(KeyIngress, true, "%s", strings.Join(errs, "; "))
		}
	}
	if t.Strategy == BlueGreen && t.Deployment != "" && len(validation.IsDNS1123Subdomain(t.Deployment)) == 0 {
		// The colours' names derive from the Deployment's; the longest must be valid too.
		if errs := validation.IsDNS1123Subdomain(t.Deployment + "-green"); len(errs) > 0 {
			bad(KeyDeployment, true, "%s-green: %s", t.Deployment, strings.Join(errs, "; "))
		}
		if t.Ingress != "" {
			if errs := validation.IsDNS1035Label(t.Deployment + "-green-svc"); len(errs) > 0 {
				bad(KeyDeployment, true, "the colour service %s-green-svc: %s", t.Deployment, strings.Join(errs, "; "))
			}
		}
	}

	if t.Strategy == Canary {
		t.RolloutTimeout = DefaultCanaryRolloutTimeout
	}
	if raw := value(KeyRolloutTimeout); raw != "" {
		d, err := time.ParseDuration(raw)
		switch {
		case err != nil:
			bad(KeyRolloutTimeout, true, "is not a Go duration (e.g. 1h, 30m)")
		case d <= 0:
			bad(KeyRolloutTimeout, true, "must be positive")
		default:
			t.RolloutTimeout = d
		}
	}
	canary(&t, given, value, name, bad)
	if raw := value(KeyScaleDownOld); raw != "" {
		b, err := strconv.ParseBool(raw)
		if err != nil {
			bad(KeyScaleDownOld, true, "is not a boolean (true or false)")
		}
		t.ScaleDownOld = b
	}
	if raw := value(KeyScaleDownDelay); raw != "" {
		d, err := time.ParseDuration(raw)
		switch {
		case !t.ScaleDownOld:
			bad(KeyScaleDownDelay, false, "is used only with %s (nothing is scaled down otherwise)", setting(KeyScaleDownOld, "true"))
		case err != nil:
			bad(KeyScaleDownDelay, true, "is not a Go duration (e.g. 30s, 2m)")
		case d < 0:
			bad(KeyScaleDownDelay, true, "must not be negative")
		default:
			t.ScaleDownDelay = d
		}
	} else if t.ScaleDownOld && t.Ingress != "" {
		t.ScaleDownDelay = DefaultIngressScaleDownDelay
	} else if t.ScaleDownOld {
		t.ScaleDownDelay = DefaultServiceScaleDownDelay
	}

	gates(&t, s, value, bad, name)

	if b := t.Budget(); b > MaxBudget && len(t.Gates) > 0 {
		parts := []string{fmt.Sprintf("%s to connect and patch", RollingBudget)}
		switch t.Strategy {
		case BlueGreen:
			parts = append(parts, fmt.Sprintf("%s %s", name(KeyRolloutTimeout), t.RolloutTimeout))
			if t.ScaleDownOld {
				parts = append(parts, fmt.Sprintf("%s %s", name(KeyScaleDownDelay), t.ScaleDownDelay))
			}
		case Canary:
			parts = append(parts, fmt.Sprintf("%d steps × (%s %s + %s %s)", len(t.CanarySteps), name(KeyRolloutTimeout), t.RolloutTimeout, name(KeyCanaryPause), t.CanaryPause),
				fmt.Sprintf("%s %s to promote", name(KeyRolloutTimeout), t.RolloutTimeout))
		}
		parts = append(parts, fmt.Sprintf("%d gates × %s %s", len(t.Gates), name(KeyGateTimeout), t.GateTimeout))
		bad(KeyGateTimeout, false, "is too long for %d gates: an event may then take %s (%s), over %.0fs, the longest --timeout of an event-driven function; shorten %s or the other waits",
			len(t.Gates), b, strings.Join(parts, " + "), MaxBudget.Seconds(), name(KeyGateTimeout))
	} else if b > MaxBudget && t.Strategy == Canary {
		bad(KeyRolloutTimeout, false, "%s, %s and %s are too long: an event may then take %s (%s to connect and patch, plus %d steps of %s %s + %s %s, plus %s %s to promote), over %.0fs, the longest --timeout of an event-driven function; shorten them or use fewer steps",
			name(KeyRolloutTimeout), name(KeyCanarySteps), name(KeyCanaryPause), b, RollingBudget, len(t.CanarySteps),
			name(KeyRolloutTimeout), t.RolloutTimeout, name(KeyCanaryPause), t.CanaryPause, name(KeyRolloutTimeout), t.RolloutTimeout, MaxBudget.Seconds())
	} else if b > MaxBudget && t.ScaleDownOld {
		bad(KeyRolloutTimeout, false, "%s plus %s %s is too long: an event may then take %s (%s to connect and patch, plus %s, plus %s), over %.0fs, the longest --timeout of an event-driven function; keep %s + %s at most %s",
			t.RolloutTimeout, name(KeyScaleDownDelay), t.ScaleDownDelay, b, RollingBudget, name(KeyRolloutTimeout), name(KeyScaleDownDelay),
			MaxBudget.Seconds(), name(KeyRolloutTimeout), name(KeyScaleDownDelay), MaxBudget-RollingBudget)
	} else if b > MaxBudget {
		bad(KeyRolloutTimeout, true, "is too long: an event may then take %s (%s to connect and patch, plus %s), over %.0fs, the longest --timeout of an event-driven function; set at most %s",
			b, RollingBudget, name(KeyRolloutTimeout), MaxBudget.Seconds(), MaxBudget-RollingBudget)
	}

	slices.SortStableFunc(problems, func(a, b Problem) int { return cmp.Compare(a.Line, b.Line) })
	return t, problems
}

// MaxGateName is the longest CronJob name: Kubernetes refuses longer ones,
// so that the names of the Jobs it makes fit in a label.
const MaxGateName = 52

// gates reads the gates settings into t: GATES, a comma-separated list of
// CronJob names (a list in a targets file), and GATE_TIMEOUT.
func gates(t *Target, s Settings, value func(Key) string, bad func(Key, bool, string, ...any), name func(Key) string) {
	if raw := value(KeyGates); raw != "" {
		seen := map[string]bool{}
		for _, g := range strings.Split(raw, ",") {
			g = strings.TrimSpace(g)
			switch errs := validation.IsDNS1123Subdomain(g); {
			case g == "":
				bad(KeyGates, true, "has an empty name: list CronJob names, separated by commas")
			case len(errs) > 0:
				bad(KeyGates, true, "%q: %s", g, strings.Join(errs, "; "))
			case len(g) > MaxGateName:
				bad(KeyGates, true, "%q: must be no more than %d characters (a CronJob name)", g, MaxGateName)
			case seen[g]:
				bad(KeyGates, true, "names %q twice: a gate runs once per release", g)
			default:
				seen[g] = true
				t.Gates = append(t.Gates, g)
			}
		}
	}
	raw := value(KeyGateTimeout)
	if raw == "" {
		if len(t.Gates) > 0 {
			t.GateTimeout = DefaultGateTimeout
		}
		return
	}
	d, err := time.ParseDuration(raw)
	switch {
	case value(KeyGates) == "":
		bad(KeyGateTimeout, false, "is used only with %s (there is nothing to wait for otherwise)", name(KeyGates))
	case err != nil:
		bad(KeyGateTimeout, true, "is not a Go duration (e.g. 3m, 90s)")
	case d <= 0:
		bad(KeyGateTimeout, true, "must be positive")
	default:
		t.GateTimeout = d
	}
}

// fieldOf is t's value for one of the name keys.
func (t Target) fieldOf(k Key) string {
	switch k {
	case KeyNamespace:
		return t.Namespace
	case KeyDeployment:
		return t.Deployment
	case KeyContainer:
		return t.Container
	}
	return ""
}

// later and earlier order two set keys by their line in the file (a, b
// for variables).
func later(s Settings, a, b Key) Key {
	if s.Values[b].Line >= s.Values[a].Line {
		return b
	}
	return a
}

func earlier(s Settings, a, b Key) Key {
	if later(s, a, b) == b {
		return a
	}
	return b
}
