package trigger

import (
	"context"
	"os"
	"testing"
	"time"

	"cloud.google.com/go/cloudbuild/apiv1/v2/cloudbuildpb"
	"google.golang.org/protobuf/encoding/protojson"
)

// TestDismissalCost holds a dismissal to a tenth of a plain protojson decode
// of the same message's Build, in allocations (deterministic, unlike time;
// BenchmarkDecision measures the time), and to no cluster call: a message
// whose status attribute is not SUCCESS is dismissed from the envelope's
// attributes, before its data is decoded or checked.
func TestDismissalCost(t *testing.T) {
	samples := []struct{ file, status string }{
		{"cloudbuild-build-QUEUED.kazuhito-m.json", "QUEUED"},
		{"cloudbuild-build-WORKING.kazuhito-m.json", "WORKING"},
		{"cloudbuild-build-FAILURE.kazuhito-m.json", "FAILURE"},
	}
	for _, s := range samples {
		t.Run(s.status, func(t *testing.T) {
			build, err := os.ReadFile("../../testdata/cloudbuild/" + s.file)
			if err != nil {
				t.Fatal(err)
			}
			conn := &connector{}
			h := New(testConfig(t, nil), Options{Connector: conn, Now: func() time.Time { return now }})
			ev := event(t, build, map[string]string{"buildId": "b", "status": s.status}, now)
			var got Report
			handler := testing.AllocsPerRun(20, func() {
				h.Dispatch(context.Background(), ev, func(rep Report) { got = rep })
			})
			floor := testing.AllocsPerRun(20, func() {
				if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(build, new(cloudbuildpb.Build)); err != nil {
					t.Fatal(err)
				}
			})
			if got.Outcome != "skipped" || got.Reason != "build status is "+s.status+", not SUCCESS" {
				t.Errorf("Dispatch() reported %s %q, want skipped", got.Outcome, got.Reason)
			}
			if handler > floor/10 {
				t.Errorf("a %s message costs %.0f allocations, more than a tenth of the %.0f of decoding its Build", s.status, handler, floor)
			}
			if conn.calls != 0 {
				t.Errorf("connected to the cluster %d times, want 0", conn.calls)
			}
		})
	}
}
