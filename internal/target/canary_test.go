package target

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// canarySettings are valid single-target variables with STRATEGY=canary,
// plus extra.
func canarySettings(extra map[string]string) Settings {
	vars := map[string]string{"KUBECONFIG": "/k", "DEPLOYMENT": "web", "CONTAINER": "web", "IMAGE": "web", "STRATEGY": "canary"}
	for k, v := range extra {
		vars[k] = v
	}
	s := Settings{Name: "default", Variables: true, Values: map[Key]Value{}}
	for k, name := range variables {
		if v, ok := vars[name]; ok && k != KeyCluster {
			s.Values[k] = Value{Text: v}
		}
	}
	return s
}

func TestBuildCanary(t *testing.T) {
	tests := []struct {
		name  string
		extra map[string]string
		want  string
	}{
		{"defaults", nil, "steps=[10 50] pause=1m0s timeout=1m0s budget=6m0s"},
		{"steps and pause", map[string]string{"CANARY_STEPS": " 5, 25,60 ", "CANARY_PAUSE": "30s", "ROLLOUT_TIMEOUT": "45s"},
			"steps=[5 25 60] pause=30s timeout=45s budget=5m30s"},
		{"one step, no pause", map[string]string{"CANARY_STEPS": "99", "CANARY_PAUSE": "0s"}, "steps=[99] pause=0s timeout=1m0s budget=3m0s"},
		{"an httproute", map[string]string{"HTTPROUTE": "web"}, "steps=[10 50] pause=1m0s timeout=1m0s budget=6m0s httpRoute=web"},
		{"at the limit", map[string]string{"CANARY_STEPS": "10,50", "CANARY_PAUSE": "1m", "ROLLOUT_TIMEOUT": "2m"}, "steps=[10 50] pause=1m0s timeout=2m0s budget=9m0s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tg, problems := Build(canarySettings(tt.extra))
			if len(problems) > 0 {
				t.Fatalf("Build: %v", problems)
			}
			got := fmt.Sprintf("steps=%v pause=%s timeout=%s budget=%s", tg.CanarySteps, tg.CanaryPause, tg.RolloutTimeout, tg.Budget())
			if tg.HTTPRoute != "" {
				got += " httpRoute=" + tg.HTTPRoute
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("target (-want +got):\n%s", diff)
			}
		})
	}
}

func TestBuildCanaryRejects(t *testing.T) {
	tests := []struct {
		name  string
		extra map[string]string
		want  string
	}{
		{"steps not numbers", map[string]string{"CANARY_STEPS": "10,half"}, `CANARY_STEPS="10,half": is not a list of percentages, e.g. 10,50`},
		{"step of 100", map[string]string{"CANARY_STEPS": "10,100"}, `CANARY_STEPS="10,100": each step must be over 0 and under 100 (promotion is the 100%)`},
		{"step of 0", map[string]string{"CANARY_STEPS": "0,50"}, `CANARY_STEPS="0,50": each step must be over 0 and under 100`},
		{"steps not increasing", map[string]string{"CANARY_STEPS": "50,10"}, `CANARY_STEPS="50,10": steps must increase`},
		{"steps repeated", map[string]string{"CANARY_STEPS": "10,10"}, `CANARY_STEPS="10,10": steps must increase`},
		{"pause not a duration", map[string]string{"CANARY_PAUSE": "5"}, `CANARY_PAUSE="5": is not a Go duration`},
		{"negative pause", map[string]string{"CANARY_PAUSE": "-1s"}, `CANARY_PAUSE="-1s": must not be negative`},
		{"steps without canary", map[string]string{"STRATEGY": "rolling", "CANARY_STEPS": "10"}, "CANARY_STEPS is used only with the canary strategy (STRATEGY is rolling)"},
		{"pause without canary", map[string]string{"STRATEGY": "rolling", "CANARY_PAUSE": "1m"}, "CANARY_PAUSE is used only with the canary strategy (STRATEGY is rolling)"},
		{"httproute without canary", map[string]string{"STRATEGY": "rolling", "HTTPROUTE": "web"}, "HTTPROUTE is used only with the canary strategy (STRATEGY is rolling)"},
		{"httproute not a name", map[string]string{"HTTPROUTE": "Web_Route"}, `HTTPROUTE="Web_Route": is not a valid HTTPRoute name`},
		{"a service with canary", map[string]string{"SERVICE": "web"}, "SERVICE is used only with the blue-green strategy (STRATEGY is canary)"},
		{"canary name too long", map[string]string{"DEPLOYMENT": strings.Repeat("w", 250)}, "-canary: must be no more than 253 characters"},
		{"one second over", map[string]string{"CANARY_STEPS": "10,50", "CANARY_PAUSE": "1m", "ROLLOUT_TIMEOUT": "2m1s"},
			"ROLLOUT_TIMEOUT, CANARY_STEPS and CANARY_PAUSE are too long: an event may then take 9m3s (1m0s to connect and patch, plus 2 steps of ROLLOUT_TIMEOUT 2m1s + CANARY_PAUSE 1m0s, plus ROLLOUT_TIMEOUT 2m1s to promote), over 540s, the longest --timeout of an event-driven function"},
		{"defaults with a long timeout", map[string]string{"ROLLOUT_TIMEOUT": "5m"},
			"an event may then take 18m0s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, problems := Build(canarySettings(tt.extra))
			var got []string
			for _, p := range problems {
				got = append(got, p.Variable())
			}
			if !strings.Contains(strings.Join(got, "\n"), tt.want) {
				t.Errorf("Build problems = %q, want one containing %q", got, tt.want)
			}
		})
	}
}

func TestCanaryBudgetIsTheSchedule(t *testing.T) {
	tg := Target{Strategy: Canary, CanarySteps: []int{5, 25, 50}, CanaryPause: 40 * time.Second, RolloutTimeout: 30 * time.Second}
	// Connect, three steps of rollout + pause, one promotion rollout.
	want := RollingBudget + 3*(30*time.Second+40*time.Second) + 30*time.Second
	if got := tg.Budget(); got != want {
		t.Errorf("Budget() = %s, want %s", got, want)
	}
}
