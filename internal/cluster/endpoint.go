package cluster

import (
	"errors"
	"fmt"

	"cloud.google.com/go/container/apiv1/containerpb"
)

// Endpoint names which of a GKE cluster's control-plane endpoints the
// function connects to. The zero value is Public.
type Endpoint string

// The endpoints ENDPOINT (and a target's cluster.endpoint) accepts.
const (
	// Public is the cluster's endpoint (Cluster.endpoint: its public IP, or
	// its private IP when the public one is disabled), verified against the
	// cluster CA. The default.
	Public Endpoint = "public"
	// Private is the cluster's private IP endpoint, verified against the
	// cluster CA: for a function with VPC egress into the cluster's network.
	Private Endpoint = "private"
	// DNS is GKE's DNS-based control-plane endpoint (a hostname reached
	// through Google's front end, no VPC needed), verified against the
	// system roots: gcloud writes no certificate-authority-data for it.
	DNS Endpoint = "dns"
)

// ParseEndpoint returns the Endpoint named by s; "" is Public.
func ParseEndpoint(s string) (Endpoint, error) {
	switch e := Endpoint(s); e {
	case "":
		return Public, nil
	case Public, Private, DNS:
		return e, nil
	}
	return "", fmt.Errorf("%q is not %s, %s or %s", s, Public, Private, DNS)
}

// String returns the endpoint's name, "public" for the zero value.
func (e Endpoint) String() string {
	if e == "" {
		return string(Public)
	}
	return string(e)
}

// ErrNoEndpoint is wrapped when the cluster lacks the chosen endpoint (no
// private endpoint, or the DNS-based endpoint disabled): no redelivery can
// succeed until an operator changes the cluster or the choice.
var ErrNoEndpoint = errors.New("cluster lacks the chosen endpoint")

// address returns the host (or host:port) of the endpoint e of cluster cl,
// named name in errors.
func address(name string, cl *containerpb.Cluster, e Endpoint) (string, error) {
	provisioning := cl.GetStatus() == containerpb.Cluster_PROVISIONING
	cp := cl.GetControlPlaneEndpointsConfig()
	switch e {
	case Private:
		ip := cp.GetIpEndpointsConfig()
		if ip != nil && ip.Enabled != nil && !ip.GetEnabled() {
			return "", fmt.Errorf("cluster %s has no private endpoint: its IP endpoints are disabled (controlPlaneEndpointsConfig.ipEndpointsConfig.enabled is false); set the endpoint to %s, or enable IP access: %w", name, DNS, ErrNoEndpoint)
		}
		// The IP endpoints config is the current field; the private cluster
		// config's is deprecated in its favour, and older answers carry only
		// that one. GKE fills both with the same address.
		if a := ip.GetPrivateEndpoint(); a != "" {
			return a, nil
		}
		if a := cl.GetPrivateClusterConfig().GetPrivateEndpoint(); a != "" {
			return a, nil
		}
		if provisioning {
			return "", fmt.Errorf("cluster %s has no private endpoint yet (status %s)", name, cl.GetStatus())
		}
		return "", fmt.Errorf("cluster %s has no private endpoint: it is not a private cluster; set the endpoint to %s or %s: %w", name, Public, DNS, ErrNoEndpoint)
	case DNS:
		dns := cp.GetDnsEndpointConfig()
		if dns.GetEndpoint() == "" {
			if provisioning {
				return "", fmt.Errorf("cluster %s has no DNS-based endpoint yet (status %s)", name, cl.GetStatus())
			}
			return "", fmt.Errorf("cluster %s has no DNS-based endpoint; enable it (gcloud container clusters update %s --enable-dns-access) or set the endpoint to %s or %s: %w", name, cl.GetName(), Public, Private, ErrNoEndpoint)
		}
		if !dns.GetAllowExternalTraffic() {
			return "", fmt.Errorf("cluster %s does not allow traffic on its DNS-based endpoint %s (allowExternalTraffic is false); enable it (gcloud container clusters update %s --enable-dns-access) or set the endpoint to %s or %s: %w", name, dns.GetEndpoint(), cl.GetName(), Public, Private, ErrNoEndpoint)
		}
		return dns.GetEndpoint(), nil
	default:
		if cl.GetEndpoint() == "" {
			return "", fmt.Errorf("cluster %s has no endpoint (status %s)", name, cl.GetStatus())
		}
		return cl.GetEndpoint(), nil
	}
}
