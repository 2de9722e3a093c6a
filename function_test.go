package onnewimage

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/GoogleCloudPlatform/functions-framework-go/funcframework"
	"github.com/google/go-cmp/cmp"
	"golang.org/x/oauth2"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"

	"github.com/onnewimage/onnewimage/internal/buildevent"
	"github.com/onnewimage/onnewimage/internal/cloudlog"
	"github.com/onnewimage/onnewimage/internal/cluster"
	"github.com/onnewimage/onnewimage/internal/config"
	"github.com/onnewimage/onnewimage/internal/kube"
	"github.com/onnewimage/onnewimage/internal/kube/kubetest"
	"github.com/onnewimage/onnewimage/internal/testenv/fakekube"
	"github.com/onnewimage/onnewimage/internal/testenv/gkefake"
	"github.com/onnewimage/onnewimage/internal/trigger"
)

// The knative sample's image, as its lower-cased copy names it: the
// repository the tests deploy. The captured sample itself names the redacted
// gcr.io/PROJECT_ID/quickstart-image, which no registry could hold.
const (
	sampleRepo   = "gcr.io/project-id/quickstart-image"
	redactedRepo = "gcr.io/PROJECT_ID/quickstart-image"
	knative      = "cloudbuild-build-SUCCESS-with-images.knative-gcp.lowercase.json"
	sampleDigest = "sha256:0c7566925d2cd9997a977887b43a9b751a83e7f14301584779f3986eb62c81c6"
	clusterName  = "projects/demo/locations/us-central1/clusters/prod"
)

var (
	// functionURL is where the functions framework serves onNewImage.
	functionURL string
	// logs collects the function's log lines.
	logs lockedBuffer
	// containerAPI plays the Container API for every test.
	containerAPI *gkefake.ContainerServer
	// cloudBuild plays the Cloud Build API for every test: envelope
	// registers each build it wraps, as Cloud Build stores a build before
	// it announces it.
	cloudBuild *gkefake.CloudBuildServer
)

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// takeText returns the text written since the last call, as written.
func (b *lockedBuffer) takeText() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	defer b.buf.Reset()
	return b.buf.String()
}

// take returns the log lines written since the last call.
func (b *lockedBuffer) take() []map[string]any {
	b.mu.Lock()
	defer b.mu.Unlock()
	var lines []map[string]any
	sc := bufio.NewScanner(&b.buf)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			panic(fmt.Sprintf("log line is not JSON: %q", sc.Text()))
		}
		lines = append(lines, m)
	}
	b.buf.Reset()
	return lines
}

func TestMain(m *testing.M) {
	logger = cloudlog.New(&logs)
	var err error
	if containerAPI, err = gkefake.StartContainerServer(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if cloudBuild, err = gkefake.StartCloudBuildServer(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	addr := lis.Addr().String()
	lis.Close()
	os.Setenv("FUNCTION_TARGET", "onNewImage")
	host, port, _ := net.SplitHostPort(addr)
	go func() {
		fmt.Fprintln(os.Stderr, funcframework.StartHostPort(host, port))
		os.Exit(1)
	}()
	for deadline := time.Now().Add(10 * time.Second); ; {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			fmt.Fprintln(os.Stderr, "the functions framework did not listen on", addr)
			os.Exit(1)
		}
		time.Sleep(20 * time.Millisecond)
	}
	functionURL = "http://" + addr + "/"
	code := m.Run()
	containerAPI.Stop()
	cloudBuild.Stop()
	os.Exit(code)
}

// env is the configuration the tests run with.
func env(extra ...string) func(string) string {
	e := map[string]string{
		"PROJECT": "demo", "LOCATION": "us-central1", "CLUSTER": "prod",
		"NAMESPACE": "prod", "DEPLOYMENT": "web", "CONTAINER": "web", "IMAGE": sampleRepo,
		"CLOUDBUILD_EMULATOR_HOST": cloudBuild.Addr, "BUILD_PROJECTS": buildProjects,
	}
	for i := 0; i < len(extra); i += 2 {
		e[extra[i]] = extra[i+1]
	}
	return func(k string) string { return e[k] }
}

// target is a fake cluster behind the test Container API: the real GKE
// connector runs, and the clientset it builds is a fake one after checking
// the rest config it was given.
type target struct {
	client   *fake.Clientset
	caPEM    []byte
	endpoint string
}

func newTarget(t *testing.T) *target {
	t.Helper()
	labels := map[string]string{"app": "web"}
	tg := &target{
		// Writes bump the resourceVersion and a stale one conflicts, as on
		// the API server: the plain fake lets concurrent deploys overwrite
		// each other, which TestBurst caught as an older build left live.
		client: fakekube.NewClientset(t, &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "prod", ResourceVersion: "7"},
			Spec: appsv1.DeploymentSpec{
				Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: labels},
					Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: sampleRepo + ":previous"}}},
				},
			},
		}),
		caPEM:    testCA(t),
		endpoint: "203.0.113.10", // A documentation address: nothing dials it.
	}
	containerAPI.SetCluster(clusterName, tg.endpoint, tg.caPEM)
	return tg
}

// use makes the function serve with cfg against tg, as a fresh instance.
func use(t *testing.T, getenv func(string) string, tg *target) {
	t.Helper()
	cfg, err := config.Load(getenv)
	if err != nil {
		t.Fatal(err)
	}
	h := trigger.New(cfg, trigger.Options{Cluster: cluster.Options{
		EmulatorHost: containerAPI.Addr,
		TokenSource:  staticToken{},
		NewClientset: func(rc *rest.Config) (kube.Interface, error) {
			if rc.Host != "https://"+tg.endpoint || !bytes.Equal(rc.CAData, tg.caPEM) || rc.Insecure {
				t.Errorf("rest config host %q, insecure %v, CA from GetCluster: %v", rc.Host, rc.Insecure, bytes.Equal(rc.CAData, tg.caPEM))
			}
			return kubetest.Adapt(tg.client), nil
		},
	}})
	prev := handler
	handler = func() (*trigger.Handler, error) { return h, nil }
	t.Cleanup(func() { handler = prev })
}

// buildProjects are the projects of the captured builds the tests deploy.
const buildProjects = "project-id,demo-project"

// envelope is the messagePublished data for a build, as delivered; without
// publishTime when published is zero. A build that decodes is registered
// with the Cloud Build API stand-in first.
func envelope(build []byte, status string, published time.Time) map[string]any {
	if b, err := buildevent.DecodeBuild(build); err == nil {
		cloudBuild.Register(b)
	}
	msg := map[string]any{
		"attributes": map[string]string{"buildId": buildID(build), "status": status},
		"data":       base64.StdEncoding.EncodeToString(build),
		"messageId":  "4242",
		"message_id": "4242",
	}
	if !published.IsZero() {
		msg["publishTime"] = published.Format(time.RFC3339Nano)
		msg["publish_time"] = published.Format(time.RFC3339Nano)
	}
	return map[string]any{"message": msg, "subscription": "projects/demo/subscriptions/eventarc-onnewimage"}
}

// withTime sets m[key] to t, unless t is zero.
func withTime(m map[string]any, key string, t time.Time) map[string]any {
	if !t.IsZero() {
		m[key] = t.Format(time.RFC3339Nano)
	}
	return m
}

func buildID(build []byte) string {
	var b struct{ ID string }
	json.Unmarshal(build, &b)
	return b.ID
}

// deliveries builds the HTTP requests each delivery shape makes for one
// message; a zero published time leaves the shape's time out.
var deliveries = map[string]func(t *testing.T, env map[string]any, published time.Time) *http.Request{
	"binary CloudEvent": func(t *testing.T, env map[string]any, published time.Time) *http.Request {
		r := post(t, "application/json", env)
		r.Header.Set("ce-id", "4242")
		r.Header.Set("ce-source", "//pubsub.googleapis.com/projects/demo/topics/cloud-builds")
		r.Header.Set("ce-specversion", "1.0")
		r.Header.Set("ce-type", "google.cloud.pubsub.topic.v1.messagePublished")
		if !published.IsZero() {
			r.Header.Set("ce-time", published.Format(time.RFC3339Nano))
		}
		return r
	},
	"structured CloudEvent": func(t *testing.T, env map[string]any, published time.Time) *http.Request {
		return post(t, "application/cloudevents+json", withTime(map[string]any{
			"specversion": "1.0", "id": "4242", "type": "google.cloud.pubsub.topic.v1.messagePublished",
			"source":          "//pubsub.googleapis.com/projects/demo/topics/cloud-builds",
			"datacontenttype": "application/json", "data": env,
		}, "time", published))
	},
	"1st-gen background event": func(t *testing.T, env map[string]any, published time.Time) *http.Request {
		msg := env["message"].(map[string]any)
		return post(t, "application/json", map[string]any{
			"context": withTime(map[string]any{
				"eventId": "4242", "eventType": "google.pubsub.topic.publish",
				"resource": map[string]any{"service": "pubsub.googleapis.com", "name": "projects/demo/topics/cloud-builds", "type": "type.googleapis.com/google.pubsub.v1.PubsubMessage"},
			}, "timestamp", published),
			"data": map[string]any{"@type": "type.googleapis.com/google.pubsub.v1.PubsubMessage", "attributes": msg["attributes"], "data": msg["data"]},
		})
	},
	"raw push body": func(t *testing.T, env map[string]any, _ time.Time) *http.Request {
		return post(t, "application/json", env)
	},
}

func post(t *testing.T, contentType string, body any) *http.Request {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	r, err := http.NewRequest(http.MethodPost, functionURL, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("Content-Type", contentType)
	return r
}

// send delivers r to the function and returns the HTTP status and the one
// log line it wrote.
func send(t *testing.T, r *http.Request) (int, map[string]any) {
	t.Helper()
	logs.take()
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	lines := logs.take()
	if len(lines) != 1 {
		t.Fatalf("function wrote %d log lines, want exactly 1: %v", len(lines), lines)
	}
	return resp.StatusCode, lines[0]
}

// sample reads a captured build, dropping the `// ...` lines its authors
// used to elide parts of JSONC files.
func sample(t *testing.T, name string) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", "cloudbuild", name))
	if err != nil {
		t.Fatal(err)
	}
	var keep []string
	for _, line := range strings.Split(string(raw), "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "//") {
			keep = append(keep, line)
		}
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, []byte(strings.Join(keep, "\n"))); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return compact.Bytes()
}

func TestEverySampleThroughEveryDelivery(t *testing.T) {
	deployed := sampleRepo + ":latest@" + sampleDigest
	samples := []struct {
		file, status     string
		severity, reason string
		outcome, image   string
	}{
		{"cloudbuild-build-QUEUED.kazuhito-m.json", "QUEUED", "INFO", "build status is QUEUED, not SUCCESS", "skipped", ""},
		{"cloudbuild-build-WORKING.kazuhito-m.json", "WORKING", "INFO", "build status is WORKING, not SUCCESS", "skipped", ""},
		{"cloudbuild-build-FAILURE.kazuhito-m.json", "FAILURE", "INFO", "build status is FAILURE, not SUCCESS", "skipped", ""},
		{"cloudbuild-build-SUCCESS-noimages.kazuhito-m.json", "SUCCESS", "INFO", `no pushed image matches "` + sampleRepo + `" (pushed: none)`, "skipped", ""},
		{"cloudbuild-build-SUCCESS-with-images-and-trigger.vial.jsonc", "SUCCESS", "INFO",
			`no pushed image matches "` + sampleRepo + `" (pushed: us.gcr.io/django-vaccinateca/vaccinate, us.gcr.io/django-vaccinateca/vaccinate:latest)`, "skipped", ""},
		{"cloudbuild-build-SUCCESS-with-images.knative-gcp.json", "SUCCESS", "INFO",
			`no pushed image matches "` + sampleRepo + `"; ignored ` + redactedRepo + `: upper case in a repository path, which no registry accepts (pushed: ` +
				redactedRepo + `, ` + redactedRepo + `:latest)`, "skipped", ""},
		{knative, "SUCCESS", "NOTICE",
			"web rolls from " + sampleRepo + ":previous to " + deployed, "deployed", deployed},
	}
	for _, s := range samples {
		for shape, request := range deliveries {
			t.Run(s.file+"/"+shape, func(t *testing.T) {
				tg := newTarget(t)
				use(t, env(), tg)
				published := time.Now().Add(-time.Minute)
				build := sample(t, s.file)
				code, line := send(t, request(t, envelope(build, s.status, published), published))
				if code != http.StatusOK {
					t.Errorf("HTTP status %d, want 200 (acknowledged)", code)
				}
				// A message dismissed before any target is concerned names none.
				target, name := "", ""
				if s.outcome == "deployed" {
					target, name = "prod/web:web", "default"
				}
				want := map[string]any{
					"severity": s.severity, "buildId": buildID(build), "status": s.status, "image": s.image,
					"target": target, "targetName": name, "outcome": s.outcome, "reason": s.reason, "messageId": "4242",
				}
				for k := range line {
					if _, ok := want[k]; !ok {
						delete(line, k) // message, time, previousImage: checked elsewhere.
					}
				}
				if diff := cmp.Diff(want, line); diff != "" {
					t.Errorf("log line (-want +got):\n%s", diff)
				}
				d, err := tg.client.AppsV1().Deployments("prod").Get(t.Context(), "web", metav1.GetOptions{})
				if err != nil {
					t.Fatal(err)
				}
				wantImage := sampleRepo + ":previous"
				if s.outcome == "deployed" {
					wantImage = deployed
				}
				if got := d.Spec.Template.Spec.Containers[0].Image; got != wantImage {
					t.Errorf("deployment runs %q, want %q", got, wantImage)
				}
			})
		}
	}
}

// TestRecordedRequests sends the shared sample requests byte for byte: the
// binary CloudEvent (with both messageId and message_id) and the 1st-gen
// background event. They were published in 2020, so MAX_EVENT_AGE first
// drops them; raised, it lets the build through: the captured one names the
// redacted gcr.io/PROJECT_ID, never a pushed repository, and the lower-cased
// copy (the README's local example) deploys.
func TestRecordedRequests(t *testing.T) {
	redacted := `no pushed image matches "` + sampleRepo + `"; ignored ` + redactedRepo + `: upper case`
	requests := []struct {
		file            string
		outcome, reason string
	}{
		{"cloudevent-pubsub-binary-request.http", "skipped", redacted},
		{"legacy-gen1-background-event-body.json", "skipped", redacted},
		{"cloudevent-pubsub-binary-request.lowercase.http", "deployed", "web rolls from "},
	}
	for _, rq := range requests {
		t.Run(rq.file, func(t *testing.T) {
			tg := newTarget(t)
			use(t, env(), tg)
			_, line := send(t, recorded(t, rq.file))
			if line["outcome"] != "skipped" || !strings.HasPrefix(line["reason"].(string), "event published ") {
				t.Errorf("with MAX_EVENT_AGE=1h: %v %q, want skipped as too old", line["outcome"], line["reason"])
			}
			use(t, env("MAX_EVENT_AGE", "87600h"), tg)
			_, line = send(t, recorded(t, rq.file))
			if line["outcome"] != rq.outcome || !strings.HasPrefix(line["reason"].(string), rq.reason) || line["buildId"] != "BUILD_ID" {
				t.Errorf("with MAX_EVENT_AGE=10y: %v; want %s %q...", line, rq.outcome, rq.reason)
			}
			if rq.outcome == "deployed" && line["image"] != sampleRepo+":latest@"+sampleDigest {
				t.Errorf("deployed %v, want %s", line["image"], sampleRepo+":latest@"+sampleDigest)
			}
		})
	}
}

// recorded reads a request from testdata/cloudbuild: an HTTP request (.http)
// or a background event body (.json).
func recorded(t *testing.T, file string) *http.Request {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", "cloudbuild", file))
	if err != nil {
		t.Fatal(err)
	}
	out := post(t, "application/json", nil)
	body := raw
	if strings.HasSuffix(file, ".http") {
		head, rest, _ := bytes.Cut(raw, []byte("\n\n"))
		r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(append(head, "\n\n"...))))
		if err != nil {
			t.Fatal(err)
		}
		out.Header, body = r.Header, rest
	}
	out.Body, out.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
	return out
}

// TestNoPublishTime delivers a SUCCESS build with no time at all through
// every shape: neither message.publishTime nor the CloudEvent's time. Such an
// event cannot be bounded by MAX_EVENT_AGE, so it is refused: acknowledged,
// not retried, one ERROR line. A raw push body never arrives so: the
// functions framework stamps it with the time of delivery.
func TestNoPublishTime(t *testing.T) {
	build := sample(t, knative)
	refused := map[string]any{"severity": "ERROR", "outcome": "failed", "retry": false,
		"reason": "event has no publish time: neither message.publishTime nor the CloudEvent time is set, so MAX_EVENT_AGE cannot bound its redeliveries"}
	want := map[string]map[string]any{
		"binary CloudEvent":        refused,
		"structured CloudEvent":    refused,
		"1st-gen background event": refused,
		"raw push body":            {"severity": "NOTICE", "outcome": "deployed", "retry": nil, "reason": "web rolls from " + sampleRepo + ":previous to " + sampleRepo + ":latest@" + sampleDigest},
	}
	for shape, request := range deliveries {
		t.Run(shape, func(t *testing.T) {
			tg := newTarget(t)
			use(t, env(), tg)
			code, line := send(t, request(t, envelope(build, "SUCCESS", time.Time{}), time.Time{}))
			if code != http.StatusOK {
				t.Errorf("HTTP status %d, want 200 (acknowledged)", code)
			}
			got := map[string]any{"severity": line["severity"], "outcome": line["outcome"], "retry": line["retry"], "reason": line["reason"]}
			if diff := cmp.Diff(want[shape], got); diff != "" {
				t.Errorf("log line (-want +got):\n%s", diff)
			}
		})
	}
}

func TestWarmInstanceReusesTheConnection(t *testing.T) {
	tg := newTarget(t)
	use(t, env(), tg)
	before := containerAPI.Calls()
	published := time.Now()
	build := sample(t, knative)
	for i, want := range []string{"deployed", "skipped", "skipped"} {
		_, line := send(t, deliveries["binary CloudEvent"](t, envelope(build, "SUCCESS", published), published))
		if line["outcome"] != want {
			t.Errorf("delivery %d: %v %q, want %s", i, line["outcome"], line["reason"], want)
		}
		if i > 0 && line["reason"] != "already running "+sampleDigest {
			t.Errorf("delivery %d: reason %q, want the duplicate named", i, line["reason"])
		}
	}
	if got := containerAPI.Calls() - before; got != 1 {
		t.Errorf("GetCluster called %d times for 3 deliveries on a warm instance, want 1", got)
	}
}

func TestRetryableFailureAsksForRedelivery(t *testing.T) {
	tg := newTarget(t)
	use(t, env(), tg)
	containerAPI.SetCluster(clusterName, "", nil) // A cluster still provisioning: no endpoint yet.
	published := time.Now()
	build := sample(t, knative)
	code, line := send(t, deliveries["raw push body"](t, envelope(build, "SUCCESS", published), published))
	if code < 500 || line["severity"] != "ERROR" || line["outcome"] != "failed" || line["retry"] != true {
		t.Errorf("HTTP %d, log %v; want a 5xx so Pub/Sub redelivers, and an ERROR line with retry=true", code, line)
	}
}

func TestPermanentFailureIsAcknowledged(t *testing.T) {
	tg := newTarget(t)
	use(t, env("CONTAINER", "api"), tg) // No such container in the Deployment.
	published := time.Now()
	build := sample(t, knative)
	code, line := send(t, deliveries["binary CloudEvent"](t, envelope(build, "SUCCESS", published), published))
	if code != http.StatusOK || line["severity"] != "ERROR" || line["retry"] != false ||
		!strings.Contains(line["reason"].(string), `has no container "api" (it has containers "web")`) {
		t.Errorf("HTTP %d, log %v; want 200 and an ERROR line naming the missing container", code, line)
	}
}

func TestInvalidConfigurationIsReportedPerEvent(t *testing.T) {
	prev := handler
	t.Cleanup(func() { handler = prev })
	handler = func() (*trigger.Handler, error) {
		return nil, fmt.Errorf("%w: CLUSTER is required; IMAGE is required", config.ErrInvalid)
	}
	published := time.Now()
	for i := 0; i < 2; i++ {
		code, line := send(t, deliveries["raw push body"](t, envelope([]byte(`{"id":"x"}`), "SUCCESS", published), published))
		if code != http.StatusOK || line["severity"] != "ERROR" || !strings.Contains(line["message"].(string), "CLUSTER is required; IMAGE is required") {
			t.Errorf("event %d: HTTP %d, %v; want 200 and an ERROR naming every problem", i, code, line)
		}
	}
}

func TestGarbageIsAcknowledged(t *testing.T) {
	tg := newTarget(t)
	use(t, env(), tg)
	for name, body := range map[string]string{
		"not a pubsub message": `{"hello":"world","context":null}`,
		"data not base64":      `{"message":{"data":"%%%","messageId":"1"},"subscription":"s"}`,
	} {
		t.Run(name, func(t *testing.T) {
			r := post(t, "application/json", nil)
			r.Body, r.ContentLength = io.NopCloser(strings.NewReader(body)), int64(len(body))
			r.Header.Set("ce-id", "1")
			r.Header.Set("ce-source", "//pubsub.googleapis.com/projects/demo/topics/cloud-builds")
			r.Header.Set("ce-specversion", "1.0")
			r.Header.Set("ce-type", "google.cloud.pubsub.topic.v1.messagePublished")
			code, line := send(t, r)
			if code != http.StatusOK || line["outcome"] != "failed" || line["retry"] != false {
				t.Errorf("HTTP %d, %v; want an acknowledged, non-retried failure", code, line)
			}
		})
	}
}

// staticToken stands in for Application Default Credentials: the fake
// clientset never sends it anywhere.
type staticToken struct{}

func (staticToken) Token() (*oauth2.Token, error) { return &oauth2.Token{AccessToken: "t"}, nil }

// testCA returns a fresh self-signed CA certificate in PEM.
func testCA(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "cluster-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
