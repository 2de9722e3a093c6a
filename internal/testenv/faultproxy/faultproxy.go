// Package faultproxy is a TLS reverse proxy to put in front of a
// kube-apiserver, that answers chosen requests with a fault instead of (or
// after) forwarding them: 429 with Retry-After, 5xx, an answer lost after
// the write landed, 401 for a token the cluster no longer accepts. Clients
// still verify TLS: the proxy presents a certificate of the cluster's CA,
// and the Container API stand-in names the proxy as the cluster's endpoint.
//
// Every request is counted (see Requests), so that a test can tell what a
// client did about a fault: how often client-go retried within a call, and
// how often the function was called again.
package faultproxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Fault is what the proxy does to the requests it matches.
type Fault struct {
	// Method matches the request's HTTP method (GET, PATCH, ...); "" matches
	// every method.
	Method string
	// Resource matches requests whose path has this segment (deployments,
	// services, ...); "" matches every path.
	Resource string
	// Times is how many matching requests get the fault; 0 means every one
	// until Clear.
	Times int
	// Status is the HTTP status answered, with a Kubernetes Status body
	// whose reason matches it, as the apiserver (429, 500, 503, 504) or a
	// front end before it answers.
	Status int
	// RetryAfter, when not zero, is sent as the Retry-After header, in
	// whole seconds (and as the Status's retryAfterSeconds).
	RetryAfter time.Duration
	// Landed forwards the request first and then answers the fault in place
	// of the apiserver's answer: the write happened, the client cannot know.
	Landed bool
}

func (f Fault) String() string {
	s := fmt.Sprintf("%d to %s %s", f.Status, or(f.Method, "any method"), or(f.Resource, "any resource"))
	if f.RetryAfter > 0 {
		s += fmt.Sprintf(" with Retry-After %s", f.RetryAfter)
	}
	if f.Landed {
		s += " after the write landed"
	}
	if f.Times > 0 {
		s += fmt.Sprintf(", %d times", f.Times)
	}
	return s
}

func or(s, alt string) string {
	if s == "" {
		return alt
	}
	return s
}

// matches reports whether the fault applies to r.
func (f Fault) matches(r *http.Request) bool {
	if f.Method != "" && !strings.EqualFold(f.Method, r.Method) {
		return false
	}
	return f.Resource == "" || slices.Contains(strings.Split(r.URL.Path, "/"), f.Resource)
}

// Request is one request the proxy received.
type Request struct {
	Method string
	// Path is the URL path, without the query.
	Path string
	// Watch says the request asked for a watch.
	Watch bool
	// Status is the status answered to the client.
	Status int
	// Faulted says the proxy answered with a fault (or a revoked token's
	// 401) rather than the apiserver's answer.
	Faulted bool
}

// Options configure Start.
type Options struct {
	// Upstream is the apiserver's URL, https://host:port.
	Upstream string
	// UpstreamCA is the PEM CA the apiserver's certificate is verified
	// against.
	UpstreamCA []byte
	// Certificate is what the proxy presents to its clients: one the
	// cluster's CA signed for the proxy's address (127.0.0.1).
	Certificate tls.Certificate
}

// Proxy is a running fault-injecting proxy. Stop it when done. Its methods
// are safe for concurrent use.
type Proxy struct {
	// Addr is the host:port the proxy listens on, 127.0.0.1:PORT.
	Addr string

	srv     *http.Server
	forward *httputil.ReverseProxy

	mu       sync.Mutex
	fault    *Fault
	served   int // requests given the current fault
	revoked  map[string]bool
	requests []Request
}

// landedKey marks a request whose answer is to be replaced by its fault.
type landedKey struct{}

// Start listens on a free loopback port and proxies to opts.Upstream until
// Stop.
func Start(opts Options) (*Proxy, error) {
	upstream, err := url.Parse(opts.Upstream)
	if err != nil || upstream.Scheme != "https" || upstream.Host == "" {
		return nil, fmt.Errorf("upstream %q is not an https URL", opts.Upstream)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(opts.UpstreamCA) {
		return nil, errors.New("upstream CA holds no PEM certificate")
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listening for the fault proxy: %w", err)
	}
	p := &Proxy{Addr: lis.Addr().String(), revoked: map[string]bool{}}
	p.forward = &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(upstream)
		},
		Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
			ForceAttemptHTTP2: true,
		},
		FlushInterval: -1, // Watches stream.
		ModifyResponse: func(resp *http.Response) error {
			f, ok := resp.Request.Context().Value(landedKey{}).(Fault)
			if !ok {
				return nil
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			body, header := answer(f, resp.Request)
			resp.StatusCode, resp.Status = f.Status, fmt.Sprintf("%d %s", f.Status, http.StatusText(f.Status))
			resp.Header = header
			resp.Body, resp.ContentLength = io.NopCloser(strings.NewReader(string(body))), int64(len(body))
			return nil
		},
	}
	p.srv = &http.Server{
		Handler:           p,
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{opts.Certificate},
			NextProtos:   []string{"h2", "http/1.1"},
			MinVersion:   tls.VersionTLS12,
		},
	}
	go p.srv.ServeTLS(lis, "", "") // ServeTLS returns when Stop is called.
	return p, nil
}

// Stop closes the proxy and its connections.
func (p *Proxy) Stop() { p.srv.Close() }

// Inject makes the proxy answer f to the requests it matches, from now on,
// in place of any fault before.
func (p *Proxy) Inject(f Fault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fault, p.served = &f, 0
}

// Clear ends the fault: every request is forwarded again.
func (p *Proxy) Clear() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fault = nil
}

// Revoke makes the proxy answer 401 Unauthorized, as the apiserver does, to
// every request that presents the bearer token, as a cluster refuses a
// token that expired or was revoked before its announced expiry.
func (p *Proxy) Revoke(token string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.revoked[token] = true
}

// Requests returns the requests the proxy received so far, in order.
func (p *Proxy) Requests() []Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.requests)
}

// ServeHTTP implements http.Handler.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec := Request{Method: r.Method, Path: r.URL.Path, Watch: r.URL.Query().Get("watch") == "true" || r.URL.Query().Get("watch") == "1"}
	p.mu.Lock()
	var fault *Fault
	token, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	switch {
	case token != "" && p.revoked[token]:
		fault = &Fault{Status: http.StatusUnauthorized}
	case p.fault != nil && p.fault.matches(r) && (p.fault.Times == 0 || p.served < p.fault.Times):
		p.served++
		f := *p.fault
		fault = &f
	}
	p.mu.Unlock()

	rw := &statusWriter{ResponseWriter: w}
	switch {
	case fault == nil:
		p.forward.ServeHTTP(rw, r)
	case fault.Landed:
		p.forward.ServeHTTP(rw, r.WithContext(context.WithValue(r.Context(), landedKey{}, *fault)))
		rec.Faulted = true
	default:
		body, header := answer(*fault, r)
		for k, v := range header {
			w.Header()[k] = v
		}
		rw.WriteHeader(fault.Status)
		rw.Write(body)
		rec.Faulted = true
	}
	rec.Status = rw.status
	p.mu.Lock()
	p.requests = append(p.requests, rec)
	p.mu.Unlock()
}

// answer is the header and Kubernetes Status body of fault f to r.
func answer(f Fault, r *http.Request) ([]byte, http.Header) {
	seconds := int((f.RetryAfter + time.Second - 1) / time.Second)
	var status metav1.Status
	if f.Status == http.StatusUnauthorized {
		status = apierrors.NewUnauthorized("Unauthorized").ErrStatus
	} else {
		verb := strings.ToLower(r.Method)
		status = apierrors.NewGenericServerResponse(f.Status, verb, schema.GroupResource{}, "", "injected by faultproxy: "+f.String(), seconds, false).ErrStatus
	}
	status.Kind, status.APIVersion = "Status", "v1"
	body, _ := json.Marshal(status) // A Status always encodes.
	header := http.Header{"Content-Type": {"application/json"}}
	if seconds > 0 {
		header.Set("Retry-After", strconv.Itoa(seconds))
	}
	return body, header
}

// statusWriter remembers the status written, and passes flushes on, which
// watches need.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
