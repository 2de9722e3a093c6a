package sandbox

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/cloudbuild/apiv1/v2/cloudbuildpb"
	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"

	"github.com/onnewimage/onnewimage/internal/testenv/faultproxy"
)

// TestE2EKubernetesAPIFaults puts the fault proxy between the function and
// the apiserver and, for each fault, publishes a new build: the function
// must take the decision the fault needs (client-go waits out a Retry-After
// it can; a failure a redelivery can help asks for one, retry=true, and the
// emulator delivers the message again), and once the fault clears the build
// is deployed exactly once: one change of the Deployment's image in the
// recorded watch history, one new ReplicaSet, one line that says so.
func TestE2EKubernetesAPIFaults(t *testing.T) {
	sb, ctx := start(t, Options{FaultProxy: true})
	template := load(t, "web-1-success.json")
	const web = "/apis/apps/v1/namespaces/" + Namespace + "/deployments/" + Deployment
	tests := []struct {
		name  string
		fault faultproxy.Fault
		// untilAsked keeps the fault until the function has asked for
		// redelivery once; else it ends by itself after Times requests.
		untilAsked bool
		// decisions are the function's lines on the build, in order, a
		// repeated one once.
		decisions []string
		// reason is in the reason of every failure.
		reason string
		// requests are the function's requests to the Deployment, as
		// "METHOD status"; nil checks none.
		requests []string
		// check looks at the requests further.
		check func(t *testing.T, requests []faultproxy.Request)
	}{
		{name: "429 with Retry-After 1s to the first 3 GETs: client-go waits them out",
			fault:     faultproxy.Fault{Method: http.MethodGet, Resource: "deployments", Times: 3, Status: http.StatusTooManyRequests, RetryAfter: time.Second},
			decisions: []string{"deployed"},
			requests:  []string{"GET 429", "GET 429", "GET 429", "GET 200", "PATCH 200"}},
		{name: "429 with Retry-After 1s to every PATCH: retried in the call, then by Pub/Sub",
			fault:      faultproxy.Fault{Method: http.MethodPatch, Status: http.StatusTooManyRequests, RetryAfter: time.Second},
			untilAsked: true,
			decisions:  []string{"failed retry", "deployed"},
			reason:     "the server has received too many requests",
			check: func(t *testing.T, requests []faultproxy.Request) {
				// client-go's ten retries within the first delivery.
				if n := inFirstDelivery(requests, "PATCH 429"); n != 11 {
					t.Errorf("the first delivery sent %d throttled PATCHes, want 11 (one and ten retries)", n)
				}
			}},
		{name: "429 with Retry-After 600s, beyond the budget: returned at once",
			fault:      faultproxy.Fault{Method: http.MethodPatch, Status: http.StatusTooManyRequests, RetryAfter: 10 * time.Minute},
			untilAsked: true,
			decisions:  []string{"failed retry", "deployed"},
			reason:     "the server has received too many requests",
			check: func(t *testing.T, requests []faultproxy.Request) {
				if n := inFirstDelivery(requests, "PATCH 429"); n != 1 {
					t.Errorf("the first delivery sent %d throttled PATCHes, want 1: no wait it cannot finish", n)
				}
			}},
		{name: "503 without Retry-After to the first 2 PATCHes: each a redelivery",
			fault:     faultproxy.Fault{Method: http.MethodPatch, Times: 2, Status: http.StatusServiceUnavailable},
			decisions: []string{"failed retry", "deployed"},
			reason:    "the server is currently unable to handle the request",
			requests:  []string{"GET 200", "PATCH 503", "GET 200", "PATCH 503", "GET 200", "PATCH 200"}},
		{name: "504 after the PATCH landed: the redelivery finds it done",
			fault:     faultproxy.Fault{Method: http.MethodPatch, Times: 1, Status: http.StatusGatewayTimeout, Landed: true},
			decisions: []string{"failed retry", "skipped: already running"},
			reason:    "the server was unable to return a response in the time allotted",
			requests:  []string{"GET 200", "PATCH 504", "GET 200"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := FreshBuild(template)
			before, rs := webContainer(getWeb(ctx, t, sb)), revisions(ctx, t, sb)
			h := record(ctx, t, sb)
			seen, sent := len(sb.Function.Logs()), len(sb.Proxy.Requests())
			sb.Proxy.Inject(tt.fault)
			defer sb.Proxy.Clear()
			if _, err := sb.Publish(ctx, b); err != nil {
				t.Fatal(err)
			}
			if tt.untilAsked {
				waitDecision(ctx, t, sb, seen, b, func(l map[string]any) bool { return l["outcome"] == "failed" })
				sb.Proxy.Clear()
			}
			lines := waitDecision(ctx, t, sb, seen, b, final)
			if diff := cmp.Diff(tt.decisions, decisions(lines)); diff != "" {
				t.Fatalf("decisions (-want +got):\n%s", diff) // The rest follows from them.
			}
			failedFor(t, lines, tt.reason)
			redelivered(t, lines)
			var requests []faultproxy.Request
			for _, r := range sb.Proxy.Requests()[sent:] {
				if r.Path == web {
					requests = append(requests, r)
				}
			}
			if tt.requests != nil {
				if diff := cmp.Diff(tt.requests, summarize(requests)); diff != "" {
					t.Errorf("the function's requests to the deployment (-want +got):\n%s", diff)
				}
			}
			if tt.check != nil {
				tt.check(t, requests)
			}
			waitLive(ctx, t, sb, pinned(b))
			h.catchUp(ctx, t, sb)
			if diff := cmp.Diff([]string{pinned(b)}, h.imagesOf(Deployment, before)); diff != "" {
				t.Errorf("images the deployment went through (-want +got):\n%s", diff)
			}
			if got := revisions(ctx, t, sb); got != rs+1 {
				t.Errorf("%d ReplicaSets after the build, want %d: one rollout", got, rs+1)
			}
		})
	}
}

// TestE2ETokenFaults: a slow token service costs time and nothing else; a
// hung one fails the event at the target's budget, retryably, and the
// redelivery deploys once it answers again; a cached token that the cluster
// refuses (expired before its announced expiry, or revoked) is not presented
// again: the redelivery fetches a fresh one and deploys.
func TestE2ETokenFaults(t *testing.T) {
	sb, ctx := start(t, Options{FaultProxy: true})
	template := load(t, "web-1-success.json")
	tests := []struct {
		name string
		// cold restarts the function first: no cached connection or token;
		// warm has it deploy a build first: a cached connection and token.
		cold, warm bool
		// inject starts the fault; heal, when not nil, ends it once the
		// function asked for redelivery.
		inject, heal func()
		decisions    []string
		// reason is in the reason of every failure.
		reason string
		// issued is how many tokens the token service hands out.
		issued int
	}{
		{name: "slow token service, within the budget", cold: true,
			inject:    func() { sb.Tokens.Delay(3 * time.Second) },
			decisions: []string{"deployed"},
			issued:    1},
		{name: "hung token service", cold: true,
			inject:    func() { sb.Tokens.Delay(10 * time.Minute) },
			heal:      func() { sb.Tokens.Delay(0) },
			decisions: []string{"failed retry", "deployed"},
			reason:    "no access token: context deadline exceeded: Application Default Credentials gave no token for the cluster in time",
			issued:    1},
		{name: "cached token refused by the cluster", warm: true,
			inject: func() {
				if err := sb.RevokeToken(); err != nil {
					t.Fatal(err)
				}
			},
			decisions: []string{"failed retry", "deployed"},
			reason:    "the cluster does not accept the function's credentials",
			issued:    1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.cold {
				if err := sb.StartFunction(ctx, nil); err != nil {
					t.Fatal(err)
				}
			}
			if tt.warm {
				warmUp := FreshBuild(template)
				mustDeploy(ctx, t, sb, warmUp)
				waitLive(ctx, t, sb, pinned(warmUp))
			}
			b := FreshBuild(template)
			before, rs := webContainer(getWeb(ctx, t, sb)), revisions(ctx, t, sb)
			h := record(ctx, t, sb)
			seen, issued := len(sb.Function.Logs()), sb.Tokens.Issued()
			tt.inject()
			defer sb.Tokens.Delay(0)
			begin := time.Now()
			if _, err := sb.Publish(ctx, b); err != nil {
				t.Fatal(err)
			}
			if tt.heal != nil {
				waitDecision(ctx, t, sb, seen, b, func(l map[string]any) bool { return l["outcome"] == "failed" })
				t.Logf("first failure after %s", time.Since(begin).Round(time.Second))
				tt.heal()
			}
			lines := waitDecision(ctx, t, sb, seen, b, final)
			t.Logf("decided after %s", time.Since(begin).Round(time.Second))
			if diff := cmp.Diff(tt.decisions, decisions(lines)); diff != "" {
				t.Fatalf("decisions (-want +got):\n%s", diff) // The rest follows from them.
			}
			failedFor(t, lines, tt.reason)
			redelivered(t, lines)
			if got := sb.Tokens.Issued() - issued; got != tt.issued {
				t.Errorf("the token service issued %d tokens, want %d", got, tt.issued)
			}
			waitLive(ctx, t, sb, pinned(b))
			h.catchUp(ctx, t, sb)
			if diff := cmp.Diff([]string{pinned(b)}, h.imagesOf(Deployment, before)); diff != "" {
				t.Errorf("images the deployment went through (-want +got):\n%s", diff)
			}
			if got := revisions(ctx, t, sb); got != rs+1 {
				t.Errorf("%d ReplicaSets after the build, want %d: one rollout", got, rs+1)
			}
		})
	}
}

// final says a line ends the deliveries of its message: it is not a
// failure that asks for redelivery.
func final(l map[string]any) bool { return l["outcome"] != "failed" || l["retry"] != true }

// waitDecision waits (two minutes at most) for a line on build b, after the
// first seen lines, for which done holds, and returns every line on b since
// seen up to it.
func waitDecision(ctx context.Context, t *testing.T, sb *Sandbox, seen int, b *cloudbuildpb.Build, done func(map[string]any) bool) []map[string]any {
	t.Helper()
	wait, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	about := func(l map[string]any) bool { return l["buildId"] == b.GetId() }
	if _, err := sb.Function.WaitLog(wait, seen, func(l map[string]any) bool { return about(l) && done(l) }); err != nil {
		t.Fatalf("build %s: %v", b.GetId(), err)
	}
	var lines []map[string]any
	for _, l := range sb.Function.Logs()[seen:] {
		if about(l) {
			lines = append(lines, l)
			if done(l) {
				break
			}
		}
	}
	return lines
}

// decisions sums up lines as "deployed", "skipped: reason" (the reason up
// to its first clause) or "failed retry", a repeated one once.
func decisions(lines []map[string]any) []string {
	var out []string
	for _, l := range lines {
		s, _ := l["outcome"].(string)
		reason, _ := l["reason"].(string)
		switch s {
		case "failed":
			if l["retry"] == true {
				s += " retry"
			}
		case "skipped":
			s += ": " + firstClause(reason)
		}
		if len(out) == 0 || out[len(out)-1] != s {
			out = append(out, s)
		}
	}
	return out
}

// firstClause is a reason up to its first " (", "," or digest, so that no
// digest or generated name reaches the comparison.
func firstClause(reason string) string {
	for _, sep := range []string{" (", ",", " sha256:", "@sha256:"} {
		reason, _, _ = strings.Cut(reason, sep)
	}
	return reason
}

// failedFor fails the test unless the reason of every failure in lines says
// reason.
func failedFor(t *testing.T, lines []map[string]any, reason string) {
	t.Helper()
	for _, l := range lines {
		if got, _ := l["reason"].(string); l["outcome"] == "failed" && !strings.Contains(got, reason) {
			t.Errorf("failure reason %q, want it to say %q", got, reason)
		}
	}
}

// redelivered fails the test unless every line is about the one message:
// a failure was followed by Pub/Sub delivering the same message again, not
// by another message.
func redelivered(t *testing.T, lines []map[string]any) {
	t.Helper()
	for _, l := range lines[1:] {
		if l["messageId"] != lines[0]["messageId"] {
			t.Errorf("line about message %v after one about %v: want the one message, redelivered", l["messageId"], lines[0]["messageId"])
		}
	}
}

// summarize writes requests as "METHOD status".
func summarize(requests []faultproxy.Request) []string {
	var out []string
	for _, r := range requests {
		out = append(out, fmt.Sprintf("%s %d", r.Method, r.Status))
	}
	return out
}

// inFirstDelivery counts the requests summarized as want that the first
// delivery sent: those before the second GET (each delivery reads the
// Deployment first).
func inFirstDelivery(requests []faultproxy.Request, want string) int {
	n, gets := 0, 0
	for _, s := range summarize(requests) {
		if strings.HasPrefix(s, "GET ") {
			if gets++; gets == 2 {
				break
			}
		}
		if s == want {
			n++
		}
	}
	return n
}

// imagesOf returns the images the container "web" of the Deployment name
// went through in the history, in order, each run of one image once, and
// without a leading run of before (the image it ran when recording began).
func (h *history) imagesOf(name, before string) []string {
	var out []string
	for _, c := range h.sorted() {
		d, ok := c.obj.(*appsv1.Deployment)
		if !ok || d.Name != name {
			continue
		}
		image := webContainer(d)
		if len(out) == 0 && image == before || len(out) > 0 && out[len(out)-1] == image {
			continue
		}
		out = append(out, image)
	}
	return out
}
