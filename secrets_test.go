package onnewimage

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/onnewimage/onnewimage/internal/cluster"
	"github.com/onnewimage/onnewimage/internal/config"
	"github.com/onnewimage/onnewimage/internal/testenv/gkefake"
	"github.com/onnewimage/onnewimage/internal/trigger"
)

// tlsAPIServer is a TLS server with its own CA answering GET and PATCH of
// the Deployment prod/web, as an apiserver would, recording the
// Authorization header of every request.
type tlsAPIServer struct {
	*httptest.Server
	caPEM  []byte
	keyDER []byte // The server's private key, PKCS #8.

	mu    sync.Mutex
	auths []string
	image string
}

func startTLSAPIServer(t *testing.T) *tlsAPIServer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "apiserver"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	a := &tlsAPIServer{caPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyDER: keyDER, image: sampleRepo + ":previous"}
	a.Server = httptest.NewUnstartedServer(http.HandlerFunc(a.serve))
	a.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	a.StartTLS()
	t.Cleanup(a.Close)
	return a
}

func (a *tlsAPIServer) serve(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.auths = append(a.auths, r.Header.Get("Authorization"))
	w.Header().Set("Content-Type", "application/json")
	if r.URL.Path != "/apis/apps/v1/namespaces/prod/deployments/web" {
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}`)
		return
	}
	if r.Method == http.MethodPatch {
		var p struct {
			Spec struct {
				Template struct {
					Spec struct {
						Containers []struct{ Name, Image string }
					}
				}
			}
		}
		json.NewDecoder(r.Body).Decode(&p)
		for _, c := range p.Spec.Template.Spec.Containers {
			if c.Name == "web" && c.Image != "" {
				a.image = c.Image
			}
		}
	}
	json.NewEncoder(w).Encode(map[string]any{
		"kind": "Deployment", "apiVersion": "apps/v1",
		"metadata": map[string]any{"name": "web", "namespace": "prod", "resourceVersion": "7"},
		"spec": map[string]any{
			"selector": map[string]any{"matchLabels": map[string]string{"app": "web"}},
			"template": map[string]any{
				"metadata": map[string]any{"labels": map[string]string{"app": "web"}},
				"spec":     map[string]any{"containers": []any{map[string]string{"name": "web", "image": a.image}}},
			},
		},
	})
}

func (a *tlsAPIServer) authorizations() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.auths...)
}

// captureOutput collects everything written to the process's standard
// output and error while it runs: the functions framework writes a retried
// error there, beside the function's own log lines.
func captureOutput(t *testing.T, run func()) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, stderr := os.Stdout, os.Stderr
	os.Stdout, os.Stderr = w, w
	var out strings.Builder
	done := make(chan struct{})
	go func() { io.Copy(&out, r); close(done) }()
	func() {
		defer func() { os.Stdout, os.Stderr = stdout, stderr }()
		run()
	}()
	w.Close()
	<-done
	return out.String()
}

// TestSecretsStaySecret captures every line written during a full deploy
// (ADC through a token service, GetCluster, a real clientset over TLS with
// a bearer token), a TLS failure (an endpoint whose certificate the
// cluster CA did not sign) and a token service failure, and checks that no
// access token, private key, CA private key or Authorization header appears
// in any of them.
func TestSecretsStaySecret(t *testing.T) {
	const (
		email       = "onnewimage@demo.iam.gserviceaccount.com"
		accessToken = "ya29.secret-access-token-0123456789"
	)
	tokens, err := gkefake.StartTokenServer()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tokens.Stop)
	keyFile := filepath.Join(t.TempDir(), "key.json")
	if err := tokens.WriteServiceAccountKey(keyFile, email, accessToken); err != nil {
		t.Fatal(err)
	}
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", keyFile)
	var saKey struct {
		PrivateKey string `json:"private_key"`
	}
	raw, err := os.ReadFile(keyFile)
	if err != nil || json.Unmarshal(raw, &saKey) != nil {
		t.Fatalf("reading %s: %v", keyFile, err)
	}
	block, _ := pem.Decode([]byte(saKey.PrivateKey))
	api, impostor := startTLSAPIServer(t), startTLSAPIServer(t)

	// secrets are the strings no output may hold: the token, and long runs
	// of each private key's bytes as they would print (PEM base64, hex).
	secrets := map[string]string{"access token": accessToken, "Authorization header": "Bearer ", "the word Authorization": "Authorization"}
	for name, der := range map[string][]byte{"service-account key": block.Bytes, "apiserver CA key": api.keyDER, "impostor key": impostor.keyDER} {
		b64 := base64.StdEncoding.EncodeToString(der)
		at := len(b64)/2/64*64 + 8 // Inside one 64-character PEM line.
		secrets[name+" (base64)"] = b64[at : at+24]
		secrets[name+" (hex)"] = strings.ToLower(strings.TrimSpace(hexOf(der[len(der)/2 : len(der)/2+12])))
	}
	secrets["a PEM private key"] = "PRIVATE KEY"

	published := time.Now()
	build := sample(t, knative)
	// deliver sends the deployable sample and returns the HTTP status and
	// every line written meanwhile: the function's log and the process's
	// standard output and error.
	deliver := func(t *testing.T, build []byte) (int, string) {
		logs.takeText()
		var code int
		out := captureOutput(t, func() {
			resp, err := http.DefaultClient.Do(deliveries["binary CloudEvent"](t, envelope(build, "SUCCESS", published), published))
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			code = resp.StatusCode
		})
		return code, logs.takeText() + out
	}
	// Each retried failure is also written by the framework to stderr.
	const framework = "Function error: "
	// A forgery: the sample, claimed to be of a project that is not one of
	// BUILD_PROJECTS.
	forged := []byte(knativeWith(t, func(b map[string]any) { b["projectId"] = "evil-project" }))
	tests := []struct {
		name   string
		setup  func()
		code   int
		want   []string // What the output must hold, so that it is the output meant.
		forged bool     // Deliver the forgery instead of the sample.
	}{
		{"full deploy", func() { containerAPI.SetCluster(clusterName, api.Listener.Addr().String(), api.caPEM) },
			http.StatusOK, []string{`"outcome":"deployed"`}, false},
		{"TLS failure", func() { containerAPI.SetCluster(clusterName, impostor.Listener.Addr().String(), api.caPEM) },
			http.StatusInternalServerError, []string{`"outcome":"failed"`, "x509: certificate signed by unknown authority", framework}, false},
		{"token service failure", func() {
			containerAPI.SetCluster(clusterName, api.Listener.Addr().String(), api.caPEM)
			tokens.Fail(http.StatusInternalServerError)
		}, http.StatusInternalServerError, []string{`"outcome":"failed"`, "oauth2: cannot fetch token", framework}, false},
		{"refused forgery", func() { containerAPI.SetCluster(clusterName, api.Listener.Addr().String(), api.caPEM) },
			http.StatusOK, []string{`"outcome":"refused"`, `evil-project`}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Cleanup(func() { tokens.Fail(0) })
			cfg, err := config.Load(env())
			if err != nil {
				t.Fatal(err)
			}
			h := trigger.New(cfg, trigger.Options{Cluster: cluster.Options{EmulatorHost: containerAPI.Addr}})
			prev := handler
			handler = func() (*trigger.Handler, error) { return h, nil }
			t.Cleanup(func() { handler = prev })
			tt.setup()
			msg := build
			if tt.forged {
				msg = forged
			}
			code, out := deliver(t, msg)
			if code != tt.code {
				t.Errorf("HTTP %d, want %d", code, tt.code)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output does not hold %q:\n%s", w, out)
				}
			}
			for name, s := range secrets {
				if strings.Contains(out, s) {
					t.Errorf("output holds the %s (%q):\n%s", name, s, out)
				}
			}
		})
	}
	if got := api.authorizations(); len(got) == 0 || got[0] != "Bearer "+accessToken {
		t.Errorf("the apiserver saw Authorization %q; want the token in play, so that the test means something", got)
	}
	if got := impostor.authorizations(); len(got) != 0 {
		t.Errorf("the impostor received %d requests, want none", len(got))
	}
}

func hexOf(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}
