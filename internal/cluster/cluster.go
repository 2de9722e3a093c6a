// Package cluster connects the function to the Kubernetes API of its target
// cluster, and keeps that connection across warm invocations.
//
// For GKE it asks the Container API for the cluster's endpoint and CA
// (GetCluster), and authenticates with an OAuth2 bearer token from
// Application Default Credentials. The endpoint is the one chosen (see
// Endpoint): the public or private IP endpoint, whose TLS is verified
// against the cluster's own CA, or the DNS-based endpoint, verified against
// the system roots. TLS is never skipped. The connection is cached for a
// bounded time and dropped as soon as a call fails below the Kubernetes API
// (TLS, connection refused, timeouts, no token) or is refused Unauthorized,
// so a rotated CA, a moved endpoint or a revoked token is replaced on the
// retry. Each connection fetches its own token: a token the cluster
// rejected is never presented again, and a token fetch that hangs fails the
// call at its deadline without holding the next connection.
package cluster

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	container "cloud.google.com/go/container/apiv1"
	"cloud.google.com/go/container/apiv1/containerpb"
	"github.com/googleapis/gax-go/v2"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
	"google.golang.org/api/option"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/onnewimage/onnewimage/internal/emulator"
	"github.com/onnewimage/onnewimage/internal/kube"
)

// ClusterManager is the part of the Container API the connector uses.
type ClusterManager interface {
	GetCluster(ctx context.Context, req *containerpb.GetClusterRequest, opts ...gax.CallOption) (*containerpb.Cluster, error)
}

// DefaultTTL bounds how long a connection is reused before GetCluster is
// asked again.
const DefaultTTL = 30 * time.Minute

// userAgent names the function to the Kubernetes API server.
const userAgent = "onnewimage"

// cloudPlatformScope is the OAuth2 scope GKE accepts for Kubernetes API calls.
const cloudPlatformScope = "https://www.googleapis.com/auth/cloud-platform"

// tokenFetchTimeout bounds one token request to a key file's token_uri, so
// that a fetch the call gave up on (see bearer) does not hang for ever.
const tokenFetchTimeout = time.Minute

// ErrNoToken is wrapped when no access token could be had for a call:
// Application Default Credentials failed, or did not answer before the
// call's deadline.
var ErrNoToken = errors.New("no access token")

// Options adjust a Connector. The zero value is production: the real
// Container API, Application Default Credentials, a real clientset.
type Options struct {
	// EmulatorHost, when set, is a loopback host:port where the Container API
	// is reached over plaintext gRPC without credentials. Any other host is
	// refused (see emulator.CheckHost).
	EmulatorHost string
	// ClusterManager replaces the Container API client.
	ClusterManager ClusterManager
	// TokenSource replaces Application Default Credentials.
	TokenSource oauth2.TokenSource
	// DNSRootCAs, PEM, replaces the system roots that the DNS-based
	// endpoint's certificate is verified against (tests).
	DNSRootCAs []byte
	// NewClientset replaces kube.NewForConfig (tests).
	NewClientset func(*rest.Config) (kube.Interface, error)
	// TTL replaces DefaultTTL.
	TTL time.Duration
	// Now replaces time.Now (tests).
	Now func() time.Time
}

// Connector hands out a Kubernetes clientset for one cluster, built on first
// use and cached. It is safe for concurrent use.
type Connector struct {
	describe     string
	restConfig   func(ctx context.Context) (*rest.Config, error)
	newClientset func(*rest.Config) (kube.Interface, error)
	ttl          time.Duration
	now          func() time.Time

	mu      sync.Mutex
	client  kube.Interface
	expires time.Time
}

func newConnector(describe string, opts Options, restConfig func(context.Context) (*rest.Config, error)) *Connector {
	c := &Connector{describe: describe, restConfig: restConfig, newClientset: opts.NewClientset, ttl: opts.TTL, now: opts.Now}
	if c.newClientset == nil {
		c.newClientset = func(cfg *rest.Config) (kube.Interface, error) { return kube.NewForConfig(cfg) }
	}
	if c.ttl <= 0 {
		c.ttl = DefaultTTL
	}
	if c.now == nil {
		c.now = time.Now
	}
	return c
}

// NewGKE returns a Connector for the GKE cluster named
// projects/P/locations/L/clusters/C, through its endpoint e.
func NewGKE(name string, e Endpoint, opts Options) *Connector {
	g := &gke{name: name, endpoint: e, opts: opts, cm: opts.ClusterManager}
	return newConnector(name, opts, g.restConfig)
}

// NewKubeconfig returns a Connector for the current context of the
// kubeconfig file at path (a local cluster).
func NewKubeconfig(path string, opts Options) *Connector {
	return newConnector("kubeconfig "+path, opts, func(context.Context) (*rest.Config, error) {
		cfg, err := clientcmd.BuildConfigFromFlags("", path)
		if err != nil {
			return nil, fmt.Errorf("loading kubeconfig %s: %w", path, err)
		}
		cfg.UserAgent = userAgent
		return cfg, nil
	})
}

// Clientset returns the cached clientset, connecting first when there is
// none or it has outlived its TTL.
func (c *Connector) Clientset(ctx context.Context) (kube.Interface, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.client != nil && c.now().Before(c.expires) {
		return c.client, nil
	}
	cfg, err := c.restConfig(ctx)
	if err != nil {
		return nil, err
	}
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return patience{rt} })
	client, err := c.newClientset(cfg)
	if err != nil {
		return nil, fmt.Errorf("building a client for %s: %w", c.describe, err)
	}
	c.client, c.expires = client, c.now().Add(c.ttl)
	return client, nil
}

// patience removes from a throttling answer (429 or 5xx) a Retry-After that
// the request cannot wait out before its context's deadline. client-go
// waits out a Retry-After and sends the request again, up to ten times
// within one call; one longer than the call may last would have it sleep
// until the deadline and fail with the bare deadline, the throttling
// untold. Without the header client-go returns the answer at once: the
// event fails, retryably, saying why, and Pub/Sub redelivers it later.
type patience struct{ base http.RoundTripper }

func (p patience) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := p.base.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	deadline, ok := req.Context().Deadline()
	if !ok {
		return resp, nil
	}
	// client-go reads Retry-After as whole seconds only.
	if seconds, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && time.Now().Add(time.Duration(seconds)*time.Second).After(deadline) {
		resp.Header.Del("Retry-After")
	}
	return resp, nil
}

// Forget drops the cached connection when err shows it may be broken: any
// failure below the Kubernetes API (TLS verification, connection refused,
// DNS, timeouts) and Unauthorized. A Kubernetes API answer such as NotFound
// or Conflict keeps it. Forget(nil) does nothing.
func (c *Connector) Forget(err error) {
	if err == nil || errors.Is(err, context.Canceled) {
		return
	}
	var status apierrors.APIStatus
	if errors.As(err, &status) && !apierrors.IsUnauthorized(err) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.client = nil
}

// gke builds rest configs from the Container API and ADC.
type gke struct {
	name     string
	endpoint Endpoint
	opts     Options

	// Guarded by the Connector's mutex, like everything restConfig touches.
	cm ClusterManager
}

func (g *gke) restConfig(ctx context.Context) (*rest.Config, error) {
	if g.cm == nil {
		cm, err := newClusterManager(g.opts.EmulatorHost)
		if err != nil {
			return nil, err
		}
		g.cm = cm
	}
	// A token source per connection: when the cluster refuses its token, or
	// a fetch hangs, the connection is dropped (see Forget) and the next one
	// starts afresh. It outlives this call: it must not hold the
	// invocation's context.
	ts := g.opts.TokenSource
	if ts == nil {
		fetch := context.WithValue(context.Background(), oauth2.HTTPClient, &http.Client{Timeout: tokenFetchTimeout})
		var err error
		if ts, err = google.DefaultTokenSource(fetch, cloudPlatformScope); err != nil {
			return nil, fmt.Errorf("finding application default credentials: %w", err)
		}
	}
	cl, err := g.cm.GetCluster(ctx, &containerpb.GetClusterRequest{Name: g.name})
	if err != nil {
		return nil, fmt.Errorf("getting cluster %s: %w", g.name, err)
	}
	host, err := address(g.name, cl, g.endpoint)
	if err != nil {
		return nil, err
	}
	// The IP endpoints present a certificate of the cluster CA. The
	// DNS-based endpoint is verified against the system roots (nil CAData):
	// the kubeconfig gcloud writes for it carries no CA.
	ca := g.opts.DNSRootCAs
	if g.endpoint != DNS {
		if ca, err = decodeCA(cl.GetMasterAuth().GetClusterCaCertificate()); err != nil {
			return nil, fmt.Errorf("cluster %s: %w", g.name, err)
		}
	}
	return &rest.Config{
		Host:            "https://" + host,
		TLSClientConfig: rest.TLSClientConfig{CAData: ca},
		UserAgent:       userAgent,
		WrapTransport: func(rt http.RoundTripper) http.RoundTripper {
			return &bearer{source: ts, base: rt}
		},
	}, nil
}

// bearer authorizes each request with a token from source, as
// oauth2.Transport does, except that it stops waiting for the token when the
// request's context ends: oauth2.TokenSource takes no context, and a hung
// token service would otherwise hold the call past its deadline.
type bearer struct {
	source oauth2.TokenSource
	base   http.RoundTripper
}

func (b *bearer) RoundTrip(req *http.Request) (*http.Response, error) {
	type answer struct {
		token *oauth2.Token
		err   error
	}
	got := make(chan answer, 1) // The fetch may finish after the request gave up.
	go func() {
		token, err := b.source.Token()
		got <- answer{token, err}
	}()
	var a answer
	select {
	case a = <-got:
	case <-req.Context().Done():
		a.err = req.Context().Err()
	}
	// A fetch that failed once the call's deadline had passed failed for
	// want of time: say so, as when the deadline's timer runs first. The
	// fetch's own timeout (tokenFetchTimeout) equals the rolling budget,
	// and a loaded machine can run one of the two timers late.
	if deadline, ok := req.Context().Deadline(); a.err != nil && ok && !time.Now().Before(deadline) {
		a.err = context.DeadlineExceeded
	}
	if a.err != nil {
		if req.Body != nil {
			req.Body.Close() // A RoundTripper closes the body, even on error.
		}
		return nil, fmt.Errorf("%w: %w", ErrNoToken, a.err)
	}
	req = req.Clone(req.Context()) // A RoundTripper must not modify the request.
	a.token.SetAuthHeader(req)
	return b.base.RoundTrip(req)
}

// decodeCA decodes GKE's base64 PEM CA bundle and checks it holds at least
// one certificate, so that a broken CA fails here, clearly, and not as a
// puzzling TLS error later.
func decodeCA(b64 string) ([]byte, error) {
	if b64 == "" {
		return nil, errors.New("no cluster CA certificate in masterAuth")
	}
	pemBytes, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, fmt.Errorf("cluster CA certificate is not base64: %w", err)
	}
	remaining, n := pemBytes, 0
	for {
		var block *pem.Block
		block, remaining = pem.Decode(remaining)
		if block == nil {
			break
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			return nil, fmt.Errorf("cluster CA certificate: %w", err)
		}
		n++
	}
	if n == 0 {
		return nil, errors.New("cluster CA certificate holds no PEM certificate")
	}
	return pemBytes, nil
}

func newClusterManager(emulatorHost string) (ClusterManager, error) {
	// The client lives as long as the instance: not the invocation's context.
	ctx := context.Background()
	var opts []option.ClientOption
	if emulatorHost != "" {
		var err error
		if opts, err = emulator.ClientOptions(emulatorHost); err != nil {
			return nil, fmt.Errorf("container api emulator %q: %w", emulatorHost, err)
		}
	}
	cm, err := container.NewClusterManagerClient(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("creating the container api client: %w", err)
	}
	return cm, nil
}
