package trigger

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes/fake"

	"github.com/onnewimage/onnewimage/internal/rollout"
)

// FuzzHandle sends arbitrary CloudEvent data through the whole handler
// against a fake cluster. Nothing may panic; a message that is not deployed
// writes nothing; one dismissed as another build's (status, image) never
// reaches the cluster at all. It is seeded with every captured and
// constructed sample, each wrapped as Pub/Sub delivers it.
func FuzzHandle(f *testing.F) {
	for _, s := range seeds(f) {
		f.Add(s)
	}
	cfg := testConfig(f, nil)
	f.Fuzz(func(t *testing.T, data []byte) {
		cs := fake.NewClientset(webDeployment())
		conn := &connector{client: cs}
		h := New(cfg, Options{Connector: conn, Now: func() time.Time { return now }})
		rep, err := handleOne(t, h, Event{ID: "ce-1", Time: now, Data: data})
		if (err != nil) != (rep.Outcome == rollout.Failed) {
			t.Errorf("Handle() = %s %q with error %v", rep.Outcome, rep.Reason, err)
		}
		if rep.Outcome != rollout.Deployed {
			for _, a := range cs.Actions() {
				if !slices.Contains([]string{"get", "list", "watch"}, a.GetVerb()) {
					t.Errorf("%s %q wrote to the cluster: %s %s", rep.Outcome, rep.Reason, a.GetVerb(), a.GetResource().Resource)
				}
			}
		}
		dismissed := rep.Outcome == rollout.Skipped &&
			(strings.HasPrefix(rep.Reason, "build status is ") || strings.HasPrefix(rep.Reason, "no pushed image matches") || strings.HasPrefix(rep.Reason, "event published "))
		if dismissed && conn.calls != 0 {
			t.Errorf("%s %q, yet connected to the cluster", rep.Outcome, rep.Reason)
		}
	})
}

// seeds returns every sample under testdata/cloudbuild and testdata/builds,
// as it is and wrapped in a messagePublished envelope with its status.
func seeds(f *testing.F) [][]byte {
	var out [][]byte
	for _, dir := range []string{"cloudbuild", "builds"} {
		files, err := filepath.Glob(filepath.Join("..", "..", "testdata", dir, "*"))
		if err != nil {
			f.Fatal(err)
		}
		for _, file := range files {
			raw, err := os.ReadFile(file)
			if err != nil {
				f.Fatal(err)
			}
			if strings.HasSuffix(file, ".http") {
				_, raw, _ = bytes.Cut(raw, []byte("\n\n"))
			}
			out = append(out, raw)
			var keep [][]byte // JSONC: drop the `// ...` lines.
			for _, line := range bytes.Split(raw, []byte("\n")) {
				if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("//")) {
					keep = append(keep, line)
				}
			}
			build := bytes.Join(keep, []byte("\n"))
			var b struct{ ID, Status string }
			if json.Unmarshal(build, &b) != nil || b.ID == "" {
				continue // Not a Build (a request, a README).
			}
			env, _ := json.Marshal(map[string]any{"message": map[string]any{
				"attributes":  map[string]string{"buildId": b.ID, "status": b.Status},
				"data":        base64.StdEncoding.EncodeToString(build),
				"messageId":   "m-1",
				"publishTime": now.Add(-time.Minute).Format(time.RFC3339Nano),
			}})
			out = append(out, env)
		}
	}
	return out
}
