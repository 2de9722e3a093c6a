package rollout

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/onnewimage/onnewimage/internal/kube"
)

// router is the object in front of the colours.
type router interface {
	meta() metav1.Object
	// colour is the live colour.
	colour() (Colour, error)
	// switchSpec is the spec part of the patch that moves traffic from one
	// colour to the other.
	switchSpec(from, to Colour) map[string]any
	// patch sends a strategic-merge patch and returns the new resourceVersion.
	patch(ctx context.Context, patch map[string]any, o BlueGreenOptions) (string, error)
	// String names the router in reasons: "service web".
	String() string
}

func getRouter(ctx context.Context, client kube.Interface, t BlueGreenTarget) (router, error) {
	switch t.RouterKind {
	case ServiceRouter:
		svc, err := client.CoreV1().Services(t.Namespace).Get(ctx, t.Router, metav1.GetOptions{})
		if err != nil {
			return nil, fmt.Errorf("getting service %s/%s: %w", t.Namespace, t.Router, err)
		}
		return &serviceRouter{svc: svc, client: client}, nil
	case IngressRouter:
		ing, err := client.NetworkingV1().Ingresses(t.Namespace).Get(ctx, t.Router, metav1.GetOptions{})
		if err != nil {
			return nil, fmt.Errorf("getting ingress %s/%s: %w", t.Namespace, t.Router, err)
		}
		return &ingressRouter{ing: ing, t: t, client: client}, nil
	}
	return nil, fmt.Errorf("%w: unknown router kind %q", ErrRouterUnknown, t.RouterKind)
}

type serviceRouter struct {
	svc    *corev1.Service
	client kube.Interface
}

func (s *serviceRouter) meta() metav1.Object { return s.svc }
func (s *serviceRouter) String() string      { return "service " + s.svc.Name }

func (s *serviceRouter) colour() (Colour, error) {
	switch c := Colour(s.svc.Spec.Selector[ColourLabel]); c {
	case Blue, Green:
		return c, nil
	default:
		return "", fmt.Errorf("%w: service %s/%s selects %s=%q, not %s or %s",
			ErrRouterUnknown, s.svc.Namespace, s.svc.Name, ColourLabel, c, Blue, Green)
	}
}

func (s *serviceRouter) switchSpec(_, to Colour) map[string]any {
	return map[string]any{"selector": map[string]any{ColourLabel: string(to)}}
}

func (s *serviceRouter) patch(ctx context.Context, patch map[string]any, o BlueGreenOptions) (string, error) {
	got, err := s.client.CoreV1().Services(s.svc.Namespace).Patch(ctx, s.svc.Name, types.StrategicMergePatchType, mustJSON(patch), patchOptions(Options{DryRun: o.DryRun}))
	if err != nil {
		return "", fmt.Errorf("patching service %s/%s: %w", s.svc.Namespace, s.svc.Name, err)
	}
	return got.ResourceVersion, nil
}

type ingressRouter struct {
	ing    *networkingv1.Ingress
	t      BlueGreenTarget
	client kube.Interface
}

func (g *ingressRouter) meta() metav1.Object { return g.ing }
func (g *ingressRouter) String() string      { return "ingress " + g.ing.Name }

// backends calls f with every service backend of the Ingress.
func (g *ingressRouter) backends(spec *networkingv1.IngressSpec, f func(*networkingv1.IngressServiceBackend)) {
	if b := spec.DefaultBackend; b != nil && b.Service != nil {
		f(b.Service)
	}
	for i := range spec.Rules {
		if h := spec.Rules[i].HTTP; h != nil {
			for j := range h.Paths {
				if s := h.Paths[j].Backend.Service; s != nil {
					f(s)
				}
			}
		}
	}
}

func (g *ingressRouter) colour() (Colour, error) {
	seen := map[Colour]bool{}
	g.backends(&g.ing.Spec, func(b *networkingv1.IngressServiceBackend) {
		for _, c := range []Colour{Blue, Green} {
			if b.Name == g.t.ServiceFor(c) {
				seen[c] = true
			}
		}
	})
	switch {
	case seen[Blue] && seen[Green]:
		return "", fmt.Errorf("%w: ingress %s/%s sends traffic to both %s and %s",
			ErrRouterUnknown, g.ing.Namespace, g.ing.Name, g.t.ServiceFor(Blue), g.t.ServiceFor(Green))
	case seen[Blue]:
		return Blue, nil
	case seen[Green]:
		return Green, nil
	}
	return "", fmt.Errorf("%w: no backend of ingress %s/%s is %s or %s",
		ErrRouterUnknown, g.ing.Namespace, g.ing.Name, g.t.ServiceFor(Blue), g.t.ServiceFor(Green))
}

// switchSpec renames the colour Service in every backend. The default
// backend merges field by field; rules are an atomic list, so the patch
// carries them whole, as read (the resourceVersion precondition makes that
// safe).
func (g *ingressRouter) switchSpec(from, to Colour) map[string]any {
	spec := g.ing.Spec.DeepCopy()
	g.backends(spec, func(b *networkingv1.IngressServiceBackend) {
		if b.Name == g.t.ServiceFor(from) {
			b.Name = g.t.ServiceFor(to)
		}
	})
	out := map[string]any{}
	if b := g.ing.Spec.DefaultBackend; b != nil && b.Service != nil && b.Service.Name == g.t.ServiceFor(from) {
		out["defaultBackend"] = map[string]any{"service": map[string]any{"name": g.t.ServiceFor(to)}}
	}
	if len(spec.Rules) > 0 && !rulesEqual(spec.Rules, g.ing.Spec.Rules) {
		out["rules"] = spec.Rules
	}
	return out
}

func rulesEqual(a, b []networkingv1.IngressRule) bool {
	return string(mustJSON(a)) == string(mustJSON(b))
}

func (g *ingressRouter) patch(ctx context.Context, patch map[string]any, o BlueGreenOptions) (string, error) {
	got, err := g.client.NetworkingV1().Ingresses(g.ing.Namespace).Patch(ctx, g.ing.Name, types.StrategicMergePatchType, mustJSON(patch), patchOptions(Options{DryRun: o.DryRun}))
	if err != nil {
		return "", fmt.Errorf("patching ingress %s/%s: %w", g.ing.Namespace, g.ing.Name, err)
	}
	return got.ResourceVersion, nil
}
