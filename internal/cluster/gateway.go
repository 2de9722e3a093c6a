package cluster

import (
	"context"
	"fmt"
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/gentype"
	"k8s.io/client-go/rest"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// gatewayScheme holds only the Gateway API's v1 types (and the options
// of requests), built on first use: the function does not load
// gateway-api's clientset, whose scheme registers every version of every
// kind at start, and a function without an HTTPRoute builds none.
var gatewayScheme = sync.OnceValue(func() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := gatewayv1.Install(s); err != nil {
		panic(err) // Registering generated types cannot fail.
	}
	metav1.AddToGroupVersion(s, schema.GroupVersion{Version: "v1"})
	return s
})

// HTTPRouteClient is a typed client of the HTTPRoutes in one namespace,
// with client-go's signatures (gateway-api's typed and fake clients have
// the same).
type HTTPRouteClient interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (*gatewayv1.HTTPRoute, error)
	List(ctx context.Context, opts metav1.ListOptions) (*gatewayv1.HTTPRouteList, error)
	Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error)
	Patch(ctx context.Context, name string, pt types.PatchType, data []byte, opts metav1.PatchOptions, subresources ...string) (*gatewayv1.HTTPRoute, error)
}

// HTTPRoutes returns a client of the HTTPRoutes in namespace, over the
// cached connection (connecting first, as Clientset does).
func (c *Connector) HTTPRoutes(ctx context.Context, namespace string) (HTTPRouteClient, error) {
	if _, err := c.Clientset(ctx); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gateway == nil {
		cfg := rest.CopyConfig(c.cfg)
		cfg.GroupVersion = &gatewayv1.SchemeGroupVersion
		cfg.APIPath = "/apis"
		cfg.NegotiatedSerializer = serializer.NewCodecFactory(gatewayScheme()).WithoutConversion()
		rc, err := rest.RESTClientFor(cfg)
		if err != nil {
			return nil, fmt.Errorf("building a gateway api client for %s: %w", c.describe, err)
		}
		c.gateway = rc
	}
	return gentype.NewClientWithList[*gatewayv1.HTTPRoute, *gatewayv1.HTTPRouteList](
		"httproutes", c.gateway, runtime.NewParameterCodec(gatewayScheme()), namespace,
		func() *gatewayv1.HTTPRoute { return &gatewayv1.HTTPRoute{} },
		func() *gatewayv1.HTTPRouteList { return &gatewayv1.HTTPRouteList{} }), nil
}
