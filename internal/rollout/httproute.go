package rollout

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// HTTPRouteClient is what the canary's HTTPRoute router needs of the
// Gateway API in the target's namespace: the signatures of client-go's
// typed clients, so that kube.Interface's HTTPRoutes and gateway-api's
// fake clientset both satisfy it.
type HTTPRouteClient interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (*gatewayv1.HTTPRoute, error)
	Patch(ctx context.Context, name string, pt types.PatchType, data []byte, opts metav1.PatchOptions, subresources ...string) (*gatewayv1.HTTPRoute, error)
}

// ErrRouteInvalid is wrapped when the canary's HTTPRoute cannot give the
// canary an exact share of traffic: no rule sends traffic to the stable
// Service, or a rule that does also sends it elsewhere than the stable and
// canary Services, or lacks one of them. Only an operator can fix that;
// nothing was moved.
var ErrRouteInvalid = errors.New("httproute cannot split traffic between the stable and canary services")

// RouteCanaryReplicas is the canary's replica count for a share of percent
// next to stable replicas, when an HTTPRoute's weights split the traffic:
// enough to serve its share, ceil(percent/100 x stable), at least 1.
func RouteCanaryReplicas(percent int, stable int32) int32 {
	n := int32(math.Ceil(float64(percent) * float64(stable) / 100))
	return max(n, 1)
}

// routeSplit is where an HTTPRoute's rules that send traffic to the
// stable Service do: each such rule names the stable and the canary
// Service, and nothing else.
type routeSplit struct {
	route *gatewayv1.HTTPRoute
	// rules holds, per rule that splits, the indexes of the rule and of
	// its stable and canary backendRefs.
	rules []splitRule
}

type splitRule struct{ rule, stable, canary int }

// weight is a backendRef's weight; the Gateway API's default is 1.
func weight(ref gatewayv1.HTTPBackendRef) int32 {
	if ref.Weight == nil {
		return 1
	}
	return *ref.Weight
}

// readSplit checks that route can split traffic exactly between the
// Services stable and canary (see ErrRouteInvalid).
func readSplit(route *gatewayv1.HTTPRoute, stable, canary string) (routeSplit, error) {
	s := routeSplit{route: route}
	bad := func(format string, args ...any) (routeSplit, error) {
		return routeSplit{}, fmt.Errorf("%w: httproute %s/%s: %s", ErrRouteInvalid, route.Namespace, route.Name, fmt.Sprintf(format, args...))
	}
	for i, rule := range route.Spec.Rules {
		sr := splitRule{rule: i, stable: -1, canary: -1}
		var others []string
		for j, ref := range rule.BackendRefs {
			name := string(ref.Name)
			isService := (ref.Group == nil || *ref.Group == "") && (ref.Kind == nil || *ref.Kind == "Service") &&
				(ref.Namespace == nil || string(*ref.Namespace) == route.Namespace)
			switch {
			case isService && name == stable && sr.stable < 0:
				sr.stable = j
			case isService && name == canary && sr.canary < 0:
				sr.canary = j
			default:
				others = append(others, describeRef(ref, route.Namespace))
			}
		}
		switch {
		case sr.stable < 0 && sr.canary < 0:
			continue // A rule for other backends: not the canary's.
		case sr.stable < 0:
			return bad("rule %d sends traffic to service %s but not to service %s: the canary's share would not be its weight", i, canary, stable)
		case sr.canary < 0:
			return bad("rule %d sends traffic to service %s but not to service %s: add it as a backendRef (weight 0)", i, stable, canary)
		case len(others) > 0:
			return bad("rule %d sends traffic to %s besides services %s and %s: the canary's weight would not be its share", i, strings.Join(others, ", "), stable, canary)
		}
		s.rules = append(s.rules, sr)
	}
	if len(s.rules) == 0 {
		return bad("no rule sends traffic to service %s", stable)
	}
	return s, nil
}

// describeRef names a backendRef as "service web", "service other/web" or
// "Kind.group web".
func describeRef(ref gatewayv1.HTTPBackendRef, namespace string) string {
	kind := "service"
	if ref.Kind != nil && *ref.Kind != "Service" || ref.Group != nil && *ref.Group != "" {
		kind = "Service"
		if ref.Kind != nil {
			kind = string(*ref.Kind)
		}
		if ref.Group != nil && *ref.Group != "" {
			kind += "." + string(*ref.Group)
		}
	}
	name := string(ref.Name)
	if ref.Namespace != nil && string(*ref.Namespace) != namespace {
		name = string(*ref.Namespace) + "/" + name
	}
	return kind + " " + name
}

// share is the largest share of traffic, in percent, any split rule gives
// the canary.
func (s routeSplit) share() float64 {
	most := 0.0
	for _, sr := range s.rules {
		refs := s.route.Spec.Rules[sr.rule].BackendRefs
		st, ca := weight(refs[sr.stable]), weight(refs[sr.canary])
		if st+ca > 0 {
			most = max(most, 100*float64(ca)/float64(st+ca))
		}
	}
	return most
}

// exactly reports whether every split rule already weighs the stable and
// canary Services 100-percent and percent.
func (s routeSplit) exactly(percent int) bool {
	for _, sr := range s.rules {
		refs := s.route.Spec.Rules[sr.rule].BackendRefs
		if weight(refs[sr.stable]) != int32(100-percent) || weight(refs[sr.canary]) != int32(percent) {
			return false
		}
	}
	return true
}

// weights describes the weights of the split rules: "web 90, web-canary
// 10", or rule by rule when they differ.
func (s routeSplit) weights() string {
	var each []string
	same := true
	for _, sr := range s.rules {
		refs := s.route.Spec.Rules[sr.rule].BackendRefs
		w := fmt.Sprintf("%s %d, %s %d", refs[sr.stable].Name, weight(refs[sr.stable]), refs[sr.canary].Name, weight(refs[sr.canary]))
		same = same && (len(each) == 0 || w == each[0])
		each = append(each, w)
	}
	if same {
		return each[0]
	}
	for i, sr := range s.rules {
		each[i] = fmt.Sprintf("rule %d: %s", sr.rule, each[i])
	}
	return strings.Join(each, "; ")
}

// weightsPatch is the JSON patch that sets every split rule's weights to
// 100-percent and percent. Its first operation sets the resourceVersion the
// split was read at, which the API server takes as a precondition (a
// Conflict if the route changed since); its tests of each indexed
// backendRef's name say which shape the indexes were read from.
func (s routeSplit) weightsPatch(percent int) []byte {
	ops := []map[string]any{{"op": "replace", "path": "/metadata/resourceVersion", "value": s.route.ResourceVersion}}
	for _, sr := range s.rules {
		refs := s.route.Spec.Rules[sr.rule].BackendRefs
		for _, side := range []struct {
			index  int
			weight int
		}{{sr.stable, 100 - percent}, {sr.canary, percent}} {
			path := fmt.Sprintf("/spec/rules/%d/backendRefs/%d", sr.rule, side.index)
			ops = append(ops,
				map[string]any{"op": "test", "path": path + "/name", "value": refs[side.index].Name},
				map[string]any{"op": "add", "path": path + "/weight", "value": side.weight})
		}
	}
	return mustJSON(ops)
}

// routeName is the canary's HTTPRoute as namespace/name.
func (t CanaryTarget) routeName() string { return t.Namespace + "/" + t.HTTPRoute }

// readRoute reads t's HTTPRoute and checks that it can split traffic.
func (t CanaryTarget) readRoute(ctx context.Context) (routeSplit, error) {
	if t.Routes == nil {
		return routeSplit{}, fmt.Errorf("%w: httproute %s: no Gateway API client", ErrRouteInvalid, t.routeName())
	}
	route, err := t.Routes.Get(ctx, t.HTTPRoute, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return routeSplit{}, fmt.Errorf("%w: httproute %s: %w", ErrTargetMissing, t.routeName(), err)
	}
	if err != nil {
		return routeSplit{}, fmt.Errorf("getting httproute %s: %w", t.routeName(), err)
	}
	return readSplit(route, t.Deployment, t.CanaryDeployment())
}

// setWeights gives the canary percent of the traffic on t's HTTPRoute
// (100-percent to stable), re-reading the route on Conflict. forward: the
// weights only ever grow the canary's share; a route already giving it
// more is left alone (a redelivery never moves traffic backwards). Without
// forward (traffic back to stable) any share goes. A route already at the
// weights is not written. still, when not nil, is asked before each
// attempt whether the write is still wanted (its error is returned). It
// returns the route's weights as it leaves them.
func (t CanaryTarget) setWeights(ctx context.Context, percent int, forward bool, dryRun bool, still func(context.Context) error) (string, error) {
	for attempt := 1; ; attempt++ {
		if still != nil {
			if err := still(ctx); err != nil {
				return "", err
			}
		}
		s, err := t.readRoute(ctx)
		if err != nil {
			return "", err
		}
		if s.exactly(percent) || forward && s.share() > float64(percent) {
			return s.weights(), nil
		}
		got, err := t.Routes.Patch(ctx, t.HTTPRoute, types.JSONPatchType, s.weightsPatch(percent), patchOptions(Options{DryRun: dryRun}))
		if apierrors.IsConflict(err) && attempt < conflictBackoff.Steps {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("setting the weights of httproute %s to %d/%d: %w", t.routeName(), 100-percent, percent, err)
		}
		s.route = got
		return s.weights(), nil
	}
}

// routeWeights reads t's HTTPRoute's weights, for status.
func (t CanaryTarget) routeWeights(ctx context.Context) (string, error) {
	s, err := t.readRoute(ctx)
	if err != nil {
		return "", err
	}
	return s.weights(), nil
}
