package trigger

import (
	"os"
	"testing"
	"time"

	"cloud.google.com/go/cloudbuild/apiv1/v2/cloudbuildpb"
	"google.golang.org/protobuf/encoding/protojson"
	"k8s.io/client-go/kubernetes/fake"
)

// BenchmarkDismissByAttribute measures the common case: a QUEUED or WORKING
// message, dismissed from its status attribute without decoding the Build
// and without a network call. Run: go test -bench . -benchmem ./internal/trigger
func BenchmarkDismissByAttribute(b *testing.B) {
	conn := &connector{}
	h := New(testConfig(b, nil), Options{Connector: conn, Now: func() time.Time { return now }})
	ev := event(b, readBuild(b, "web-1-success.json"), map[string]string{"buildId": "x", "status": "WORKING"}, now)
	b.ReportAllocs()
	for b.Loop() {
		if rep, _ := handleOne(b, h, ev); rep.Outcome != "skipped" {
			b.Fatal(rep)
		}
	}
	if conn.calls != 0 {
		b.Fatalf("connected %d times", conn.calls)
	}
}

// BenchmarkDecideSuccessOtherImage measures a SUCCESS build of another
// image: the Build is decoded and matched, and dismissed without a network
// call (the function's own redeploy build, other services' builds).
func BenchmarkDecideSuccessOtherImage(b *testing.B) {
	conn := &connector{}
	h := New(testConfig(b, nil), Options{Connector: conn, Now: func() time.Time { return now }})
	ev := event(b, readBuild(b, "lookalike-web-evil-success.json"), map[string]string{"status": "SUCCESS"}, now)
	b.ReportAllocs()
	for b.Loop() {
		if rep, _ := handleOne(b, h, ev); rep.Outcome != "skipped" {
			b.Fatal(rep)
		}
	}
}

// BenchmarkDuplicateDelivery measures a redelivered SUCCESS build already
// running: decode, match, one Get of the Deployment (fake), skip.
func BenchmarkDuplicateDelivery(b *testing.B) {
	conn := &connector{client: fake.NewClientset(webDeployment())}
	h := New(testConfig(b, nil), Options{Connector: conn, Now: func() time.Time { return now }})
	ev := event(b, readBuild(b, "web-1-success.json"), nil, now)
	if rep, err := handleOne(b, h, ev); err != nil || rep.Outcome != "deployed" {
		b.Fatal(rep, err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if rep, _ := handleOne(b, h, ev); rep.Outcome != "skipped" {
			b.Fatal(rep)
		}
	}
}

// BenchmarkDecision measures the whole decision for one message of each
// kind Cloud Build publishes, beside its floor: a plain protojson decode of
// the same message's Build, in the same run. Compare the two sub-benchmarks
// of each sample:
//
//	go test -run XXX -bench Decision -benchmem ./internal/trigger
//
// A message that is not SUCCESS must cost a small fraction of the floor (it
// is dismissed from its status attribute, before data is even base64-decoded)
// and make no network call; a SUCCESS build of ours decodes once and reads
// the Deployment once (here a fake clientset already running it).
func BenchmarkDecision(b *testing.B) {
	samples := []struct {
		name, file, status string
	}{
		{"queued", "../../testdata/cloudbuild/cloudbuild-build-QUEUED.kazuhito-m.json", "QUEUED"},
		{"working", "../../testdata/cloudbuild/cloudbuild-build-WORKING.kazuhito-m.json", "WORKING"},
		{"failure", "../../testdata/cloudbuild/cloudbuild-build-FAILURE.kazuhito-m.json", "FAILURE"},
		{"success-other-image", "../../testdata/cloudbuild/cloudbuild-build-SUCCESS-with-images.knative-gcp.lowercase.json", "SUCCESS"},
		{"success-ours", "../../testdata/builds/web-1-success.json", "SUCCESS"},
	}
	for _, s := range samples {
		build, err := os.ReadFile(s.file)
		if err != nil {
			b.Fatal(err)
		}
		conn := &connector{client: fake.NewClientset(webDeployment())}
		h := New(testConfig(b, nil), Options{Connector: conn, Now: func() time.Time { return now }})
		ev := event(b, build, map[string]string{"buildId": "b", "status": s.status}, now)
		if s.name == "success-ours" {
			if rep, err := handleOne(b, h, ev); err != nil || rep.Outcome != "deployed" {
				b.Fatal(rep, err)
			}
		}
		conn.calls = 0
		b.Run(s.name+"/handler", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if rep, err := handleOne(b, h, ev); err != nil || rep.Outcome != "skipped" {
					b.Fatal(rep, err)
				}
			}
			if s.name != "success-ours" && conn.calls != 0 {
				b.Fatalf("a %s message connected to the cluster %d times", s.status, conn.calls)
			}
		})
		b.Run(s.name+"/protojson-floor", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(build, new(cloudbuildpb.Build)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
