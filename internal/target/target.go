// Package target describes the places releases go: which image, built by
// which builds, goes to which container of which Deployment on which
// cluster, and how.
//
// A target comes either from the single-target variables (one target named
// "default") or from a targets file (see Decode). Both are checked by the
// same rules (see Build), so a setting means the same in either place.
package target

import (
	"fmt"
	"time"

	"github.com/onnewimage/onnewimage/internal/cluster"
	"github.com/onnewimage/onnewimage/internal/image"
)

// Target is one place releases go.
type Target struct {
	// Name is a DNS-1123 label, unique among the targets; "default" for the
	// single-target variables.
	Name string
	// Line is the line of the target in its targets file; 0 for variables.
	Line int

	// Image is the repository whose pushed digest is deployed.
	Image image.Pattern
	// When selects the builds this target deploys; empty, every build.
	When Rules
	// Cluster is where the Deployment runs.
	Cluster Cluster
	// Namespace, Deployment and Container name what is updated.
	Namespace, Deployment, Container string

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
	// Gates name the CronJobs in Namespace whose jobTemplates run, in
	// order and each to completion, before traffic moves to a release.
	Gates []string
	// GateTimeout bounds each gate's Job: DefaultGateTimeout unless set,
	// 0 without Gates.
	GateTimeout time.Duration

	// CanarySteps, with the canary strategy, are the shares of traffic (in
	// percent, increasing, each under 100) the release takes in turn before
	// it is promoted; CanaryPause is how long each is held and watched.
	CanarySteps []int
	CanaryPause time.Duration
	// HTTPRoute, with the canary strategy, names a Gateway API HTTPRoute
	// whose backend weights split the traffic; empty, the replica ratio of
	// the stable and canary Deployments does.
	HTTPRoute string
}

// Strategy names how a release reaches traffic.
type Strategy string

// The strategies a target accepts.
const (
	// Rolling patches the one Deployment; Kubernetes replaces its pods
	// gradually.
	Rolling Strategy = "rolling"
	// BlueGreen deploys to the idle one of DEPLOYMENT-blue and
	// DEPLOYMENT-green, waits until it is available, then switches the
	// router (a Service or an Ingress) to it.
	BlueGreen Strategy = "blue-green"
	// Canary runs the release on DEPLOYMENT-canary beside the stable
	// DEPLOYMENT, gives it each of CanarySteps' shares of traffic in turn,
	// each held and watched for CanaryPause, then promotes it to the
	// stable Deployment and scales the canary to 0.
	Canary Strategy = "canary"
)

// Defaults of the optional settings.
const (
	// DefaultNamespace is the namespace when none is set.
	DefaultNamespace = "default"
	// DefaultRolloutTimeout is the rollout timeout when none is set.
	DefaultRolloutTimeout = 5 * time.Minute
	// DefaultServiceScaleDownDelay is the scale-down delay when none is set
	// with a Service router: a selector change reaches every node's proxy
	// within seconds (Argo Rollouts waits 30s by default too).
	DefaultServiceScaleDownDelay = 30 * time.Second
	// DefaultIngressScaleDownDelay is the scale-down delay when none is set
	// with an Ingress router: GKE's load balancer takes one to several
	// minutes to apply a backend change.
	DefaultIngressScaleDownDelay = 2 * time.Minute
	// DefaultGateTimeout is the gate timeout when none is set.
	DefaultGateTimeout = 3 * time.Minute
	// DefaultCanaryRolloutTimeout is the rollout timeout when none is set
	// with the canary strategy: its schedule waits for a rollout once per
	// step and once more to promote, all within one event.
	DefaultCanaryRolloutTimeout = time.Minute
	// DefaultCanaryPause is how long each canary step is held when
	// CANARY_PAUSE is not set.
	DefaultCanaryPause = time.Minute
)

// DefaultCanarySteps are the canary steps when CANARY_STEPS is not set.
var DefaultCanarySteps = []int{10, 50}

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

// Budget is how long one event's cluster work for t may take:
// RollingBudget, plus RolloutTimeout with blue-green, which waits for the
// idle colour, plus ScaleDownDelay when the old colour is scaled down after
// the switch. With canary it is the whole schedule instead: RollingBudget,
// plus RolloutTimeout and CanaryPause for each step, plus RolloutTimeout for
// the promotion. Either way, plus GateTimeout for each gate. Build rejects a
// target whose Budget is over MaxBudget.
func (t Target) Budget() time.Duration {
	gates := time.Duration(len(t.Gates)) * t.GateTimeout
	if t.Strategy == Canary {
		return RollingBudget + time.Duration(len(t.CanarySteps))*(t.RolloutTimeout+t.CanaryPause) + t.RolloutTimeout + gates
	}
	if t.Strategy != BlueGreen {
		return RollingBudget + gates
	}
	budget := RollingBudget + t.RolloutTimeout + gates
	if t.ScaleDownOld {
		budget += t.ScaleDownDelay
	}
	return budget
}

// Where is the Deployment's place in one phrase:
// CLUSTER/NAMESPACE/DEPLOYMENT:CONTAINER.
func (t Target) Where() string {
	return fmt.Sprintf("%s/%s/%s:%s", t.Cluster, t.Namespace, t.Deployment, t.Container)
}

// Cluster is a Kubernetes cluster: a GKE cluster, or a local one named by a
// kubeconfig file.
type Cluster struct {
	// Project, Location and Name name a GKE cluster.
	Project, Location, Name string
	// Kubeconfig, used only when Name is empty, names a file whose current
	// context is the cluster (local clusters).
	Kubeconfig string
	// Endpoint is the GKE control-plane endpoint used (Public when unset).
	Endpoint cluster.Endpoint
}

// GKE reports whether c is a GKE cluster (else a kubeconfig's).
func (c Cluster) GKE() bool { return c.Name != "" }

// ResourceName is the Container API resource name of a GKE cluster:
// projects/P/locations/L/clusters/C.
func (c Cluster) ResourceName() string {
	return fmt.Sprintf("projects/%s/locations/%s/clusters/%s", c.Project, c.Location, c.Name)
}

// Key identifies the connection to c: targets whose clusters have one Key
// can share one connection.
func (c Cluster) Key() string {
	if !c.GKE() {
		return "kubeconfig:" + c.Kubeconfig
	}
	return c.ResourceName() + "@" + c.Endpoint.String()
}

// String names c briefly: PROJECT/LOCATION/NAME (plus the endpoint when
// not public), or kubeconfig(PATH).
func (c Cluster) String() string {
	if !c.GKE() {
		return "kubeconfig(" + c.Kubeconfig + ")"
	}
	s := c.Project + "/" + c.Location + "/" + c.Name
	if c.Endpoint.String() != cluster.Public.String() {
		s += "(" + c.Endpoint.String() + ")"
	}
	return s
}
