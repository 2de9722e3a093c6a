package onnewimage

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/cloudbuild/apiv1/v2/cloudbuildpb"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/onnewimage/onnewimage/internal/buildevent"
)

// TestConfirmationThroughTheFramework delivers the deployable sample while
// the Cloud Build API stand-in holds another version of it, or fails: each
// answer is one log line, the right HTTP status, and no cluster write unless
// deployed. With VERIFY_BUILD=false the deploy is made on the message alone
// and its line is a WARNING that says so.
func TestConfirmationThroughTheFramework(t *testing.T) {
	raw := sample(t, knative)
	tests := []struct {
		name     string
		env      []string
		api      func(*cloudbuildpb.Build) // Edits what the stand-in holds; nil: it holds the build as sent.
		fault    error
		code     int
		severity string
		outcome  string
		message  string // A prefix of the line's message.
		calls    int
	}{
		{"confirmed", nil, nil, nil, http.StatusOK, "NOTICE", "deployed", "deployed " + sampleRepo + ":latest@" + sampleDigest + " to prod/web:web", 1},
		{"another digest", nil, func(b *cloudbuildpb.Build) {
			for _, img := range b.Results.Images {
				img.Digest = "sha256:" + strings.Repeat("0", 64)
			}
		}, nil, http.StatusOK, "ERROR", "refused", "refused build BUILD_ID: build refused: cloud build's copy of build BUILD_ID pushed no " + sampleRepo + "@" + sampleDigest, 1},
		{"failed build", nil, func(b *cloudbuildpb.Build) { b.Status = cloudbuildpb.Build_FAILURE }, nil,
			http.StatusOK, "ERROR", "refused", "refused build BUILD_ID: build refused: cloud build says build BUILD_ID is FAILURE, not SUCCESS", 1},
		{"unknown build", nil, func(b *cloudbuildpb.Build) { b.Id = "another" }, nil,
			http.StatusOK, "ERROR", "refused", "refused build BUILD_ID: build refused: cloud build has no build BUILD_ID in project project-id", 1},
		{"foreign project", []string{"BUILD_PROJECTS", "demo-project"}, nil, nil,
			http.StatusOK, "ERROR", "refused", `refused build BUILD_ID: build refused: build BUILD_ID is of project "project-id", not one of BUILD_PROJECTS (demo-project)`, 0},
		{"cloud build unavailable", nil, nil, status.Error(codes.Unavailable, "down"),
			http.StatusInternalServerError, "ERROR", "failed", "failed to deploy build BUILD_ID: build not confirmed with cloud build: getting build BUILD_ID of project project-id: rpc error: code = Unavailable desc = down", 1},
		{"confirmation off", []string{"VERIFY_BUILD", "false"}, func(b *cloudbuildpb.Build) { b.Status = cloudbuildpb.Build_FAILURE }, nil,
			http.StatusOK, "WARNING", "deployed", "deployed " + sampleRepo + ":latest@" + sampleDigest + " to prod/web:web without confirming build BUILD_ID with Cloud Build: VERIFY_BUILD=false", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tg := newTarget(t)
			use(t, env(tt.env...), tg)
			published := time.Now()
			req := deliveries["binary CloudEvent"](t, envelope(raw, "SUCCESS", published), published) // Registers the build as sent.
			if tt.api != nil {
				b, err := buildevent.DecodeBuild(raw)
				if err != nil {
					t.Fatal(err)
				}
				tt.api(b)
				cloudBuild.Forge(b)
				if b.Id != "BUILD_ID" {
					cloudBuild.Forget("BUILD_ID")
				}
			}
			cloudBuild.Fail(tt.fault)
			t.Cleanup(func() { cloudBuild.Fail(nil) })
			before := cloudBuild.Calls()
			code, line := send(t, req)
			got := []any{code, line["severity"], line["outcome"], cloudBuild.Calls() - before}
			if diff := cmp.Diff([]any{tt.code, tt.severity, tt.outcome, tt.calls}, got); diff != "" {
				t.Errorf("HTTP status, severity, outcome, GetBuild calls (-want +got):\n%s", diff)
			}
			if msg, _ := line["message"].(string); !strings.HasPrefix(msg, tt.message) {
				t.Errorf("message %q\nwant it to start %q", msg, tt.message)
			}
			if wrote := writes(tg); (wrote > 0) != (tt.outcome == "deployed") {
				t.Errorf("%d writes to the cluster with outcome %s", wrote, tt.outcome)
			}
		})
	}
}

// writes counts the write actions the fake cluster saw.
func writes(tg *target) int {
	n := 0
	for _, a := range tg.client.Actions() {
		if v := a.GetVerb(); v != "get" && v != "list" && v != "watch" {
			n++
		}
	}
	return n
}
