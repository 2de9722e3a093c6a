package cloudlog

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestLineShape(t *testing.T) {
	var buf bytes.Buffer
	New(&buf).LogAttrs(t.Context(), LevelNotice, "deployed web", slog.String("buildId", "b1"), slog.Group("g", slog.String("level", "kept")))
	var got map[string]any
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatalf("not one JSON line: %q", buf.String())
	}
	delete(got, "time")
	want := map[string]any{"severity": "NOTICE", "message": "deployed web", "buildId": "b1", "g": map[string]any{"level": "kept"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("log line (-want +got):\n%s", diff)
	}
}

func TestSeverity(t *testing.T) {
	for l, want := range map[slog.Level]string{
		slog.LevelDebug: "DEBUG", slog.LevelInfo: "INFO", LevelNotice: "NOTICE",
		slog.LevelWarn: "WARNING", slog.LevelError: "ERROR", slog.LevelError + 4: "ERROR",
	} {
		if got := Severity(l); got != want {
			t.Errorf("Severity(%v) = %s, want %s", l, got, want)
		}
	}
}
