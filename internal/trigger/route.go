package trigger

import (
	"github.com/onnewimage/onnewimage/internal/kube"
	"github.com/onnewimage/onnewimage/internal/rollout"
	"github.com/onnewimage/onnewimage/internal/target"
)

// canaryOn is t's canary target, with a client of its HTTPRoute, if it
// has one, over client.
func canaryOn(client kube.Interface, t target.Target) rollout.CanaryTarget {
	ct := canaryTarget(t)
	if t.HTTPRoute != "" {
		ct.Routes = client.GatewayV1().HTTPRoutes(t.Namespace)
	}
	return ct
}
