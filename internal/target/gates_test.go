package target

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestDecodeGates(t *testing.T) {
	tests := []struct {
		name, keys string
		gates      []string
		timeout    time.Duration
		problems   []string
	}{
		{"a list", "\n    gates: [web-migrate, web-smoke]\n    gateTimeout: 2m", []string{"web-migrate", "web-smoke"}, 2 * time.Minute, nil},
		{"a block list, default timeout", "\n    gates:\n      - web-migrate", []string{"web-migrate"}, DefaultGateTimeout, nil},
		{"a string", "\n    gates: web-migrate", nil, 0, []string{
			`targets.yaml:7: target web: gates: "web-migrate" is a string, want a list of strings`}},
		{"empty", "\n    gates: []", nil, 0, []string{
			"targets.yaml:7: target web: gates: is empty: list at least one name or leave the key out"}},
		{"a number", "\n    gates: [web, 7]", nil, 0, []string{
			`targets.yaml:7: target web: gates: "7" is a number, want a string (quote it)`}},
		{"a comma", "\n    gates: ['a,b']", nil, 0, []string{
			`targets.yaml:7: target web: gates: "a,b": a name has no comma`}},
		{"twice", "\n    gates: [a, a]", nil, 0, []string{
			`targets.yaml:7: target web: gates: "a,a": names "a" twice: a gate runs once per release`}},
		{"a timeout without gates", "\n    gateTimeout: 1m", nil, 0, []string{
			"targets.yaml:7: target web: gateTimeout: is used only with gates (there is nothing to wait for otherwise)"}},
		{"over the budget", "\n    gates: [a, b, c]\n    gateTimeout: 3m", nil, 0, []string{
			"targets.yaml:8: target web: gateTimeout: is too long for 3 gates: an event may then take 10m0s (1m0s to connect and patch + 3 gates × gateTimeout 3m0s), over 540s, the longest --timeout of an event-driven function; shorten gateTimeout or the other waits"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			targets, err := Decode("targets.yaml", []byte("targets:\n  - name: web"+good+tt.keys+"\n"))
			var got Problems
			errors.As(err, &got)
			if diff := cmp.Diff(tt.problems, []string(got)); diff != "" {
				t.Fatalf("problems (-want +got):\n%s", diff)
			}
			if err != nil {
				return
			}
			if diff := cmp.Diff([]any{tt.gates, tt.timeout}, []any{targets[0].Gates, targets[0].GateTimeout}); diff != "" {
				t.Errorf("gates, timeout (-want +got):\n%s", diff)
			}
		})
	}
}

func TestBudgetCountsEveryGate(t *testing.T) {
	tests := []struct {
		name string
		t    Target
		want time.Duration
	}{
		{"rolling", Target{Strategy: Rolling, Gates: []string{"a", "b"}, GateTimeout: time.Minute}, RollingBudget + 2*time.Minute},
		{"blue-green", Target{Strategy: BlueGreen, RolloutTimeout: time.Minute, ScaleDownOld: true, ScaleDownDelay: 30 * time.Second,
			Gates: []string{"a"}, GateTimeout: 2 * time.Minute}, RollingBudget + time.Minute + 30*time.Second + 2*time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.t.Budget(); got != tt.want {
				t.Errorf("Budget() = %s, want %s", got, tt.want)
			}
		})
	}
}
