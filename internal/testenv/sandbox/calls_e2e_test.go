package sandbox

import (
	"context"
	"testing"

	"cloud.google.com/go/cloudbuild/apiv1/v2/cloudbuildpb"
	"github.com/google/go-cmp/cmp"
)

// calls are the calls the function made, counted at the test servers: the
// apiserver's audit log (requests by the function's identity), the
// Container API stand-in (GetCluster), the Cloud Build API stand-in
// (GetBuild) and the token service (tokens issued).
type calls struct {
	Requests   []string
	GetCluster int
	GetBuild   int
	Tokens     int
}

// counter takes the calls made since its last take.
type counter struct {
	sb                           *Sandbox
	requests, gets, builds, toks int
}

func (c *counter) take(t *testing.T) calls {
	t.Helper()
	reqs, err := c.sb.Cluster.Requests(ServiceAccount)
	if err != nil {
		t.Fatal(err)
	}
	got := calls{GetCluster: c.sb.ContainerAPI.Calls() - c.gets, GetBuild: c.sb.CloudBuild.Calls() - c.builds, Tokens: c.sb.Tokens.Issued() - c.toks}
	for _, r := range reqs[c.requests:] {
		got.Requests = append(got.Requests, r.String())
	}
	c.requests, c.gets, c.builds, c.toks = len(reqs), c.sb.ContainerAPI.Calls(), c.sb.CloudBuild.Calls(), c.sb.Tokens.Issued()
	return got
}

// phase is messages published in turn, each answered with outcome, and the
// calls all of them made together.
type phase struct {
	name     string
	builds   []*cloudbuildpb.Build
	outcomes []string
	want     calls
}

// runPhases runs each phase in turn, and between phases waits until the
// Deployments named are rolled out: a write during a rollout conflicts with
// the controller's and is read and sent again (retry.RetryOnConflict), which
// is correct but not the count of a deploy.
func runPhases(ctx context.Context, t *testing.T, sb *Sandbox, phases []phase, settle ...string) {
	t.Helper()
	c := &counter{sb: sb}
	c.take(t) // Whatever starting the sandbox made: nothing the function did.
	for _, p := range phases {
		for i, b := range p.builds {
			if line := publish(ctx, t, sb, b); line["outcome"] != p.outcomes[i] {
				t.Fatalf("%s: message %d answered %v, want %s", p.name, i, line, p.outcomes[i])
			}
		}
		// A request is in the audit log before its answer reaches the
		// function, so every call is counted once the line is written.
		if diff := cmp.Diff(p.want, c.take(t)); diff != "" {
			t.Errorf("%s: calls (-want +got):\n%s", p.name, diff)
		}
		for _, name := range settle {
			if _, err := sb.WaitRolledOut(ctx, name, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestE2ECallsPerDeploy counts every call a rolling deploy makes: one
// GetBuild (the build confirmed with Cloud Build), one GET and one PATCH of
// the Deployment when warm; on a cold instance also one GetCluster and one
// token; nothing at all for a dismissed message. A duplicate is confirmed
// too: the message alone never decides even that a build is ours.
func TestE2ECallsPerDeploy(t *testing.T) {
	sb, ctx := start(t, Options{})
	web1, web2 := load(t, "web-1-success.json"), load(t, "web-2-success.json")
	get, patch := "get deployments "+Namespace+"/"+Deployment, "patch deployments "+Namespace+"/"+Deployment
	runPhases(ctx, t, sb, []phase{
		{"dismissed on a cold instance",
			[]*cloudbuildpb.Build{WithStatus(web1, cloudbuildpb.Build_QUEUED), WithStatus(web1, cloudbuildpb.Build_WORKING),
				WithStatus(web1, cloudbuildpb.Build_FAILURE), load(t, "lookalike-web-evil-success.json")},
			[]string{"skipped", "skipped", "skipped", "skipped"}, calls{}},
		{"cold deploy", []*cloudbuildpb.Build{web1}, []string{"deployed"},
			calls{Requests: []string{get, patch}, GetCluster: 1, GetBuild: 1, Tokens: 1}},
		{"warm deploy", []*cloudbuildpb.Build{web2}, []string{"deployed"}, calls{Requests: []string{get, patch}, GetBuild: 1}},
		{"duplicate delivery", []*cloudbuildpb.Build{web2}, []string{"skipped"}, calls{Requests: []string{get}, GetBuild: 1}},
		{"dismissed on a warm instance",
			[]*cloudbuildpb.Build{WithStatus(web1, cloudbuildpb.Build_QUEUED), load(t, "lookalike-web-evil-success.json")},
			[]string{"skipped", "skipped"}, calls{}},
	}, Deployment)
}

// TestE2EBlueGreenCallsPerRelease lists every call of a blue-green release
// behind a Service: the router and both colours read, the claim on the
// router, the idle colour's patch, one watch of it, the switch.
func TestE2EBlueGreenCallsPerRelease(t *testing.T) {
	sb, ctx := blueGreen(t, "service", nil)
	web1, web2 := load(t, "web-1-success.json"), load(t, "web-2-success.json")
	ns := Namespace + "/"
	release := func(live, idle string) []string {
		return []string{
			"get services " + ns + "web", "get deployments " + ns + live, "get deployments " + ns + idle,
			"patch services " + ns + "web", "patch deployments " + ns + idle, "watch deployments " + ns + idle,
			"patch services " + ns + "web",
		}
	}
	runPhases(ctx, t, sb, []phase{
		{"cold release", []*cloudbuildpb.Build{web1}, []string{"deployed"},
			calls{Requests: release(blue, green), GetCluster: 1, GetBuild: 1, Tokens: 1}},
		{"warm release", []*cloudbuildpb.Build{web2}, []string{"deployed"}, calls{Requests: release(green, blue), GetBuild: 1}},
		{"duplicate delivery", []*cloudbuildpb.Build{web2}, []string{"skipped"},
			calls{Requests: []string{"get services " + ns + "web", "get deployments " + ns + blue, "get deployments " + ns + green}, GetBuild: 1}},
	})
}
