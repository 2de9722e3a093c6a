package target

import (
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
)

// canary checks the canary strategy's settings into t (see Build): the
// steps, the pause, the HTTPRoute, and that the canary Deployment's name
// is valid. Outside the canary strategy they are a problem when given.
func canary(t *Target, given func(Key) bool, value func(Key) string, name func(Key) string,
	bad func(k Key, quoted bool, format string, args ...any)) {
	if t.Strategy != Canary {
		for _, k := range []Key{KeyCanarySteps, KeyCanaryPause, KeyHTTPRoute} {
			if given(k) {
				bad(k, false, "is used only with the %s strategy (%s is %s)", Canary, name(KeyStrategy), t.Strategy)
			}
		}
		return
	}
	t.CanarySteps, t.CanaryPause = DefaultCanarySteps, DefaultCanaryPause
	if raw := value(KeyCanarySteps); raw != "" {
		var steps []int
		for _, f := range strings.Split(raw, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil {
				bad(KeyCanarySteps, true, "is not a list of percentages, e.g. 10,50")
				return
			}
			steps = append(steps, n)
		}
		for i, n := range steps {
			if n <= 0 || n >= 100 {
				bad(KeyCanarySteps, true, "each step must be over 0 and under 100 (promotion is the 100%%)")
				return
			}
			if i > 0 && n <= steps[i-1] {
				bad(KeyCanarySteps, true, "steps must increase")
				return
			}
		}
		t.CanarySteps = steps
	}
	if raw := value(KeyCanaryPause); raw != "" {
		d, err := time.ParseDuration(raw)
		switch {
		case err != nil:
			bad(KeyCanaryPause, true, "is not a Go duration (e.g. 1m, 30s)")
		case d < 0:
			bad(KeyCanaryPause, true, "must not be negative")
		default:
			t.CanaryPause = d
		}
	}
	if t.HTTPRoute = value(KeyHTTPRoute); t.HTTPRoute != "" {
		if errs := validation.IsDNS1123Subdomain(t.HTTPRoute); len(errs) > 0 {
			bad(KeyHTTPRoute, true, "is not a valid HTTPRoute name: %s", strings.Join(errs, "; "))
		}
	}
	if t.Deployment != "" && len(validation.IsDNS1123Subdomain(t.Deployment)) == 0 {
		if errs := validation.IsDNS1123Subdomain(t.Deployment + "-canary"); len(errs) > 0 {
			bad(KeyDeployment, true, "%s-canary: %s", t.Deployment, strings.Join(errs, "; "))
		}
	}
}
