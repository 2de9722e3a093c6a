package cluster

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/oauth2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/onnewimage/onnewimage/internal/emulator"
	"github.com/onnewimage/onnewimage/internal/testenv/gkefake"
)

const (
	clusterName = "projects/demo/locations/us-central1/clusters/prod"
	saEmail     = "deployer@demo.iam.gserviceaccount.com"
	accessToken = "ya29.local-token"
)

// apiserver is a TLS server answering GET of one Deployment, recording the
// Authorization header of every request. It answers 401 to a revoked token.
type apiserver struct {
	*httptest.Server
	ca      []byte
	mu      sync.Mutex
	auths   []string
	revoked string
	// throttle holds the Retry-After seconds of the next requests, each
	// answered 429 in turn.
	throttle []int
}

func startAPIServer(t *testing.T) *apiserver {
	t.Helper()
	// Each server gets its own CA: httptest's built-in certificate is the
	// same for every server, which would make any of them trust the others.
	cert, ca := selfSigned(t)
	return startAPIServerWith(t, cert, ca)
}

// startAPIServerWith starts a server presenting cert, signed by ca (PEM).
func startAPIServerWith(t *testing.T, cert tls.Certificate, ca []byte) *apiserver {
	t.Helper()
	a := &apiserver{}
	a.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		a.auths = append(a.auths, r.Header.Get("Authorization"))
		revoked := a.revoked != "" && r.Header.Get("Authorization") == "Bearer "+a.revoked
		retryAfter := -1
		if len(a.throttle) > 0 {
			retryAfter, a.throttle = a.throttle[0], a.throttle[1:]
		}
		a.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if retryAfter >= 0 {
			w.Header().Set("Retry-After", strconv.Itoa(retryAfter))
			w.WriteHeader(http.StatusTooManyRequests)
			fmt.Fprintf(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","message":"throttled","reason":"TooManyRequests","code":429,"details":{"retryAfterSeconds":%d}}`, retryAfter)
			return
		}
		if revoked {
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}`))
			return
		}
		if r.URL.Path == "/apis/gateway.networking.k8s.io/v1/namespaces/prod/httproutes/web" {
			w.Write([]byte(`{"kind":"HTTPRoute","apiVersion":"gateway.networking.k8s.io/v1","metadata":{"name":"web","namespace":"prod"},` +
				`"spec":{"rules":[{"backendRefs":[{"name":"web","weight":90},{"name":"web-canary","weight":10}]}]}}`))
			return
		}
		if r.URL.Path != "/apis/apps/v1/namespaces/prod/deployments/web" {
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}`))
			return
		}
		w.Write([]byte(`{"kind":"Deployment","apiVersion":"apps/v1","metadata":{"name":"web","namespace":"prod"}}`))
	}))
	a.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	a.StartTLS()
	a.ca = ca
	t.Cleanup(a.Close)
	return a
}

func (a *apiserver) caPEM() []byte { return a.ca }

// throttleNext makes the server answer the next requests 429, with these
// Retry-After seconds in turn.
func (a *apiserver) throttleNext(seconds ...int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.throttle = seconds
}

// revoke makes the server answer 401 to token, as a cluster does to a token
// that expired or was revoked before the client expected.
func (a *apiserver) revoke(token string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.revoked = token
}

// selfSigned returns a certificate for 127.0.0.1 and localhost that is its
// own CA, and that CA in PEM.
func selfSigned(t *testing.T) (tls.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "apiserver"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:              []string{"localhost"},
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

func (a *apiserver) endpoint() string { return a.Listener.Addr().String() }

// hostname is the server's address by name, as a DNS-based endpoint is.
func (a *apiserver) hostname() string {
	_, port, _ := net.SplitHostPort(a.endpoint())
	return net.JoinHostPort("localhost", port)
}

func (a *apiserver) authorizations() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.auths...)
}

// stubs starts the Container API and token service and points Application
// Default Credentials at a key file for saEmail.
func stubs(t *testing.T) (*gkefake.ContainerServer, *gkefake.TokenServer) {
	t.Helper()
	cs, err := gkefake.StartContainerServer()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cs.Stop)
	ts, err := gkefake.StartTokenServer()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ts.Stop)
	key := filepath.Join(t.TempDir(), "key.json")
	if err := ts.WriteServiceAccountKey(key, saEmail, accessToken); err != nil {
		t.Fatal(err)
	}
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", key)
	return cs, ts
}

func getWeb(ctx context.Context, t *testing.T, c *Connector) error {
	t.Helper()
	client, err := c.Clientset(ctx)
	if err != nil {
		return err
	}
	_, err = client.AppsV1().Deployments("prod").Get(ctx, "web", metav1.GetOptions{})
	c.Forget(err)
	return err
}

func TestGKEConnectsWithVerifiedTLSAndADCToken(t *testing.T) {
	ctx := context.Background()
	containerAPI, tokens := stubs(t)
	api := startAPIServer(t)
	containerAPI.SetCluster(clusterName, api.endpoint(), api.caPEM())

	c := NewGKE(clusterName, Public, Options{EmulatorHost: containerAPI.Addr})
	for i := 0; i < 3; i++ {
		if err := getWeb(ctx, t, c); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	if got := containerAPI.Calls(); got != 1 {
		t.Errorf("GetCluster called %d times over 3 warm calls, want 1", got)
	}
	if got := tokens.Issued(); got != 1 {
		t.Errorf("token service asked %d times, want 1 (the token is reused until it expires)", got)
	}
	for _, got := range api.authorizations() {
		if got != "Bearer "+accessToken {
			t.Errorf("Authorization = %q, want the ADC token", got)
		}
	}
}

func TestGKEReconnectsAfterTTL(t *testing.T) {
	ctx := context.Background()
	containerAPI, _ := stubs(t)
	api := startAPIServer(t)
	containerAPI.SetCluster(clusterName, api.endpoint(), api.caPEM())
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := NewGKE(clusterName, Public, Options{EmulatorHost: containerAPI.Addr, TTL: time.Minute, Now: func() time.Time { return now }})

	for _, step := range []struct {
		advance time.Duration
		calls   int
	}{{0, 1}, {59 * time.Second, 1}, {2 * time.Second, 2}, {30 * time.Second, 2}} {
		now = now.Add(step.advance)
		if err := getWeb(ctx, t, c); err != nil {
			t.Fatal(err)
		}
		if got := containerAPI.Calls(); got != step.calls {
			t.Errorf("after +%s: GetCluster calls = %d, want %d", step.advance, got, step.calls)
		}
	}
}

func TestGKERejectsAnUntrustedCertificate(t *testing.T) {
	ctx := context.Background()
	containerAPI, _ := stubs(t)
	api, impostor := startAPIServer(t), startAPIServer(t)
	// The endpoint answers with a certificate the cluster CA did not sign.
	containerAPI.SetCluster(clusterName, impostor.endpoint(), api.caPEM())

	c := NewGKE(clusterName, Public, Options{EmulatorHost: containerAPI.Addr})
	err := getWeb(ctx, t, c)
	var verify *tls.CertificateVerificationError
	if !errors.As(err, &verify) {
		t.Fatalf("error = %v, want a certificate verification failure", err)
	}
	if n := len(impostor.authorizations()); n != 0 {
		t.Errorf("the impostor received %d requests, want none (no token may leak)", n)
	}

	// The CA is rotated: the failure dropped the connection, so the retry
	// asks GetCluster again and succeeds.
	containerAPI.SetCluster(clusterName, impostor.endpoint(), impostor.caPEM())
	if err := getWeb(ctx, t, c); err != nil {
		t.Fatalf("after CA rotation: %v", err)
	}
	if got := containerAPI.Calls(); got != 2 {
		t.Errorf("GetCluster calls = %d, want 2", got)
	}
}

func TestGKEReconnectsWhenTheEndpointMoves(t *testing.T) {
	ctx := context.Background()
	containerAPI, _ := stubs(t)
	old, moved := startAPIServer(t), startAPIServer(t)
	containerAPI.SetCluster(clusterName, old.endpoint(), old.caPEM())
	c := NewGKE(clusterName, Public, Options{EmulatorHost: containerAPI.Addr})
	if err := getWeb(ctx, t, c); err != nil {
		t.Fatal(err)
	}
	old.Close()
	containerAPI.SetCluster(clusterName, moved.endpoint(), moved.caPEM())
	if err := getWeb(ctx, t, c); err == nil {
		t.Fatal("call to the closed endpoint succeeded")
	}
	if err := getWeb(ctx, t, c); err != nil {
		t.Fatalf("after the endpoint moved: %v", err)
	}
	if got := containerAPI.Calls(); got != 2 {
		t.Errorf("GetCluster calls = %d, want 2", got)
	}
}

func TestForgetKeepsTheConnectionOnAPIAnswers(t *testing.T) {
	ctx := context.Background()
	containerAPI, _ := stubs(t)
	api := startAPIServer(t)
	containerAPI.SetCluster(clusterName, api.endpoint(), api.caPEM())
	c := NewGKE(clusterName, Public, Options{EmulatorHost: containerAPI.Addr})
	client, err := c.Clientset(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, err = client.AppsV1().Deployments("prod").Get(ctx, "absent", metav1.GetOptions{})
	if !apierrors.IsNotFound(err) {
		t.Fatalf("error = %v, want NotFound", err)
	}
	c.Forget(err)
	c.Forget(apierrors.NewConflict(schemaDeployments, "web", errors.New("x")))
	if err := getWeb(ctx, t, c); err != nil {
		t.Fatal(err)
	}
	if got := containerAPI.Calls(); got != 1 {
		t.Errorf("GetCluster calls = %d, want 1: API answers are no reason to reconnect", got)
	}
	c.Forget(apierrors.NewUnauthorized("token revoked"))
	if err := getWeb(ctx, t, c); err != nil {
		t.Fatal(err)
	}
	if got := containerAPI.Calls(); got != 2 {
		t.Errorf("GetCluster calls = %d, want 2: Unauthorized drops the connection", got)
	}
}

// TestRetryAfterWithinTheDeadline: client-go waits out a 429's Retry-After
// and sends the request again, within the call, when the call's deadline
// leaves time for it; when it does not, the call fails at once with the 429
// (retryable: Pub/Sub redelivers), instead of sleeping until its deadline
// and failing with no word of the throttling.
func TestRetryAfterWithinTheDeadline(t *testing.T) {
	tests := []struct {
		name     string
		throttle []int
		timeout  time.Duration
		want     metav1.StatusReason // "" for success
		requests int
	}{
		{"1s twice, within 30s", []int{1, 1}, 30 * time.Second, "", 3},
		{"600s, beyond 30s", []int{600}, 30 * time.Second, metav1.StatusReasonTooManyRequests, 1},
		{"1s then 600s", []int{1, 600}, 30 * time.Second, metav1.StatusReasonTooManyRequests, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			containerAPI, _ := stubs(t)
			api := startAPIServer(t)
			containerAPI.SetCluster(clusterName, api.endpoint(), api.caPEM())
			api.throttleNext(tt.throttle...)
			c := NewGKE(clusterName, Public, Options{EmulatorHost: containerAPI.Addr})
			ctx, cancel := context.WithTimeout(context.Background(), tt.timeout)
			defer cancel()
			err := getWeb(ctx, t, c)
			if got := apierrors.ReasonForError(err); got != tt.want || errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("error = %v (reason %q), want reason %q", err, got, tt.want)
			}
			if got := len(api.authorizations()); got != tt.requests {
				t.Errorf("%d requests, want %d", got, tt.requests)
			}
		})
	}
}

// TestGKEGetsAFreshTokenAfterUnauthorized: the cluster stops accepting the
// cached token long before the expiry the token service announced (revoked,
// or a clock ahead). The call fails Unauthorized; the next one must fetch a
// fresh token rather than present the rejected one until it expires.
func TestGKEGetsAFreshTokenAfterUnauthorized(t *testing.T) {
	ctx := context.Background()
	containerAPI, tokens := stubs(t)
	api := startAPIServer(t)
	containerAPI.SetCluster(clusterName, api.endpoint(), api.caPEM())
	c := NewGKE(clusterName, Public, Options{EmulatorHost: containerAPI.Addr})
	if err := getWeb(ctx, t, c); err != nil {
		t.Fatal(err)
	}
	api.revoke(accessToken)
	tokens.SetAccessToken(saEmail, "ya29.fresh-token")
	if err := getWeb(ctx, t, c); !apierrors.IsUnauthorized(err) {
		t.Fatalf("with the token revoked: error = %v, want Unauthorized", err)
	}
	if err := getWeb(ctx, t, c); err != nil {
		t.Fatalf("after Unauthorized: %v, want a fresh token accepted", err)
	}
	want := []string{"Bearer " + accessToken, "Bearer " + accessToken, "Bearer ya29.fresh-token"}
	if diff := cmp.Diff(want, api.authorizations()); diff != "" {
		t.Errorf("Authorization headers (-want +got):\n%s", diff)
	}
	if got := tokens.Issued(); got != 2 {
		t.Errorf("token service asked %d times, want 2", got)
	}
}

// TestGKETokenFetchEndsWithTheCall: a token service that does not answer
// must fail the call at the call's deadline (and Pub/Sub retries), not hold
// it, nor every later call on the instance, until the fetch gives up.
func TestGKETokenFetchEndsWithTheCall(t *testing.T) {
	ctx := context.Background()
	containerAPI, tokens := stubs(t)
	api := startAPIServer(t)
	containerAPI.SetCluster(clusterName, api.endpoint(), api.caPEM())
	c := NewGKE(clusterName, Public, Options{EmulatorHost: containerAPI.Addr})
	tokens.Delay(time.Hour) // Hung: the requests made now wait an hour.

	call := func(timeout time.Duration) error {
		t.Helper()
		short, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- getWeb(short, t, c) }()
		select {
		case err := <-done:
			return err
		case <-time.After(timeout + 10*time.Second):
			t.Fatalf("the call outlived its %s deadline by 10s: the token fetch ignores it", timeout)
			return nil
		}
	}
	err := call(500 * time.Millisecond)
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrNoToken) {
		t.Errorf("token service hung: error = %v, want ErrNoToken and the deadline", err)
	}
	if n := len(api.authorizations()); n != 0 {
		t.Errorf("the cluster received %d requests without a token, want none", n)
	}
	// The service answers again; the fetch still hanging must not hold the
	// next call.
	tokens.Delay(0)
	if err := call(5 * time.Second); err != nil {
		t.Errorf("after the token service recovered: %v", err)
	}
}

func TestGKEContainerAPIFailures(t *testing.T) {
	ctx := context.Background()
	containerAPI, _ := stubs(t)
	api := startAPIServer(t)

	c := NewGKE(clusterName, Public, Options{EmulatorHost: containerAPI.Addr})
	if _, err := c.Clientset(ctx); status.Code(err) != codes.NotFound || !strings.Contains(err.Error(), clusterName) {
		t.Errorf("unknown cluster: error = %v, want NotFound naming the cluster", err)
	}
	// The Container API client retries Unavailable by itself until the
	// invocation's deadline; then the error goes back to Pub/Sub.
	containerAPI.Fail(status.Error(codes.Unavailable, "maintenance"))
	short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	if _, err := c.Clientset(short); !errors.Is(err, context.DeadlineExceeded) && status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("unavailable API: error = %v, want the deadline", err)
	}
	if n := containerAPI.Calls(); n < 3 {
		t.Errorf("GetCluster tried %d times while unavailable, want retries", n)
	}
	containerAPI.Fail(nil)
	containerAPI.SetCluster(clusterName, api.endpoint(), []byte("not a certificate"))
	if _, err := c.Clientset(ctx); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Errorf("broken CA: error = %v, want it named", err)
	}
	containerAPI.SetCluster(clusterName, api.endpoint(), api.caPEM())
	if err := getWeb(ctx, t, c); err != nil {
		t.Errorf("after recovery: %v", err)
	}
}

// TestGKERefusesARemoteEmulator checks that the connector never reaches a
// Container API emulator off this machine, whoever configured it: such a peer
// would be trusted without authentication to name the endpoint and CA that
// then receive the function's token.
func TestGKERefusesARemoteEmulator(t *testing.T) {
	_, tokens := stubs(t)
	for _, host := range []string{"203.0.113.10:443", "container.example.com:443", "0.0.0.0:8085", "127.0.0.1"} {
		t.Run(host, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_, err := NewGKE(clusterName, Public, Options{EmulatorHost: host}).Clientset(ctx)
			if !errors.Is(err, emulator.ErrNotLoopback) && !errors.Is(err, emulator.ErrMalformed) {
				t.Errorf("Clientset() error = %v, want the emulator host refused", err)
			}
		})
	}
	if got := tokens.Issued(); got != 0 {
		t.Errorf("token service asked %d times, want 0", got)
	}
}

func TestKubeconfig(t *testing.T) {
	api := startAPIServer(t)
	path := filepath.Join(t.TempDir(), "kubeconfig")
	writeKubeconfig(t, path, "https://"+api.endpoint(), api.caPEM(), "local-token")
	c := NewKubeconfig(path, Options{})
	if err := getWeb(context.Background(), t, c); err != nil {
		t.Fatal(err)
	}
	if got := api.authorizations(); len(got) != 1 || got[0] != "Bearer local-token" {
		t.Errorf("Authorization = %q", got)
	}
	if _, err := NewKubeconfig(filepath.Join(t.TempDir(), "absent"), Options{}).Clientset(context.Background()); err == nil {
		t.Error("a missing kubeconfig gave a client")
	}
}

func TestHTTPRoutes(t *testing.T) {
	api := startAPIServer(t)
	path := filepath.Join(t.TempDir(), "kubeconfig")
	writeKubeconfig(t, path, "https://"+api.endpoint(), api.caPEM(), "local-token")
	c := NewKubeconfig(path, Options{})
	client, err := c.Clientset(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	route, err := client.GatewayV1().HTTPRoutes("prod").Get(context.Background(), "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	refs := route.Spec.Rules[0].BackendRefs
	if got := fmt.Sprintf("%s/%s %s %d %s %d", route.Namespace, route.Name, refs[0].Name, *refs[0].Weight, refs[1].Name, *refs[1].Weight); got != "prod/web web 90 web-canary 10" {
		t.Errorf("route = %s, want prod/web web 90 web-canary 10", got)
	}
	if got := api.authorizations(); len(got) != 1 || got[0] != "Bearer local-token" {
		t.Errorf("Authorization = %q, want the connection's token", got)
	}
}

var schemaDeployments = schema.GroupResource{Group: "apps", Resource: "deployments"}

func writeKubeconfig(t *testing.T, path, server string, ca []byte, token string) {
	t.Helper()
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["local"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca}
	cfg.AuthInfos["local"] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["local"] = &clientcmdapi.Context{Cluster: "local", AuthInfo: "local"}
	cfg.CurrentContext = "local"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
}

// lateTimer is a context whose deadline has passed but whose timer has not
// fired yet: a loaded machine can run one timer late and another on time.
type lateTimer struct{ context.Context }

func (lateTimer) Deadline() (time.Time, bool) { return time.Now().Add(-time.Millisecond), true }

// failingToken fails at once, as a token fetch does when its own client
// timeout fires.
type failingToken struct{}

func (failingToken) Token() (*oauth2.Token, error) {
	return nil, errors.New("oauth2: cannot fetch token: Client.Timeout exceeded while awaiting headers")
}

// A token fetch that fails after the call's deadline has passed failed
// because the call took too long: the error says so, whichever of the two
// timers the runtime ran first. (The fetch's own timeout, a minute, equals
// the rolling budget.)
func TestBearerReportsThePassedDeadline(t *testing.T) {
	b := &bearer{source: failingToken{}, base: http.DefaultTransport}
	req, err := http.NewRequestWithContext(lateTimer{context.Background()}, http.MethodGet, "https://127.0.0.1:1/", nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.RoundTrip(req)
	if !errors.Is(err, ErrNoToken) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("RoundTrip after the deadline = %v, want ErrNoToken and context.DeadlineExceeded", err)
	}
}
