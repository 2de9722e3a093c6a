package localcluster

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestRequests reads an audit log as the apiserver writes it: only the
// user's requests, once each (at RequestReceived), and a last line still
// being written is left for the next read.
func TestRequests(t *testing.T) {
	dir := t.TempDir()
	flags, err := auditFiles(dir, []string{"fn@example.iam.gserviceaccount.com", "other@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	policy, err := os.ReadFile(filepath.Join(dir, "audit-policy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if want := `users: ["fn@example.iam.gserviceaccount.com", "other@example.com"]`; !strings.Contains(string(policy), want) {
		t.Errorf("policy does not name the users (%s):\n%s", want, policy)
	}
	if !strings.Contains(strings.Join(flags, " "), "--audit-log-mode=blocking-strict") {
		t.Errorf("flags %v: want blocking-strict, so that a request is logged before it is answered", flags)
	}
	lines := []string{
		`{"auditID":"1","stage":"RequestReceived","verb":"get","user":{"username":"fn@example.iam.gserviceaccount.com"},"objectRef":{"resource":"deployments","namespace":"default","name":"web"},"requestReceivedTimestamp":"2026-11-25T12:00:00.000001Z"}`,
		`{"auditID":"2","stage":"RequestReceived","verb":"update","user":{"username":"other@example.com"},"objectRef":{"resource":"deployments","subresource":"status","namespace":"default","name":"web"},"requestReceivedTimestamp":"2026-11-25T12:00:00.000002Z"}`,
		`{"auditID":"1","stage":"ResponseComplete","verb":"get","user":{"username":"fn@example.iam.gserviceaccount.com"},"objectRef":{"resource":"deployments","namespace":"default","name":"web"},"requestReceivedTimestamp":"2026-11-25T12:00:00.000001Z"}`,
		`{"auditID":"3","stage":"RequestReceived","verb":"patch","user":{"username":"fn@example.iam.gserviceaccount.com"},"objectRef":{"resource":"deployments","namespace":"default","name":"web"},"requestReceivedTimestamp":"2026-11-25T12:00:00.000003Z"}`,
		`{"auditID":"4","stage":"RequestRec`,
	}
	if err := os.WriteFile(filepath.Join(dir, "audit.log"), []byte(strings.Join(lines, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	c := &Cluster{Dir: dir}
	got, err := c.Requests("fn@example.iam.gserviceaccount.com")
	if err != nil {
		t.Fatal(err)
	}
	at := func(us int) time.Time { return time.Date(2026, 11, 25, 12, 0, 0, us*1000, time.UTC) }
	want := []Request{
		{Verb: "get", Resource: "deployments", Namespace: "default", Name: "web", ID: "1", At: at(1)},
		{Verb: "patch", Resource: "deployments", Namespace: "default", Name: "web", ID: "3", At: at(3)},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Requests() (-want +got):\n%s", diff)
	}
	if got, want := want[1].String(), "patch deployments default/web"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if got, want := (Request{Verb: "update", Resource: "deployments", Subresource: "status", Namespace: "default", Name: "web"}).String(), "update deployments/status default/web"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}
