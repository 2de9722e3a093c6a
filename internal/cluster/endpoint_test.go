package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"strings"
	"testing"

	"cloud.google.com/go/container/apiv1/containerpb"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"

	"github.com/onnewimage/onnewimage/internal/testenv/gkefake"
)

func TestParseEndpoint(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want Endpoint
		err  string
	}{
		{"", Public, ""},
		{"public", Public, ""},
		{"private", Private, ""},
		{"dns", DNS, ""},
		{"Private", "", `"Private" is not public, private or dns`},
		{"internal-ip", "", `"internal-ip" is not public, private or dns`},
	} {
		got, err := ParseEndpoint(tt.in)
		gotErr := ""
		if err != nil {
			gotErr = err.Error()
		}
		if diff := cmp.Diff([]any{tt.want, tt.err}, []any{got, gotErr}); diff != "" {
			t.Errorf("ParseEndpoint(%q) (-want +got):\n%s", tt.in, diff)
		}
	}
}

// TestAddress covers the cluster shapes GKE answers with, built by hand:
// the Container API stand-in answers only the shapes of TestGKEEndpoints.
func TestAddress(t *testing.T) {
	ipConfig := func(enabled *bool, private string) *containerpb.ControlPlaneEndpointsConfig {
		return &containerpb.ControlPlaneEndpointsConfig{IpEndpointsConfig: &containerpb.ControlPlaneEndpointsConfig_IPEndpointsConfig{
			Enabled: enabled, PrivateEndpoint: private,
		}}
	}
	dnsConfig := func(endpoint string, allow *bool) *containerpb.ControlPlaneEndpointsConfig {
		return &containerpb.ControlPlaneEndpointsConfig{DnsEndpointConfig: &containerpb.ControlPlaneEndpointsConfig_DNSEndpointConfig{
			Endpoint: endpoint, AllowExternalTraffic: allow,
		}}
	}
	const dnsName = "gke-0123456789abcdef-123456789012.us-central1.gke.goog"
	tests := []struct {
		name     string
		cluster  *containerpb.Cluster
		endpoint Endpoint
		want     string
		err      string // the whole message; ErrNoEndpoint wrapped when it ends with its text
	}{
		{name: "public", endpoint: Public,
			cluster: &containerpb.Cluster{Endpoint: "203.0.113.1", PrivateClusterConfig: &containerpb.PrivateClusterConfig{PrivateEndpoint: "10.0.0.2"}},
			want:    "203.0.113.1"},
		{name: "zero value is public", endpoint: "",
			cluster: &containerpb.Cluster{Endpoint: "203.0.113.1"},
			want:    "203.0.113.1"},
		{name: "public while provisioning", endpoint: Public,
			cluster: &containerpb.Cluster{Status: containerpb.Cluster_PROVISIONING},
			err:     "cluster " + clusterName + " has no endpoint (status PROVISIONING)"},
		{name: "private in the IP endpoints config", endpoint: Private,
			cluster: &containerpb.Cluster{Endpoint: "203.0.113.1", ControlPlaneEndpointsConfig: ipConfig(proto.Bool(true), "10.0.0.2")},
			want:    "10.0.0.2"},
		{name: "private in the private cluster config only (older answers)", endpoint: Private,
			cluster: &containerpb.Cluster{Endpoint: "203.0.113.1", PrivateClusterConfig: &containerpb.PrivateClusterConfig{PrivateEndpoint: "10.0.0.3"}},
			want:    "10.0.0.3"},
		{name: "private in both: the current field wins over the deprecated one", endpoint: Private,
			cluster: &containerpb.Cluster{
				PrivateClusterConfig:        &containerpb.PrivateClusterConfig{PrivateEndpoint: "10.0.0.3"},
				ControlPlaneEndpointsConfig: ipConfig(nil, "10.0.0.2"),
			},
			want: "10.0.0.2"},
		{name: "no private endpoint", endpoint: Private,
			cluster: &containerpb.Cluster{Name: "prod", Endpoint: "203.0.113.1", Status: containerpb.Cluster_RUNNING},
			err:     "cluster " + clusterName + " has no private endpoint: it is not a private cluster; set the endpoint to public or dns: cluster lacks the chosen endpoint"},
		{name: "IP endpoints disabled", endpoint: Private,
			cluster: &containerpb.Cluster{Name: "prod", ControlPlaneEndpointsConfig: ipConfig(proto.Bool(false), ""), PrivateClusterConfig: &containerpb.PrivateClusterConfig{PrivateEndpoint: "10.0.0.3"}},
			err:     "cluster " + clusterName + " has no private endpoint: its IP endpoints are disabled (controlPlaneEndpointsConfig.ipEndpointsConfig.enabled is false); set the endpoint to dns, or enable IP access: cluster lacks the chosen endpoint"},
		{name: "private while provisioning", endpoint: Private,
			cluster: &containerpb.Cluster{Status: containerpb.Cluster_PROVISIONING},
			err:     "cluster " + clusterName + " has no private endpoint yet (status PROVISIONING)"},
		{name: "dns", endpoint: DNS,
			cluster: &containerpb.Cluster{Endpoint: "203.0.113.1", ControlPlaneEndpointsConfig: dnsConfig(dnsName, proto.Bool(true))},
			want:    dnsName},
		{name: "no DNS endpoint", endpoint: DNS,
			cluster: &containerpb.Cluster{Name: "prod", Endpoint: "203.0.113.1", Status: containerpb.Cluster_RUNNING},
			err:     "cluster " + clusterName + " has no DNS-based endpoint; enable it (gcloud container clusters update prod --enable-dns-access) or set the endpoint to public or private: cluster lacks the chosen endpoint"},
		{name: "DNS endpoint closed to user traffic", endpoint: DNS,
			cluster: &containerpb.Cluster{Name: "prod", ControlPlaneEndpointsConfig: dnsConfig(dnsName, proto.Bool(false))},
			err:     "cluster " + clusterName + " does not allow traffic on its DNS-based endpoint " + dnsName + " (allowExternalTraffic is false); enable it (gcloud container clusters update prod --enable-dns-access) or set the endpoint to public or private: cluster lacks the chosen endpoint"},
		{name: "DNS endpoint with allowExternalTraffic unset", endpoint: DNS,
			cluster: &containerpb.Cluster{Name: "prod", ControlPlaneEndpointsConfig: dnsConfig(dnsName, nil)},
			err:     "cluster " + clusterName + " does not allow traffic on its DNS-based endpoint " + dnsName + " (allowExternalTraffic is false); enable it (gcloud container clusters update prod --enable-dns-access) or set the endpoint to public or private: cluster lacks the chosen endpoint"},
		{name: "dns while provisioning", endpoint: DNS,
			cluster: &containerpb.Cluster{Status: containerpb.Cluster_PROVISIONING},
			err:     "cluster " + clusterName + " has no DNS-based endpoint yet (status PROVISIONING)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := address(clusterName, tt.cluster, tt.endpoint)
			gotErr := ""
			if err != nil {
				gotErr = err.Error()
			}
			if diff := cmp.Diff([]any{tt.want, tt.err}, []any{got, gotErr}); diff != "" {
				t.Fatalf("address (-want +got):\n%s", diff)
			}
			lacks := strings.HasSuffix(tt.err, ErrNoEndpoint.Error())
			if errors.Is(err, ErrNoEndpoint) != lacks {
				t.Errorf("errors.Is(err, ErrNoEndpoint) = %t, want %t", !lacks, lacks)
			}
		})
	}
}

// TestGKEEndpoints connects through each endpoint of a cluster whose three
// endpoints are three servers, each with its own CA, and checks that only the
// chosen one is called, verified against what GKE documents for it.
func TestGKEEndpoints(t *testing.T) {
	tests := []struct {
		endpoint Endpoint
		server   string // which server must be called
	}{
		{Public, "public"},
		{Private, "private"},
		{DNS, "dns"},
	}
	for _, tt := range tests {
		t.Run(tt.endpoint.String(), func(t *testing.T) {
			ctx := context.Background()
			containerAPI, _ := stubs(t)
			// One cluster CA for both IP endpoints, as in GKE; another for
			// the DNS-based endpoint.
			clusterCert, clusterCA := selfSigned(t)
			servers := map[string]*apiserver{
				"public":  startAPIServerWith(t, clusterCert, clusterCA),
				"private": startAPIServerWith(t, clusterCert, clusterCA),
				"dns":     startAPIServer(t),
			}
			containerAPI.SetClusterEndpoints(clusterName, gkefake.Endpoints{
				Public:  servers["public"].endpoint(),
				Private: servers["private"].endpoint(),
				DNS:     servers["dns"].hostname(),
			}, servers["public"].caPEM())

			c := NewGKE(clusterName, tt.endpoint, Options{EmulatorHost: containerAPI.Addr, DNSRootCAs: servers["dns"].caPEM()})
			if err := getWeb(ctx, t, c); err != nil {
				t.Fatal(err)
			}
			got := map[string]int{}
			for name, s := range servers {
				got[name] = len(s.authorizations())
			}
			want := map[string]int{"public": 0, "private": 0, "dns": 0}
			want[tt.server] = 1
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("requests per server (-want +got):\n%s", diff)
			}
		})
	}
}

// TestGKEDNSEndpointIsVerifiedAgainstTheRoots checks that the DNS-based
// endpoint's certificate must chain to the roots (the system's in
// production), never to the cluster CA, and that no token reaches an
// endpoint that fails verification.
func TestGKEDNSEndpointIsVerifiedAgainstTheRoots(t *testing.T) {
	tests := []struct {
		name  string
		roots func(dns, other *apiserver) []byte
	}{
		{"signed by another root", func(_, other *apiserver) []byte { return other.caPEM() }},
		// The cluster CA signed the DNS endpoint's certificate, but only the
		// system roots are trusted for it, and they do not hold that CA.
		{"signed by the cluster CA only", func(*apiserver, *apiserver) []byte { return nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			containerAPI, _ := stubs(t)
			dns, other := startAPIServer(t), startAPIServer(t)
			containerAPI.SetClusterEndpoints(clusterName, gkefake.Endpoints{Public: dns.endpoint(), DNS: dns.hostname()}, dns.caPEM())

			c := NewGKE(clusterName, DNS, Options{EmulatorHost: containerAPI.Addr, DNSRootCAs: tt.roots(dns, other)})
			err := getWeb(ctx, t, c)
			var verify *tls.CertificateVerificationError
			if !errors.As(err, &verify) {
				t.Fatalf("error = %v, want a certificate verification failure", err)
			}
			if n := len(dns.authorizations()); n != 0 {
				t.Errorf("the endpoint received %d requests, want none (no token may leak)", n)
			}
		})
	}
}

// TestGKELacksTheChosenEndpoint checks that a cluster without the chosen
// endpoint fails clearly, with ErrNoEndpoint, before any token is asked for
// the Kubernetes API.
func TestGKELacksTheChosenEndpoint(t *testing.T) {
	tests := []struct {
		endpoint Endpoint
		has      func(api *apiserver) gkefake.Endpoints
		want     string
	}{
		{Private, func(api *apiserver) gkefake.Endpoints {
			return gkefake.Endpoints{Public: api.endpoint(), DNS: api.hostname()}
		}, "cluster " + clusterName + " has no private endpoint: it is not a private cluster; set the endpoint to public or dns: cluster lacks the chosen endpoint"},
		{DNS, func(api *apiserver) gkefake.Endpoints {
			return gkefake.Endpoints{Public: api.endpoint(), Private: api.endpoint()}
		}, "cluster " + clusterName + " has no DNS-based endpoint; enable it (gcloud container clusters update prod --enable-dns-access) or set the endpoint to public or private: cluster lacks the chosen endpoint"},
	}
	for _, tt := range tests {
		t.Run(tt.endpoint.String(), func(t *testing.T) {
			containerAPI, _ := stubs(t)
			api := startAPIServer(t)
			containerAPI.SetClusterEndpoints(clusterName, tt.has(api), api.caPEM())
			_, err := NewGKE(clusterName, tt.endpoint, Options{EmulatorHost: containerAPI.Addr, DNSRootCAs: api.caPEM()}).Clientset(context.Background())
			if !errors.Is(err, ErrNoEndpoint) || err.Error() != tt.want {
				t.Errorf("error = %v, want %q wrapping ErrNoEndpoint", err, tt.want)
			}
			if n := len(api.authorizations()); n != 0 {
				t.Errorf("the cluster received %d requests, want none", n)
			}
		})
	}
}
