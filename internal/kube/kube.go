// Package kube is the Kubernetes client the function uses: exactly the
// kinds and methods it calls, and nothing more.
//
// Interface mirrors client-go's kubernetes.Interface call chains
// (client.AppsV1().Deployments(ns).Get(...)) with client-go's own method
// signatures, so that client-go's typed clients, and its fake clientset's,
// satisfy each narrow interface as they are (see kubetest.Adapt).
//
// NewForConfig builds the REST clients kubernetes.NewForConfig builds
// (rest.RESTClientFor, one HTTP client shared, protobuf preferred), over a
// scheme of only the groups used, and sends through them the requests
// client-go's typed clients send: retries, Retry-After, rate limits and
// watch decoding are client-go's. Importing k8s.io/client-go/kubernetes
// instead registers about fifty API groups when the process starts, which
// was most of the function's cold start.
package kube

import (
	"context"
	"fmt"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/flowcontrol"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// Interface is the part of kubernetes.Interface the function uses.
type Interface interface {
	AppsV1() AppsV1Interface
	BatchV1() BatchV1Interface
	CoreV1() CoreV1Interface
	NetworkingV1() NetworkingV1Interface
	GatewayV1() GatewayV1Interface
}

// AppsV1Interface is the part of client-go's AppsV1Interface the function
// uses.
type AppsV1Interface interface {
	Deployments(namespace string) DeploymentInterface
	ReplicaSets(namespace string) ReplicaSetInterface
}

// BatchV1Interface is the part of client-go's BatchV1Interface the function
// uses.
type BatchV1Interface interface {
	Jobs(namespace string) JobInterface
	CronJobs(namespace string) CronJobInterface
}

// CoreV1Interface is the part of client-go's CoreV1Interface the function
// uses.
type CoreV1Interface interface {
	Pods(namespace string) PodInterface
	Services(namespace string) ServiceInterface
}

// NetworkingV1Interface is the part of client-go's NetworkingV1Interface the
// function uses.
type NetworkingV1Interface interface {
	Ingresses(namespace string) IngressInterface
}

// GatewayV1Interface is the part of the Gateway API's v1 client the
// function uses (a canary's HTTPRoute).
type GatewayV1Interface interface {
	HTTPRoutes(namespace string) HTTPRouteInterface
}

// DeploymentInterface is the part of client-go's DeploymentInterface the
// function uses.
type DeploymentInterface interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (*appsv1.Deployment, error)
	Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error)
	Patch(ctx context.Context, name string, pt types.PatchType, data []byte, opts metav1.PatchOptions, subresources ...string) (result *appsv1.Deployment, err error)
}

// ReplicaSetInterface is the part of client-go's ReplicaSetInterface the
// function uses.
type ReplicaSetInterface interface {
	List(ctx context.Context, opts metav1.ListOptions) (*appsv1.ReplicaSetList, error)
}

// JobInterface is the part of client-go's JobInterface the function uses.
type JobInterface interface {
	Create(ctx context.Context, job *batchv1.Job, opts metav1.CreateOptions) (*batchv1.Job, error)
	Get(ctx context.Context, name string, opts metav1.GetOptions) (*batchv1.Job, error)
	Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error)
}

// CronJobInterface is the part of client-go's CronJobInterface the function
// uses.
type CronJobInterface interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (*batchv1.CronJob, error)
}

// PodInterface is the part of client-go's PodInterface the function uses.
type PodInterface interface {
	List(ctx context.Context, opts metav1.ListOptions) (*corev1.PodList, error)
	Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error)
}

// ServiceInterface is the part of client-go's ServiceInterface the function
// uses.
type ServiceInterface interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (*corev1.Service, error)
	Patch(ctx context.Context, name string, pt types.PatchType, data []byte, opts metav1.PatchOptions, subresources ...string) (result *corev1.Service, err error)
}

// IngressInterface is the part of client-go's IngressInterface the function
// uses.
type IngressInterface interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (*networkingv1.Ingress, error)
	Patch(ctx context.Context, name string, pt types.PatchType, data []byte, opts metav1.PatchOptions, subresources ...string) (result *networkingv1.Ingress, err error)
}

// HTTPRouteInterface is the part of gateway-api's HTTPRouteInterface the
// function uses.
type HTTPRouteInterface interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (*gatewayv1.HTTPRoute, error)
	List(ctx context.Context, opts metav1.ListOptions) (*gatewayv1.HTTPRouteList, error)
	Patch(ctx context.Context, name string, pt types.PatchType, data []byte, opts metav1.PatchOptions, subresources ...string) (result *gatewayv1.HTTPRoute, err error)
}

// codecs is client-go's clientset scheme cut to the groups used: built on
// first use, not when the process starts.
var codecs = sync.OnceValues(func() (serializer.CodecFactory, runtime.ParameterCodec) {
	scheme := runtime.NewScheme()
	metav1.AddToGroupVersion(scheme, schema.GroupVersion{Version: "v1"})
	for _, add := range []func(*runtime.Scheme) error{appsv1.AddToScheme, batchv1.AddToScheme, corev1.AddToScheme, networkingv1.AddToScheme, gatewayv1.Install} {
		utilruntime.Must(add(scheme))
	}
	return rest.CodecFactoryForGeneratedClient(scheme, serializer.NewCodecFactory(scheme)), runtime.NewParameterCodec(scheme)
})

// NewForConfig returns a client for c, configured as kubernetes.NewForConfig
// configures a clientset: one HTTP client shared by every group, and one
// rate limiter shared by every group when c sets QPS.
func NewForConfig(c *rest.Config) (Interface, error) {
	config := *c
	if config.UserAgent == "" {
		config.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	httpClient, err := rest.HTTPClientFor(&config)
	if err != nil {
		return nil, err
	}
	if config.RateLimiter == nil && config.QPS > 0 {
		if config.Burst <= 0 {
			return nil, fmt.Errorf("burst is required to be greater than 0 when RateLimiter is not set and QPS is set to greater than 0")
		}
		config.RateLimiter = flowcontrol.NewTokenBucketRateLimiter(config.QPS, config.Burst)
	}
	factory, params := codecs()
	group := func(apiPath string, gv schema.GroupVersion) (rest.Interface, error) {
		config := config
		config.GroupVersion = &gv
		config.APIPath = apiPath
		config.NegotiatedSerializer = factory.WithoutConversion()
		return rest.RESTClientForConfigAndClient(&config, httpClient)
	}
	cl := &client{params: params}
	for _, g := range []struct {
		rest    *rest.Interface
		apiPath string
		gv      schema.GroupVersion
	}{
		{&cl.apps, "/apis", appsv1.SchemeGroupVersion},
		{&cl.batch, "/apis", batchv1.SchemeGroupVersion},
		{&cl.core, "/api", corev1.SchemeGroupVersion},
		{&cl.networking, "/apis", networkingv1.SchemeGroupVersion},
		{&cl.gateway, "/apis", gatewayv1.SchemeGroupVersion},
	} {
		if *g.rest, err = group(g.apiPath, g.gv); err != nil {
			return nil, err
		}
	}
	return cl, nil
}

// client is Interface over one REST client per group.
type client struct {
	apps, batch, core, networking, gateway rest.Interface
	params                                 runtime.ParameterCodec
}

// resource is one kind's typed client in one namespace: each method sends
// the request client-go's generated typed clients send (gentype), over the
// same rest.Interface. gentype itself imports client-go's testing package,
// and with it server-side apply's schemas and OpenAPI models, which cost
// the cold start more than this file.
type resource[O, L any, PO interface {
	*O
	runtime.Object
}, PL interface {
	*L
	runtime.Object
}] struct {
	client    rest.Interface
	params    runtime.ParameterCodec
	resource  string
	namespace string
	// protobuf is whether the kind is served as protobuf (built-in kinds
	// are; custom resources such as the Gateway API's are JSON only).
	protobuf bool
}

func newResource[O, L any, PO interface {
	*O
	runtime.Object
}, PL interface {
	*L
	runtime.Object
}](c rest.Interface, params runtime.ParameterCodec, name, namespace string) resource[O, L, PO, PL] {
	return resource[O, L, PO, PL]{client: c, params: params, resource: name, namespace: namespace, protobuf: true}
}

func (r resource[O, L, PO, PL]) Get(ctx context.Context, name string, opts metav1.GetOptions) (PO, error) {
	result := PO(new(O))
	err := r.client.Get().
		UseProtobufAsDefaultIfPreferred(r.protobuf).
		NamespaceIfScoped(r.namespace, r.namespace != "").
		Resource(r.resource).
		Name(name).
		VersionedParams(&opts, r.params).
		Do(ctx).
		Into(result)
	return result, err
}

func (r resource[O, L, PO, PL]) List(ctx context.Context, opts metav1.ListOptions) (PL, error) {
	result := PL(new(L))
	err := r.client.Get().
		UseProtobufAsDefaultIfPreferred(r.protobuf).
		NamespaceIfScoped(r.namespace, r.namespace != "").
		Resource(r.resource).
		VersionedParams(&opts, r.params).
		Timeout(timeout(opts)).
		Do(ctx).
		Into(result)
	return result, err
}

func (r resource[O, L, PO, PL]) Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	opts.Watch = true
	return r.client.Get().
		UseProtobufAsDefaultIfPreferred(r.protobuf).
		NamespaceIfScoped(r.namespace, r.namespace != "").
		Resource(r.resource).
		VersionedParams(&opts, r.params).
		Timeout(timeout(opts)).
		Watch(ctx)
}

func (r resource[O, L, PO, PL]) Create(ctx context.Context, obj PO, opts metav1.CreateOptions) (PO, error) {
	result := PO(new(O))
	err := r.client.Post().
		UseProtobufAsDefaultIfPreferred(r.protobuf).
		NamespaceIfScoped(r.namespace, r.namespace != "").
		Resource(r.resource).
		VersionedParams(&opts, r.params).
		Body(obj).
		Do(ctx).
		Into(result)
	return result, err
}

func (r resource[O, L, PO, PL]) Patch(ctx context.Context, name string, pt types.PatchType, data []byte, opts metav1.PatchOptions, subresources ...string) (PO, error) {
	result := PO(new(O))
	err := r.client.Patch(pt).
		UseProtobufAsDefaultIfPreferred(r.protobuf).
		NamespaceIfScoped(r.namespace, r.namespace != "").
		Resource(r.resource).
		Name(name).
		SubResource(subresources...).
		VersionedParams(&opts, r.params).
		Body(data).
		Do(ctx).
		Into(result)
	return result, err
}

// timeout is the request timeout a list or watch asks for.
func timeout(opts metav1.ListOptions) time.Duration {
	if opts.TimeoutSeconds == nil {
		return 0
	}
	return time.Duration(*opts.TimeoutSeconds) * time.Second
}

func (c *client) AppsV1() AppsV1Interface             { return apps{c} }
func (c *client) BatchV1() BatchV1Interface           { return batch{c} }
func (c *client) CoreV1() CoreV1Interface             { return core{c} }
func (c *client) NetworkingV1() NetworkingV1Interface { return networking{c} }
func (c *client) GatewayV1() GatewayV1Interface       { return gateway{c} }

type apps struct{ *client }

func (g apps) Deployments(namespace string) DeploymentInterface {
	return newResource[appsv1.Deployment, appsv1.DeploymentList](g.apps, g.params, "deployments", namespace)
}

func (g apps) ReplicaSets(namespace string) ReplicaSetInterface {
	return newResource[appsv1.ReplicaSet, appsv1.ReplicaSetList](g.apps, g.params, "replicasets", namespace)
}

type batch struct{ *client }

func (g batch) Jobs(namespace string) JobInterface {
	return newResource[batchv1.Job, batchv1.JobList](g.batch, g.params, "jobs", namespace)
}

func (g batch) CronJobs(namespace string) CronJobInterface {
	return newResource[batchv1.CronJob, batchv1.CronJobList](g.batch, g.params, "cronjobs", namespace)
}

type core struct{ *client }

func (g core) Pods(namespace string) PodInterface {
	return newResource[corev1.Pod, corev1.PodList](g.core, g.params, "pods", namespace)
}

func (g core) Services(namespace string) ServiceInterface {
	return newResource[corev1.Service, corev1.ServiceList](g.core, g.params, "services", namespace)
}

type networking struct{ *client }

func (g networking) Ingresses(namespace string) IngressInterface {
	return newResource[networkingv1.Ingress, networkingv1.IngressList](g.networking, g.params, "ingresses", namespace)
}

type gateway struct{ *client }

func (g gateway) HTTPRoutes(namespace string) HTTPRouteInterface {
	r := newResource[gatewayv1.HTTPRoute, gatewayv1.HTTPRouteList](g.gateway, g.params, "httproutes", namespace)
	r.protobuf = false
	return r
}
