package trigger

import (
	"context"
	"fmt"

	"github.com/onnewimage/onnewimage/internal/cluster"
	"github.com/onnewimage/onnewimage/internal/rollout"
	"github.com/onnewimage/onnewimage/internal/target"
)

// RouteConnector is a Connector that also hands out clients of the Gateway
// API's HTTPRoutes, as cluster.Connector does: a canary target with an
// HTTPRoute needs one.
type RouteConnector interface {
	HTTPRoutes(ctx context.Context, namespace string) (cluster.HTTPRouteClient, error)
}

// canaryOn is t's canary target, with a client of its HTTPRoute, if it
// has one, from conn.
func canaryOn(ctx context.Context, conn Connector, t target.Target) (rollout.CanaryTarget, error) {
	ct := canaryTarget(t)
	if t.HTTPRoute == "" {
		return ct, nil
	}
	rc, ok := conn.(RouteConnector)
	if !ok {
		return ct, fmt.Errorf("%w: httproute %s/%s: the connection to cluster %s reaches no Gateway API", rollout.ErrRouteInvalid, t.Namespace, t.HTTPRoute, t.Cluster.Key())
	}
	routes, err := rc.HTTPRoutes(ctx, t.Namespace)
	if err != nil {
		return ct, err
	}
	ct.Routes = routes
	return ct, nil
}
