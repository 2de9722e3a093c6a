package sandbox

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/onnewimage/onnewimage/internal/testenv/gkefake"
)

// TestE2EDeploysThroughThePrivateAndDNSEndpoints deploys through
// ENDPOINT=private and ENDPOINT=dns on the local cluster. Each time the
// Container API stand-in answers only the chosen endpoint, so that choosing
// any other fails. For dns, the cluster CA it answers is an unrelated one and
// the function's system roots (SSL_CERT_FILE, which Go reads on Linux) hold
// the apiserver's CA: only verifying against the system roots succeeds, as in
// GKE. Then a cluster lacking the chosen endpoint fails without retry.
func TestE2EDeploysThroughThePrivateAndDNSEndpoints(t *testing.T) {
	sb, ctx := start(t, Options{})
	all := sb.Endpoints()
	roots := filepath.Join(t.TempDir(), "roots.pem")
	if err := os.WriteFile(roots, sb.Cluster.CAData, 0o600); err != nil {
		t.Fatal(err)
	}
	template := load(t, "web-1-success.json")

	for _, tt := range []struct {
		endpoint  string
		endpoints gkefake.Endpoints
		clusterCA []byte
		env       map[string]string
	}{
		{"private", gkefake.Endpoints{Private: all.Private}, sb.Cluster.CAData, nil},
		{"dns", gkefake.Endpoints{DNS: all.DNS}, unrelatedCA(t), map[string]string{"SSL_CERT_FILE": roots}},
	} {
		sb.ContainerAPI.SetClusterEndpoints(ClusterName(), tt.endpoints, tt.clusterCA)
		env := map[string]string{"ENDPOINT": tt.endpoint}
		for k, v := range tt.env {
			env[k] = v
		}
		if err := sb.StartFunction(ctx, env); err != nil {
			t.Fatal(err)
		}
		b := FreshBuild(template)
		if line := publish(ctx, t, sb, b); line["outcome"] != "deployed" || line["image"] != pinned(b) {
			t.Fatalf("ENDPOINT=%s: %v", tt.endpoint, line)
		}
		waitLive(ctx, t, sb, pinned(b))
	}

	// The function still asks for dns; the cluster now has only IP endpoints.
	sb.ContainerAPI.SetClusterEndpoints(ClusterName(), gkefake.Endpoints{Public: all.Public, Private: all.Private}, sb.Cluster.CAData)
	if err := sb.StartFunction(ctx, map[string]string{"ENDPOINT": "dns", "SSL_CERT_FILE": roots}); err != nil {
		t.Fatal(err)
	}
	before := getWeb(ctx, t, sb)
	line := publish(ctx, t, sb, FreshBuild(template))
	reason, _ := line["reason"].(string)
	if line["outcome"] != "failed" || line["retry"] != false || line["severity"] != "ERROR" ||
		!strings.Contains(reason, "cluster "+ClusterName()+" has no DNS-based endpoint; enable it") {
		t.Errorf("a cluster without the DNS-based endpoint: %v, want failed, not retried, naming the cluster and the fix", line)
	}
	if after := getWeb(ctx, t, sb); after.ResourceVersion != before.ResourceVersion {
		t.Errorf("the deployment changed (resourceVersion %s→%s)", before.ResourceVersion, after.ResourceVersion)
	}
}

// unrelatedCA returns a CA certificate (PEM) that signed nothing the local
// cluster serves.
func unrelatedCA(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "unrelated"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
