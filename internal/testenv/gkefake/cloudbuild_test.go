package gkefake

import (
	"context"
	"testing"

	"cloud.google.com/go/cloudbuild/apiv1/v2/cloudbuildpb"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestCloudBuildServer: GetBuild answers with the finished state whatever
// order a build's states were registered in, Forge replaces it, FailN fails
// that many calls and then recovers.
func TestCloudBuildServer(t *testing.T) {
	s, err := StartCloudBuildServer()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	ctx := context.Background()
	build := func(st cloudbuildpb.Build_Status) *cloudbuildpb.Build {
		return &cloudbuildpb.Build{Id: "b1", ProjectId: "p", Status: st}
	}
	get := func(req *cloudbuildpb.GetBuildRequest) string {
		b, err := s.GetBuild(ctx, req)
		if err != nil {
			return status.Code(err).String()
		}
		return b.GetStatus().String()
	}
	byID := &cloudbuildpb.GetBuildRequest{ProjectId: "p", Id: "b1"}
	var got []string
	s.Register(build(cloudbuildpb.Build_SUCCESS))
	s.Register(build(cloudbuildpb.Build_WORKING)) // A late WORKING message.
	got = append(got, get(byID), get(&cloudbuildpb.GetBuildRequest{ProjectId: "other", Id: "b1"}))
	s.Forge(build(cloudbuildpb.Build_FAILURE))
	got = append(got, get(byID))
	s.FailN(2, status.Error(codes.Unavailable, "down"))
	got = append(got, get(byID), get(byID), get(byID))
	s.Forget("b1")
	got = append(got, get(byID))
	want := []string{"SUCCESS", "NotFound", "FAILURE", "Unavailable", "Unavailable", "FAILURE", "NotFound"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("GetBuild answers (-want +got):\n%s", diff)
	}
	if n := s.Calls(); n != len(want) {
		t.Errorf("Calls() = %d, want %d", n, len(want))
	}
}
