// Package kubetest adapts a client-go clientset to kube.Interface, for
// tests: client-go's fake clientset in unit tests, a real clientset in
// end-to-end tests. Production code never imports it: it imports
// k8s.io/client-go/kubernetes, which the function must not (see kube).
package kubetest

import (
	"k8s.io/client-go/kubernetes"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/onnewimage/onnewimage/internal/kube"
)

// Adapt returns c as a kube.Interface, or nil when c is nil. Each call
// chain reaches c's own typed clients: what c records or serves is what the
// code under test did. Its GatewayV1 reaches gw's, the first given (a
// gateway-api clientset, fake or real); without one, GatewayV1 panics.
func Adapt(c kubernetes.Interface, gw ...gatewayclient.Interface) kube.Interface {
	if c == nil {
		return nil
	}
	a := clientset{c: c}
	if len(gw) > 0 {
		a.gw = gw[0]
	}
	return a
}

type clientset struct {
	c  kubernetes.Interface
	gw gatewayclient.Interface
}

func (a clientset) AppsV1() kube.AppsV1Interface             { return apps(a) }
func (a clientset) BatchV1() kube.BatchV1Interface           { return batch(a) }
func (a clientset) CoreV1() kube.CoreV1Interface             { return core(a) }
func (a clientset) NetworkingV1() kube.NetworkingV1Interface { return networking(a) }
func (a clientset) GatewayV1() kube.GatewayV1Interface {
	if a.gw == nil {
		panic("kubetest.Adapt: no gateway-api clientset was given for GatewayV1")
	}
	return gateway(a)
}

type apps clientset

func (a apps) Deployments(ns string) kube.DeploymentInterface { return a.c.AppsV1().Deployments(ns) }
func (a apps) ReplicaSets(ns string) kube.ReplicaSetInterface { return a.c.AppsV1().ReplicaSets(ns) }

type batch clientset

func (a batch) Jobs(ns string) kube.JobInterface         { return a.c.BatchV1().Jobs(ns) }
func (a batch) CronJobs(ns string) kube.CronJobInterface { return a.c.BatchV1().CronJobs(ns) }

type core clientset

func (a core) Pods(ns string) kube.PodInterface         { return a.c.CoreV1().Pods(ns) }
func (a core) Services(ns string) kube.ServiceInterface { return a.c.CoreV1().Services(ns) }

type networking clientset

func (a networking) Ingresses(ns string) kube.IngressInterface {
	return a.c.NetworkingV1().Ingresses(ns)
}

type gateway clientset

func (a gateway) HTTPRoutes(ns string) kube.HTTPRouteInterface {
	return a.gw.GatewayV1().HTTPRoutes(ns)
}
