// Package gkefake plays the two Google services the function talks to before
// it reaches a cluster: the Container API (GetCluster, over gRPC) and
// Google's OAuth2 token service (reached through a service-account key file
// named by GOOGLE_APPLICATION_CREDENTIALS). With both, the function's
// production code path runs unchanged against a local cluster: it finds the
// endpoint (public, private or DNS-based) and CA through GetCluster, and authenticates with a bearer token
// obtained through Application Default Credentials.
//
// It also plays the Cloud Build API (GetBuild, over gRPC), which the
// function asks to confirm each build a message announces
// (CloudBuildServer): it answers for the builds registered with it, and can
// be forged.
//
// Every server listens on loopback and can be told to fail for a while, to
// test that the function retries and recovers.
package gkefake

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"cloud.google.com/go/container/apiv1/containerpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// ContainerServer implements the GetCluster method of the Container API's
// ClusterManager service over loopback gRPC.
type ContainerServer struct {
	containerpb.UnimplementedClusterManagerServer

	// Addr is the host:port the server listens on: the value for
	// CONTAINER_EMULATOR_HOST.
	Addr string

	grpc *grpc.Server

	mu       sync.Mutex
	clusters map[string]*containerpb.Cluster
	calls    int
	fault    error
}

// StartContainerServer listens on a free loopback port and serves until Stop.
func StartContainerServer() (*ContainerServer, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listening for the container api: %w", err)
	}
	s := &ContainerServer{Addr: lis.Addr().String(), grpc: grpc.NewServer(), clusters: map[string]*containerpb.Cluster{}}
	containerpb.RegisterClusterManagerServer(s.grpc, s)
	go s.grpc.Serve(lis) // Serve returns when Stop is called.
	return s, nil
}

// Stop stops the server and closes its connections.
func (s *ContainerServer) Stop() { s.grpc.Stop() }

// SetCluster makes GetCluster(name) answer with endpoint (host:port, no
// scheme) and the PEM CA certificate caPEM, as GKE does: base64 in
// masterAuth.clusterCaCertificate. The cluster has no private or DNS-based
// endpoint (see SetClusterEndpoints).
func (s *ContainerServer) SetCluster(name, endpoint string, caPEM []byte) {
	s.SetClusterEndpoints(name, Endpoints{Public: endpoint}, caPEM)
}

// Endpoints are the control-plane endpoints of a cluster, each a host:port
// (no scheme). An empty one is one the cluster lacks.
type Endpoints struct {
	// Public is the cluster's endpoint (Cluster.endpoint).
	Public string
	// Private is its private IP endpoint, answered in both fields GKE fills:
	// controlPlaneEndpointsConfig.ipEndpointsConfig.privateEndpoint and the
	// deprecated privateClusterConfig.privateEndpoint.
	Private string
	// DNS is its DNS-based endpoint, a hostname and port, answered with
	// allowExternalTraffic true (controlPlaneEndpointsConfig.dnsEndpointConfig).
	DNS string
}

// SetClusterEndpoints makes GetCluster(name) answer with the endpoints e and
// the PEM CA certificate caPEM, shaped as GKE answers them.
func (s *ContainerServer) SetClusterEndpoints(name string, e Endpoints, caPEM []byte) {
	c := &containerpb.Cluster{
		Name:       name[strings.LastIndexByte(name, '/')+1:],
		Endpoint:   e.Public,
		Status:     containerpb.Cluster_RUNNING,
		MasterAuth: &containerpb.MasterAuth{ClusterCaCertificate: base64.StdEncoding.EncodeToString(caPEM)},
	}
	if e.Private != "" {
		c.PrivateClusterConfig = &containerpb.PrivateClusterConfig{PrivateEndpoint: e.Private, PublicEndpoint: e.Public}
		c.ControlPlaneEndpointsConfig = &containerpb.ControlPlaneEndpointsConfig{
			IpEndpointsConfig: &containerpb.ControlPlaneEndpointsConfig_IPEndpointsConfig{
				Enabled:              proto.Bool(true),
				EnablePublicEndpoint: proto.Bool(e.Public != ""),
				PublicEndpoint:       e.Public,
				PrivateEndpoint:      e.Private,
			},
		}
	}
	if e.DNS != "" {
		if c.ControlPlaneEndpointsConfig == nil {
			c.ControlPlaneEndpointsConfig = &containerpb.ControlPlaneEndpointsConfig{}
		}
		c.ControlPlaneEndpointsConfig.DnsEndpointConfig = &containerpb.ControlPlaneEndpointsConfig_DNSEndpointConfig{
			Endpoint:             e.DNS,
			AllowExternalTraffic: proto.Bool(true),
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clusters[name] = c
}

// Fail makes every GetCluster answer err (a gRPC status error, e.g.
// status.Error(codes.Unavailable, "...")) until Fail(nil).
func (s *ContainerServer) Fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fault = err
}

// Calls returns how many GetCluster calls the server has answered.
func (s *ContainerServer) Calls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

// GetCluster implements containerpb.ClusterManagerServer.
func (s *ContainerServer) GetCluster(_ context.Context, req *containerpb.GetClusterRequest) (*containerpb.Cluster, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if s.fault != nil {
		return nil, s.fault
	}
	c, ok := s.clusters[req.GetName()]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "cluster %q not found", req.GetName())
	}
	return c, nil
}

// TokenServer plays Google's OAuth2 token endpoint for service-account keys:
// it verifies the JWT-bearer assertion against the key it issued and answers
// with an access token that the local apiserver maps to the service account.
type TokenServer struct {
	// URL is the token endpoint (the key file's token_uri).
	URL string

	srv *http.Server

	mu     sync.Mutex
	keys   map[string]*rsa.PublicKey // client email → public key
	tokens map[string]string         // client email → access token
	issued int
	fault  int           // HTTP status to answer with, 0 for none
	delay  time.Duration // how long a token request waits (see Delay)
}

// StartTokenServer listens on a free loopback port and serves until Stop.
func StartTokenServer() (*TokenServer, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listening for the token service: %w", err)
	}
	t := &TokenServer{
		URL:    "http://" + lis.Addr().String() + "/token",
		keys:   map[string]*rsa.PublicKey{},
		tokens: map[string]string{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /token", t.serveToken)
	t.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go t.srv.Serve(lis) // Serve returns when Stop is called.
	return t, nil
}

// Stop stops the server.
func (t *TokenServer) Stop() { t.srv.Close() }

// Fail makes every token request answer with the HTTP status code until
// Fail(0).
func (t *TokenServer) Fail(code int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.fault = code
}

// Issued returns how many access tokens the server has handed out.
func (t *TokenServer) Issued() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.issued
}

// WriteServiceAccountKey generates an RSA key for the service account email,
// writes a service-account key file (the format Google issues, with token_uri
// pointing at this server) to path, and makes the server answer that
// account's assertions with accessToken.
func (t *TokenServer) WriteServiceAccountKey(path, email, accessToken string) error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return fmt.Errorf("generating a key for %s: %w", email, err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("encoding the key for %s: %w", email, err)
	}
	project := "local"
	if at := strings.IndexByte(email, '@'); at >= 0 {
		project, _, _ = strings.Cut(email[at+1:], ".")
	}
	file, err := json.MarshalIndent(map[string]string{
		"type":           "service_account",
		"project_id":     project,
		"private_key_id": "local",
		"private_key":    string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email":   email,
		"client_id":      "1",
		"token_uri":      t.URL,
	}, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, file, 0o600); err != nil {
		return fmt.Errorf("writing the key file for %s: %w", email, err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.keys[email] = &key.PublicKey
	t.tokens[email] = accessToken
	return nil
}

func (t *TokenServer) serveToken(w http.ResponseWriter, r *http.Request) {
	t.hold(r.Context())
	t.mu.Lock()
	fault := t.fault
	t.mu.Unlock()
	if fault != 0 {
		http.Error(w, `{"error":"backend_error","error_description":"injected fault"}`, fault)
		return
	}
	if r.PostFormValue("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
		tokenError(w, "unsupported_grant_type", "want a JWT-bearer grant")
		return
	}
	email, err := t.verify(r.PostFormValue("assertion"))
	if err != nil {
		tokenError(w, "invalid_grant", err.Error())
		return
	}
	t.mu.Lock()
	token := t.tokens[email]
	t.issued++
	t.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{ // The client sees a short body.
		"access_token": token,
		"token_type":   "Bearer",
		"expires_in":   3600,
	})
}

// verify checks an RS256 JWT assertion's signature and claims and returns
// the service account that signed it.
func (t *TokenServer) verify(assertion string) (string, error) {
	parts := strings.Split(assertion, ".")
	if len(parts) != 3 {
		return "", errors.New("assertion is not a JWT")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", fmt.Errorf("assertion payload: %w", err)
	}
	var claims struct {
		Iss   string `json:"iss"`
		Scope string `json:"scope"`
		Aud   string `json:"aud"`
		Exp   int64  `json:"exp"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return "", fmt.Errorf("assertion claims: %w", err)
	}
	t.mu.Lock()
	pub := t.keys[claims.Iss]
	t.mu.Unlock()
	if pub == nil {
		return "", fmt.Errorf("unknown service account %q", claims.Iss)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return "", fmt.Errorf("assertion signature: %w", err)
	}
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], sig); err != nil {
		return "", fmt.Errorf("assertion signature: %w", err)
	}
	if claims.Aud != t.URL {
		return "", fmt.Errorf("assertion audience %q, want %q", claims.Aud, t.URL)
	}
	if time.Unix(claims.Exp, 0).Before(time.Now()) {
		return "", errors.New("assertion expired")
	}
	if claims.Scope == "" {
		return "", errors.New("assertion asks for no scope")
	}
	return claims.Iss, nil
}

func tokenError(w http.ResponseWriter, code, desc string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusBadRequest)
	json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc}) // The client sees a short body.
}
