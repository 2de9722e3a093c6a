package config

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/onnewimage/onnewimage/internal/target"
)

func TestLoadGates(t *testing.T) {
	tests := []struct {
		name        string
		extra       map[string]string
		gates       []string
		timeout     time.Duration
		budget      time.Duration
		wantProblem []string // Problems Load names; none when the configuration loads.
	}{
		{"none", nil, nil, 0, target.RollingBudget, nil},
		{"two gates, default timeout", map[string]string{"GATES": "web-migrate, web-smoke"},
			[]string{"web-migrate", "web-smoke"}, target.DefaultGateTimeout, target.RollingBudget + 2*target.DefaultGateTimeout, nil},
		{"a timeout", map[string]string{"GATES": "web-migrate", "GATE_TIMEOUT": "90s"},
			[]string{"web-migrate"}, 90 * time.Second, target.RollingBudget + 90*time.Second, nil},
		{"blue-green: rollout plus gates at the limit", map[string]string{"STRATEGY": "blue-green", "SERVICE": "web", "ROLLOUT_TIMEOUT": "4m", "GATES": "a,b", "GATE_TIMEOUT": "2m"},
			[]string{"a", "b"}, 2 * time.Minute, 9 * time.Minute, nil},
		{"blue-green: the defaults with two gates do not fit", map[string]string{"STRATEGY": "blue-green", "SERVICE": "web", "GATES": "a,b"}, nil, 0, 0,
			[]string{"GATE_TIMEOUT is too long for 2 gates: an event may then take 12m0s (1m0s to connect and patch + ROLLOUT_TIMEOUT 5m0s + 2 gates × GATE_TIMEOUT 3m0s), over 540s"}},
		{"canary: the schedule plus a gate", map[string]string{"STRATEGY": "canary", "GATES": "a", "GATE_TIMEOUT": "2m"},
			[]string{"a"}, 2 * time.Minute, target.RollingBudget + 2*(target.DefaultCanaryRolloutTimeout+target.DefaultCanaryPause) + target.DefaultCanaryRolloutTimeout + 2*time.Minute, nil},
		{"canary: the schedule with two default gates does not fit", map[string]string{"STRATEGY": "canary", "GATES": "a,b"}, nil, 0, 0,
			[]string{"GATE_TIMEOUT is too long for 2 gates: an event may then take 12m0s (1m0s to connect and patch + 2 steps × (ROLLOUT_TIMEOUT 1m0s + CANARY_PAUSE 1m0s) + ROLLOUT_TIMEOUT 1m0s to promote + 2 gates × GATE_TIMEOUT 3m0s), over 540s"}},
		{"rolling: one second over", map[string]string{"GATES": "a,b", "GATE_TIMEOUT": "4m1s"}, nil, 0, 0,
			[]string{"an event may then take 9m2s (1m0s to connect and patch + 2 gates × GATE_TIMEOUT 4m1s)"}},
		{"a timeout without gates", map[string]string{"GATE_TIMEOUT": "1m"}, nil, 0, 0,
			[]string{"GATE_TIMEOUT is used only with GATES"}},
		{"bad timeouts", map[string]string{"GATES": "a", "GATE_TIMEOUT": "3"}, nil, 0, 0, []string{`GATE_TIMEOUT="3": is not a Go duration`}},
		{"zero timeout", map[string]string{"GATES": "a", "GATE_TIMEOUT": "0s"}, nil, 0, 0, []string{`GATE_TIMEOUT="0s": must be positive`}},
		{"bad names", map[string]string{"GATES": "Web_Migrate,,a," + strings.Repeat("g", 53) + ",a"}, nil, 0, 0, []string{
			`GATES="Web_Migrate,,a,` + strings.Repeat("g", 53) + `,a": "Web_Migrate": a lowercase RFC 1123 subdomain`,
			"has an empty name",
			"must be no more than 52 characters (a CronJob name)",
			`names "a" twice`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := valid()
			for k, v := range tt.extra {
				e[k] = v
			}
			c, err := Load(env(e))
			if len(tt.wantProblem) > 0 {
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("error = %v, want ErrInvalid", err)
				}
				for _, want := range tt.wantProblem {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q does not mention %q", err, want)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tg := c.Targets[0]
			if diff := cmp.Diff([]any{tt.gates, tt.timeout, tt.budget}, []any{tg.Gates, tg.GateTimeout, tg.Budget()}); diff != "" {
				t.Errorf("gates, timeout, budget (-want +got):\n%s", diff)
			}
		})
	}
}
