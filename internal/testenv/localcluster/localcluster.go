// Package localcluster runs a real Kubernetes control plane on loopback for
// end-to-end tests: etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler and kwok, which plays the kubelet of fake nodes so that pods
// become Running and Ready without containers.
//
// The programs are built from Go modules on first use (see EnsureBinaries)
// and cached, so later runs start a cluster in seconds. Each cluster lives in
// its own temporary directory, listens on random ports of 127.0.0.1 and
// authenticates clients with a client certificate (the admin) or with bearer
// tokens (Options.Tokens), authorised by RBAC.
package localcluster

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"embed"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/client-go/util/retry"
)

// NeverReadyLabel is the label that keeps a pod unready: kwok takes a pod
// labelled NeverReadyLabel=true to phase Running with running containers, but
// its Ready condition stays False forever, as if its readiness probe failed.
const NeverReadyLabel = "onnewimage.dev/never-ready"

// RestartLabel is the label that crashes a pod once: a second after kwok
// takes a pod labelled RestartLabel=true to phase Running, each of its
// containers is recorded as restarted (restartCount 1, the last run
// terminated with exit code 1, reason Error, and the message its annotation
// TerminationMessageAnnotation holds), then runs again. It plays a release
// whose containers crash.
const RestartLabel = "onnewimage.dev/restart"

// Labels and an annotation that decide how kwok ends a Job's pod. A Job's
// pod completes (exit 0) once running, unless labelled FailLabel=true: then
// each of its containers exits 1 with the termination message its
// annotation TerminationMessageAnnotation holds, and the pod fails. A pod
// labelled HoldLabel=true keeps running until the label is removed, then
// completes.
const (
	FailLabel                    = "onnewimage.dev/fail"
	HoldLabel                    = "onnewimage.dev/hold"
	TerminationMessageAnnotation = "onnewimage.dev/termination-message"
)

const (
	// serviceCIDR is the cluster's service range; serviceIP is its first
	// address, taken by the kubernetes service.
	serviceCIDR = "10.96.0.0/16"
	serviceIP   = "10.96.0.1"
	// podCIDR is where kwok allocates pod IPs.
	podCIDR = "10.244.0.0/16"
	// notReadyTaint is added to every new node by admission; the node
	// lifecycle controller, which does not run here, would remove it.
	notReadyTaint = "node.kubernetes.io/not-ready"
)

// stages holds the kwok Stage objects: kwok's "fast" node and pod stages plus
// pod-never-ready.yaml, which implements NeverReadyLabel, pod-fail.yaml,
// which implements FailLabel (pod-complete.yaml leaves FailLabel and
// HoldLabel pods alone), and pod-restart.yaml, which implements RestartLabel.
//
//go:embed stages/*.yaml
var stages embed.FS

// Options configures Start.
type Options struct {
	// Tokens maps bearer tokens to the user names they authenticate as,
	// for example a Google service-account email. Those users belong to no
	// group but system:authenticated, so they can do nothing until bound to
	// a role.
	Tokens map[string]string
	// Log receives progress lines (building, start-up times). Nil discards.
	Log io.Writer
	// CacheDir holds the built binaries; empty means DefaultCacheDir.
	CacheDir string
	// Nodes is the number of kwok nodes to create; zero means one.
	Nodes int
}

// Cluster is a running local control plane. Stop it when done.
type Cluster struct {
	// Host is the apiserver URL, https://127.0.0.1:PORT.
	Host string
	// CAData is the PEM encoded CA that signed the apiserver's certificate.
	CAData []byte
	// Dir is the temporary directory holding data, certificates and logs
	// (one .log file per component). Stop removes it.
	Dir string
	// AdminKubeconfig is the path of a kubeconfig file that authenticates as
	// a cluster administrator (group system:masters), for kubectl.
	AdminKubeconfig string

	pki           *pki
	log           io.Writer
	apiserverBin  string
	apiserverArgs []string
	probe         *http.Client // trusts CAData, presents the admin certificate

	mu        sync.Mutex
	procs     []*process // in start order
	apiserver *process
	stopped   bool
	stopErr   error
}

// Start builds the binaries if needed (see EnsureBinaries), starts a control
// plane and kwok nodes on loopback, and waits until a pod could run on them.
// ctx bounds the start-up only; the cluster runs until Stop. On error,
// everything already started is stopped again.
func Start(ctx context.Context, opts Options) (_ *Cluster, err error) {
	log := opts.Log
	if log == nil {
		log = io.Discard
	}
	nodes := opts.Nodes
	if nodes <= 0 {
		nodes = 1
	}
	binDir, err := EnsureBinaries(ctx, opts.CacheDir, log)
	if err != nil {
		return nil, err
	}
	begin := time.Now()

	dir, err := os.MkdirTemp("", "localcluster-")
	if err != nil {
		return nil, fmt.Errorf("creating cluster directory: %w", err)
	}
	c := &Cluster{Dir: dir, log: log}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()

	if c.pki, err = newPKI(); err != nil {
		return nil, err
	}
	c.CAData = c.pki.caCert
	files, err := c.pki.write(dir)
	if err != nil {
		return nil, err
	}
	tokenFile := filepath.Join(dir, "tokens.csv")
	if err := writeTokenFile(tokenFile, opts.Tokens); err != nil {
		return nil, err
	}
	ports, err := freePorts(5)
	if err != nil {
		return nil, err
	}
	etcdPort, peerPort, apiPort, cmPort, schedPort := ports[0], ports[1], ports[2], ports[3], ports[4]
	c.Host = "https://127.0.0.1:" + strconv.Itoa(apiPort)

	c.AdminKubeconfig = filepath.Join(dir, "admin.kubeconfig")
	if err := c.writeKubeconfig(c.AdminKubeconfig, &clientcmdapi.AuthInfo{
		ClientCertificateData: c.pki.adminCert,
		ClientKeyData:         c.pki.adminKey,
	}); err != nil {
		return nil, err
	}
	cert, err := tls.X509KeyPair(c.pki.adminCert, c.pki.adminKey)
	if err != nil {
		return nil, fmt.Errorf("loading admin certificate: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.CAData)
	c.probe = &http.Client{
		Timeout: 2 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}},
		},
	}

	// etcd.
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(etcdPort)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(peerPort)
	etcd, err := c.start(ctx, "etcd", filepath.Join(binDir, "etcd"), []string{
		"--name=localcluster",
		"--data-dir=" + filepath.Join(dir, "etcd"),
		"--listen-client-urls=" + etcdURL,
		"--advertise-client-urls=" + etcdURL,
		"--listen-peer-urls=" + peerURL,
		"--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=localcluster=" + peerURL,
		"--unsafe-no-fsync=true", // the data is thrown away anyway
	}, nil)
	if err != nil {
		return nil, err
	}
	if err := c.awaitPart(ctx, etcd, time.Now(), func(ctx context.Context) error {
		body, err := c.get(ctx, etcdURL+"/health")
		if err == nil && !bytes.Contains(body, []byte(`"health":"true"`)) {
			err = fmt.Errorf("etcd unhealthy: %s", body)
		}
		return err
	}); err != nil {
		return nil, err
	}

	// kube-apiserver.
	c.apiserverBin = filepath.Join(binDir, "kube-apiserver")
	c.apiserverArgs = []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(apiPort),
		"--cert-dir=" + filepath.Join(dir, "apiserver"),
		"--tls-cert-file=" + files["server.crt"],
		"--tls-private-key-file=" + files["server.key"],
		"--client-ca-file=" + files["ca.crt"],
		"--token-auth-file=" + tokenFile,
		"--authorization-mode=RBAC",
		"--service-account-key-file=" + files["sa.pub"],
		"--service-account-signing-key-file=" + files["sa.key"],
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-cluster-ip-range=" + serviceCIDR,
		// The kubernetes service would get endpoint 127.0.0.1, which
		// validation refuses (loopback); nothing in the cluster needs it.
		"--endpoint-reconciler-type=none",
		"--enable-priority-and-fairness=false",
		"--profiling=false",
	}
	audit, err := auditFiles(dir, slices.Collect(maps.Values(opts.Tokens)))
	if err != nil {
		return nil, err
	}
	c.apiserverArgs = append(c.apiserverArgs, audit...)
	apiStart := time.Now()
	api, err := c.start(ctx, "kube-apiserver", c.apiserverBin, c.apiserverArgs, nil)
	if err != nil {
		return nil, err
	}
	c.apiserver = api
	if err := c.awaitPart(ctx, api, apiStart, c.apiserverReady); err != nil {
		return nil, err
	}
	client, err := kubernetes.NewForConfig(c.AdminConfig())
	if err != nil {
		return nil, fmt.Errorf("creating admin client: %w", err)
	}
	// The Gateway API's CRDs are created now and awaited last: the API
	// server establishes them while the other parts start.
	crdStart := time.Now()
	dyn, err := dynamic.NewForConfig(c.AdminConfig())
	if err != nil {
		return nil, fmt.Errorf("creating admin client: %w", err)
	}
	crds, err := installGatewayAPI(ctx, dyn)
	if err != nil {
		return nil, err
	}

	// Controllers, scheduler and kwok start together; each is awaited below.
	others := time.Now()
	kubeconfigFlags := []string{
		"--kubeconfig=" + c.AdminKubeconfig,
		"--authentication-kubeconfig=" + c.AdminKubeconfig,
		"--authorization-kubeconfig=" + c.AdminKubeconfig,
		"--leader-elect=false",
		"--bind-address=127.0.0.1",
		"--tls-cert-file=" + files["server.crt"],
		"--tls-private-key-file=" + files["server.key"],
	}
	cm, err := c.start(ctx, "kube-controller-manager", filepath.Join(binDir, "kube-controller-manager"), append([]string{
		// garbagecollector removes the ReplicaSets and pods of a deleted
		// Deployment; clusterrole-aggregation fills the admin, edit and view
		// roles, which are empty without it; job runs release gates.
		"--controllers=deployment,replicaset,garbagecollector,clusterrole-aggregation,job",
		"--secure-port=" + strconv.Itoa(cmPort),
		"--kube-api-qps=100",
		"--kube-api-burst=200",
	}, kubeconfigFlags...), nil)
	if err != nil {
		return nil, err
	}
	sched, err := c.start(ctx, "kube-scheduler", filepath.Join(binDir, "kube-scheduler"), append([]string{
		"--secure-port=" + strconv.Itoa(schedPort),
	}, kubeconfigFlags...), nil)
	if err != nil {
		return nil, err
	}
	kwokConfig := filepath.Join(dir, "kwok.yaml")
	if err := writeStages(kwokConfig); err != nil {
		return nil, err
	}
	kwok, err := c.start(ctx, "kwok", filepath.Join(binDir, "kwok"), []string{
		"--kubeconfig=" + c.AdminKubeconfig,
		"--config=" + kwokConfig,
		"--manage-all-nodes=true",
		"--cidr=" + podCIDR,
	}, []string{
		// Keep kwok away from a user's ~/.kwok configuration.
		"KWOK_WORKDIR=" + filepath.Join(dir, "kwok"),
	})
	if err != nil {
		return nil, err
	}

	if err := c.EnsureNamespace(ctx, metav1.NamespaceDefault); err != nil {
		return nil, err
	}
	names := make([]string, nodes)
	for i := range names {
		names[i] = "kwok-node-" + strconv.Itoa(i)
		if err := createNode(ctx, client, names[i]); err != nil {
			return nil, err
		}
	}

	cmURL := "https://127.0.0.1:" + strconv.Itoa(cmPort) + "/healthz"
	if err := c.awaitPart(ctx, cm, others, func(ctx context.Context) error {
		if _, err := c.get(ctx, cmURL); err != nil {
			return err
		}
		return aggregated(ctx, client, "admin")
	}); err != nil {
		return nil, err
	}
	schedURL := "https://127.0.0.1:" + strconv.Itoa(schedPort) + "/healthz"
	if err := c.awaitPart(ctx, sched, others, func(ctx context.Context) error {
		_, err := c.get(ctx, schedURL)
		return err
	}); err != nil {
		return nil, err
	}
	if err := c.awaitPart(ctx, kwok, others, func(ctx context.Context) error {
		for _, name := range names {
			if err := nodeReady(ctx, client, name); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return nil, err
	}
	for _, name := range names {
		if err := untaint(ctx, client, name); err != nil {
			return nil, err
		}
	}
	crdCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := gatewayAPIEstablished(crdCtx, dyn, crds); err != nil {
		return nil, fmt.Errorf("installing the gateway api crds: %w", err)
	}
	fmt.Fprintf(log, "localcluster: %d gateway api crds established %s after their creation began\n", len(crds), time.Since(crdStart).Round(time.Millisecond))
	fmt.Fprintf(log, "localcluster: cluster at %s ready in %s (logs in %s)\n", c.Host, time.Since(begin).Round(time.Millisecond), dir)
	return c, nil
}

// start runs one component, its log going to Dir/NAME.log.
func (c *Cluster) start(ctx context.Context, name, bin string, args, env []string) (*process, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return nil, fmt.Errorf("starting %s: cluster stopped", name)
	}
	p, err := startProcess(name, bin, args, env, filepath.Join(c.Dir, name+".log"))
	if err != nil {
		return nil, err
	}
	c.procs = append(c.procs, p)
	return p, nil
}

// awaitPart polls ready until it succeeds, then logs how long p took since
// since. It fails early if p exits, and then quotes p's log.
func (c *Cluster) awaitPart(ctx context.Context, p *process, since time.Time, ready func(context.Context) error) error {
	if err := await(ctx, p, ready); err != nil {
		return fmt.Errorf("starting %s: %w", p.name, p.failure(err))
	}
	fmt.Fprintf(c.log, "localcluster: %s ready in %s\n", p.name, time.Since(since).Round(time.Millisecond))
	return nil
}

// await polls ready every 100ms until it returns nil, p exits, or a minute
// passes (or ctx ends); the error then says what was last wrong.
func await(ctx context.Context, p *process, ready func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		err := ready(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("last check: %w", err)
		case <-ctx.Done():
			return fmt.Errorf("%w, last check: %w", ctx.Err(), err)
		case <-tick.C:
		}
	}
}

// get fetches url with the probe client and fails unless the status is 200.
func (c *Cluster) get(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.probe.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", url, resp.Status, bytes.TrimSpace(body))
	}
	return body, nil
}

func (c *Cluster) apiserverReady(ctx context.Context) error {
	_, err := c.get(ctx, c.Host+"/readyz")
	return err
}

// AdminConfig returns a client configuration that authenticates as a
// cluster administrator with a client certificate.
func (c *Cluster) AdminConfig() *rest.Config {
	return &rest.Config{
		Host: c.Host,
		TLSClientConfig: rest.TLSClientConfig{
			CAData:   c.CAData,
			CertData: c.pki.adminCert,
			KeyData:  c.pki.adminKey,
		},
		QPS:   100,
		Burst: 200,
	}
}

// TokenConfig returns a client configuration that verifies the apiserver
// with CAData and authenticates with the bearer token.
func (c *Cluster) TokenConfig(token string) *rest.Config {
	return &rest.Config{
		Host:            c.Host,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: c.CAData},
	}
}

// WriteKubeconfig writes to path a kubeconfig file whose user authenticates
// with the bearer token.
func (c *Cluster) WriteKubeconfig(path, token string) error {
	return c.writeKubeconfig(path, &clientcmdapi.AuthInfo{Token: token})
}

func (c *Cluster) writeKubeconfig(path string, user *clientcmdapi.AuthInfo) error {
	const name = "localcluster"
	cfg := clientcmdapi.Config{
		Clusters:       map[string]*clientcmdapi.Cluster{name: {Server: c.Host, CertificateAuthorityData: c.CAData}},
		AuthInfos:      map[string]*clientcmdapi.AuthInfo{name: user},
		Contexts:       map[string]*clientcmdapi.Context{name: {Cluster: name, AuthInfo: name, Namespace: metav1.NamespaceDefault}},
		CurrentContext: name,
	}
	if err := clientcmd.WriteToFile(cfg, path); err != nil {
		return fmt.Errorf("writing kubeconfig %s: %w", path, err)
	}
	return nil
}

// EnsureNamespace creates the namespace name and its default ServiceAccount,
// which pods need, unless they exist. No controller creates service accounts
// in this cluster.
func (c *Cluster) EnsureNamespace(ctx context.Context, name string) error {
	client, err := kubernetes.NewForConfig(c.AdminConfig())
	if err != nil {
		return fmt.Errorf("creating admin client: %w", err)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if _, err := client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating namespace %s: %w", name, err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: name}}
	if _, err := client.CoreV1().ServiceAccounts(name).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating service account %s/default: %w", name, err)
	}
	return nil
}

// RestartAPIServer kills the apiserver, waits downtime, and starts it again
// on the same port with the same certificates and data, returning once it is
// ready. Clients see connection errors meanwhile, as in a control-plane
// upgrade. Watches resume with client-go's back-off, so the controllers may
// need a few more seconds before they act on new changes.
func (c *Cluster) RestartAPIServer(ctx context.Context, downtime time.Duration) error {
	c.mu.Lock()
	old, stopped := c.apiserver, c.stopped
	c.mu.Unlock()
	if stopped {
		return errors.New("restarting kube-apiserver: cluster stopped")
	}
	// A graceful shutdown waits for open watches for seconds; an abrupt
	// stop is quicker and just as good an outage for clients.
	old.kill()
	<-old.done
	fmt.Fprintf(c.log, "localcluster: kube-apiserver killed, restarting in %s\n", downtime)

	select {
	case <-ctx.Done():
		return fmt.Errorf("restarting kube-apiserver: %w", ctx.Err())
	case <-time.After(downtime):
	}
	start := time.Now()
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return errors.New("restarting kube-apiserver: cluster stopped")
	}
	p, err := startProcess("kube-apiserver", c.apiserverBin, c.apiserverArgs, nil, old.logPath)
	if err != nil {
		c.mu.Unlock()
		return fmt.Errorf("restarting kube-apiserver: %w", err)
	}
	c.apiserver = p
	for i, q := range c.procs {
		if q == old {
			c.procs[i] = p
		}
	}
	c.mu.Unlock()
	return c.awaitPart(ctx, p, start, c.apiserverReady)
}

// Stop kills every component, waits for them to exit and removes Dir. It is
// idempotent and safe for concurrent use, for example from t.Cleanup and a
// signal handler at once; later calls return the first call's result.
func (c *Cluster) Stop() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return c.stopErr
	}
	c.stopped = true
	// Nothing is kept, so there is no point in a graceful shutdown.
	for _, p := range c.procs {
		p.kill()
	}
	for _, p := range c.procs {
		<-p.done
	}
	if err := os.RemoveAll(c.Dir); err != nil {
		c.stopErr = fmt.Errorf("removing cluster directory: %w", err)
	}
	return c.stopErr
}

// writeTokenFile writes the apiserver's static token file: one CSV record
// of token, user name and uid per token, sorted for a stable file.
func writeTokenFile(path string, tokens map[string]string) error {
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	keys := make([]string, 0, len(tokens))
	for token := range tokens {
		keys = append(keys, token)
	}
	sort.Strings(keys)
	for _, token := range keys {
		user := tokens[token]
		if token == "" || user == "" || strings.ContainsAny(token, ",\"\n") {
			return fmt.Errorf("invalid token for user %q: empty user, or empty token or one with a comma, quote or newline", user)
		}
		if err := w.Write([]string{token, user, user}); err != nil {
			return fmt.Errorf("encoding token file: %w", err)
		}
	}
	w.Flush()
	if err := w.Error(); err != nil {
		return fmt.Errorf("encoding token file: %w", err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		return fmt.Errorf("writing token file: %w", err)
	}
	return nil
}

// writeStages joins the embedded kwok stages into one configuration file.
func writeStages(path string) error {
	names, err := fs.Glob(stages, "stages/*.yaml")
	if err != nil {
		return fmt.Errorf("listing kwok stages: %w", err)
	}
	var buf bytes.Buffer
	for _, name := range names {
		b, err := stages.ReadFile(name)
		if err != nil {
			return fmt.Errorf("reading kwok stage %s: %w", name, err)
		}
		buf.WriteString("---\n")
		buf.Write(b)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("writing kwok configuration: %w", err)
	}
	return nil
}

// freePorts returns n distinct free TCP ports on 127.0.0.1. Another process
// could take one before it is used; on loopback that is rare enough.
func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("finding a free port: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// createNode registers a node for kwok to manage.
func createNode(ctx context.Context, client kubernetes.Interface, name string) error {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{
		Name: name,
		Labels: map[string]string{
			"kubernetes.io/hostname": name,
			"kubernetes.io/os":       "linux",
			"kubernetes.io/arch":     "amd64",
			"type":                   "kwok",
		},
		Annotations: map[string]string{"kwok.x-k8s.io/node": "fake"},
	}}
	if _, err := client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating node %s: %w", name, err)
	}
	return nil
}

// nodeReady returns nil once the node's Ready condition is True.
func nodeReady(ctx context.Context, client kubernetes.Interface, name string) error {
	node, err := client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("getting node %s: %w", name, err)
	}
	for _, cond := range node.Status.Conditions {
		if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
			return nil
		}
	}
	return fmt.Errorf("node %s not ready", name)
}

// aggregated returns nil once the aggregated cluster role has rules.
func aggregated(ctx context.Context, client kubernetes.Interface, role string) error {
	r, err := client.RbacV1().ClusterRoles().Get(ctx, role, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("getting cluster role %s: %w", role, err)
	}
	if len(r.Rules) == 0 {
		return fmt.Errorf("cluster role %s not aggregated yet", role)
	}
	return nil
}

// untaint removes the not-ready taint that admission put on the node.
func untaint(ctx context.Context, client kubernetes.Interface, name string) error {
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		node, err := client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		var keep []corev1.Taint
		for _, t := range node.Spec.Taints {
			if t.Key != notReadyTaint {
				keep = append(keep, t)
			}
		}
		if len(keep) == len(node.Spec.Taints) {
			return nil
		}
		node.Spec.Taints = keep
		_, err = client.CoreV1().Nodes().Update(ctx, node, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("removing taint %s from node %s: %w", notReadyTaint, name, err)
	}
	return nil
}
