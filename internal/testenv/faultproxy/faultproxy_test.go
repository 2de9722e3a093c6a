package faultproxy

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// upstream plays the apiserver: it answers every request with one
// Deployment and records what reached it.
type upstream struct {
	*httptest.Server
	mu   sync.Mutex
	seen []string
}

func startUpstream(t *testing.T, cert tls.Certificate) *upstream {
	t.Helper()
	u := &upstream{}
	u.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.seen = append(u.seen, r.Method+" "+r.URL.Path+" "+r.Header.Get("Authorization"))
		u.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"kind":"Deployment","apiVersion":"apps/v1","metadata":{"name":"web","namespace":"prod"}}`))
	}))
	u.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	u.StartTLS()
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) requests() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.seen...)
}

// certificate returns a certificate for 127.0.0.1 that is its own CA, and
// that CA in PEM: the upstream and the proxy both present it.
func certificate(t *testing.T) (tls.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "cluster"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// setup starts an upstream and a proxy in front of it, and returns a
// clientset that reaches the upstream through the proxy, verifying TLS, with
// the bearer token "good".
func setup(t *testing.T) (*Proxy, *upstream, kubernetes.Interface) {
	t.Helper()
	cert, ca := certificate(t)
	u := startUpstream(t, cert)
	p, err := Start(Options{Upstream: u.URL, UpstreamCA: ca, Certificate: cert})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	client, err := kubernetes.NewForConfig(&rest.Config{Host: "https://" + p.Addr, BearerToken: "good", TLSClientConfig: rest.TLSClientConfig{CAData: ca}})
	if err != nil {
		t.Fatal(err)
	}
	return p, u, client
}

const path = "/apis/apps/v1/namespaces/prod/deployments/web"

// TestFaults: each fault reaches the requests it selects, as many times as
// it says, and client-go sees what the apiserver would have answered.
func TestFaults(t *testing.T) {
	tests := []struct {
		name  string
		fault Fault
		// want are the errors of a GET then a PATCH, as apierrors reasons
		// ("" for success); upstream are the requests that reached it.
		want     []metav1.StatusReason
		upstream []string
		proxied  []Request
	}{
		{"503 to PATCH only",
			Fault{Method: http.MethodPatch, Status: http.StatusServiceUnavailable},
			[]metav1.StatusReason{"", metav1.StatusReasonServiceUnavailable},
			[]string{"GET " + path + " Bearer good"},
			[]Request{{"GET", path, false, 200, false}, {"PATCH", path, false, 503, true}}},
		{"500 to the first request of any kind, once",
			Fault{Times: 1, Status: http.StatusInternalServerError},
			[]metav1.StatusReason{metav1.StatusReasonInternalError, ""},
			[]string{"PATCH " + path + " Bearer good"},
			[]Request{{"GET", path, false, 500, true}, {"PATCH", path, false, 200, false}}},
		{"504 after the PATCH landed",
			Fault{Method: http.MethodPatch, Status: http.StatusGatewayTimeout, Landed: true},
			[]metav1.StatusReason{"", metav1.StatusReasonTimeout},
			[]string{"GET " + path + " Bearer good", "PATCH " + path + " Bearer good"},
			[]Request{{"GET", path, false, 200, false}, {"PATCH", path, false, 504, true}}},
		{"another resource is spared",
			Fault{Resource: "services", Status: http.StatusServiceUnavailable},
			[]metav1.StatusReason{"", ""},
			[]string{"GET " + path + " Bearer good", "PATCH " + path + " Bearer good"},
			[]Request{{"GET", path, false, 200, false}, {"PATCH", path, false, 200, false}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, u, client := setup(t)
			p.Inject(tt.fault)
			ctx := context.Background()
			deployments := client.AppsV1().Deployments("prod")
			_, getErr := deployments.Get(ctx, "web", metav1.GetOptions{})
			_, patchErr := deployments.Patch(ctx, "web", types.StrategicMergePatchType, []byte(`{}`), metav1.PatchOptions{})
			got := []metav1.StatusReason{apierrors.ReasonForError(getErr), apierrors.ReasonForError(patchErr)}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("reasons (-want +got):\n%s\nerrors: %v, %v", diff, getErr, patchErr)
			}
			if diff := cmp.Diff(tt.upstream, u.requests()); diff != "" {
				t.Errorf("requests upstream (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.proxied, p.Requests()); diff != "" {
				t.Errorf("requests counted (-want +got):\n%s", diff)
			}
		})
	}
}

// TestClientGoWaitsOutRetryAfter measures what client-go does with a 429
// that carries Retry-After: it waits that long and sends the same request
// again, PATCH included, up to ten times within one call. A call fails only
// when the throttling outlasts those retries.
func TestClientGoWaitsOutRetryAfter(t *testing.T) {
	p, u, client := setup(t)
	p.Inject(Fault{Method: http.MethodPatch, Times: 2, Status: http.StatusTooManyRequests, RetryAfter: time.Second})
	begin := time.Now()
	_, err := client.AppsV1().Deployments("prod").Patch(context.Background(), "web", types.StrategicMergePatchType, []byte(`{}`), metav1.PatchOptions{})
	if err != nil {
		t.Fatalf("PATCH throttled twice with Retry-After 1s: %v, want client-go to retry it", err)
	}
	if took := time.Since(begin); took < 2*time.Second {
		t.Errorf("the call took %s, want at least the two Retry-After waits (2s)", took)
	}
	want := []Request{{"PATCH", path, false, 429, true}, {"PATCH", path, false, 429, true}, {"PATCH", path, false, 200, false}}
	if diff := cmp.Diff(want, p.Requests()); diff != "" {
		t.Errorf("requests counted (-want +got):\n%s", diff)
	}
	if n := len(u.requests()); n != 1 {
		t.Errorf("%d requests reached the apiserver, want the one after the throttling", n)
	}
}

// TestRevokedTokenNeverReachesTheAPIServer: a revoked token gets 401 from
// the proxy, as the cluster answers it.
func TestRevokedTokenNeverReachesTheAPIServer(t *testing.T) {
	p, u, client := setup(t)
	p.Revoke("good")
	_, err := client.AppsV1().Deployments("prod").Get(context.Background(), "web", metav1.GetOptions{})
	if !apierrors.IsUnauthorized(err) {
		t.Errorf("with the token revoked: %v, want Unauthorized", err)
	}
	if n := len(u.requests()); n != 0 {
		t.Errorf("%d requests with the revoked token reached the apiserver, want none", n)
	}
}
