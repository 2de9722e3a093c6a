package provenance

import (
	"context"
	"errors"
	"testing"

	"cloud.google.com/go/cloudbuild/apiv1/v2/cloudbuildpb"
	"github.com/google/go-cmp/cmp"
	"github.com/googleapis/gax-go/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/onnewimage/onnewimage/internal/emulator"
)

// builds answers every GetBuild with build or err, and records the requests.
type builds struct {
	build *cloudbuildpb.Build
	err   error
	asked []*cloudbuildpb.GetBuildRequest
}

func (b *builds) GetBuild(_ context.Context, req *cloudbuildpb.GetBuildRequest, _ ...gax.CallOption) (*cloudbuildpb.Build, error) {
	b.asked = append(b.asked, req)
	return b.build, b.err
}

func TestConfirm(t *testing.T) {
	ok := &cloudbuildpb.Build{Id: "b1", ProjectId: "p", Status: cloudbuildpb.Build_SUCCESS}
	byID := &cloudbuildpb.GetBuildRequest{ProjectId: "p", Id: "b1"}
	regional := "projects/123/locations/europe-west1/builds/b1"
	tests := []struct {
		name    string
		claimed *cloudbuildpb.Build
		answer  *cloudbuildpb.Build
		err     error
		asked   []*cloudbuildpb.GetBuildRequest
		want    error // nil, ErrRefused or ErrUnconfirmed
		reason  string
	}{
		{"global build by project and id", &cloudbuildpb.Build{Id: "b1", ProjectId: "p"}, ok, nil, []*cloudbuildpb.GetBuildRequest{byID}, nil, ""},
		{"global name: by project and id", &cloudbuildpb.Build{Id: "b1", ProjectId: "p", Name: "projects/123/locations/global/builds/b1"}, ok, nil,
			[]*cloudbuildpb.GetBuildRequest{byID}, nil, ""},
		{"regional build by name", &cloudbuildpb.Build{Id: "b1", ProjectId: "p", Name: regional}, ok, nil,
			[]*cloudbuildpb.GetBuildRequest{{Name: regional, ProjectId: "p", Id: "b1"}}, nil, ""},
		{"project not allowed: no call", &cloudbuildpb.Build{Id: "b1", ProjectId: "evil"}, ok, nil, nil, ErrRefused,
			`build refused: build b1 is of project "evil", not one of BUILD_PROJECTS (p, q)`},
		{"no project: no call", &cloudbuildpb.Build{Id: "b1"}, ok, nil, nil, ErrRefused, "build refused: build b1 names no projectId"},
		{"malformed name: no call", &cloudbuildpb.Build{Id: "b1", ProjectId: "p", Name: "projects/123/builds/b1"}, ok, nil, nil, ErrRefused,
			`build refused: build b1 has the name "projects/123/builds/b1", not projects/P/locations/L/builds/ID`},
		{"name of another build: no call", &cloudbuildpb.Build{Id: "b1", ProjectId: "p", Name: "projects/123/locations/us-east1/builds/b2"}, ok, nil, nil, ErrRefused,
			`build refused: build b1 has the name "projects/123/locations/us-east1/builds/b2", which names another build`},
		{"not found", &cloudbuildpb.Build{Id: "b1", ProjectId: "p"}, nil, status.Error(codes.NotFound, "no such build"), []*cloudbuildpb.GetBuildRequest{byID}, ErrRefused,
			"build refused: cloud build has no build b1 in project p (no such build)"},
		{"answer of another build", &cloudbuildpb.Build{Id: "b1", ProjectId: "p"}, &cloudbuildpb.Build{Id: "b2", ProjectId: "p", Status: cloudbuildpb.Build_SUCCESS}, nil,
			[]*cloudbuildpb.GetBuildRequest{byID}, ErrRefused, `build refused: cloud build answered build "b2" when asked for b1`},
		{"answer of another project", &cloudbuildpb.Build{Id: "b1", ProjectId: "p", Name: regional}, &cloudbuildpb.Build{Id: "b1", ProjectId: "evil", Status: cloudbuildpb.Build_SUCCESS}, nil,
			[]*cloudbuildpb.GetBuildRequest{{Name: regional, ProjectId: "p", Id: "b1"}}, ErrRefused,
			`build refused: cloud build says build b1 is of project "evil", not one of BUILD_PROJECTS (p, q)`},
		{"cancelled", &cloudbuildpb.Build{Id: "b1", ProjectId: "p"}, &cloudbuildpb.Build{Id: "b1", ProjectId: "p", Status: cloudbuildpb.Build_CANCELLED}, nil,
			[]*cloudbuildpb.GetBuildRequest{byID}, ErrRefused, "build refused: cloud build says build b1 is CANCELLED, not SUCCESS"},
		{"permission denied names the role", &cloudbuildpb.Build{Id: "b1", ProjectId: "p"}, nil, status.Error(codes.PermissionDenied, "denied"), []*cloudbuildpb.GetBuildRequest{byID},
			ErrUnconfirmed, "build not confirmed with cloud build: getting build b1 of project p: rpc error: code = PermissionDenied desc = denied: grant the function's service account roles/cloudbuild.builds.viewer on project p"},
		{"unavailable", &cloudbuildpb.Build{Id: "b1", ProjectId: "p"}, nil, status.Error(codes.Unavailable, "down"), []*cloudbuildpb.GetBuildRequest{byID},
			ErrUnconfirmed, "build not confirmed with cloud build: getting build b1 of project p: rpc error: code = Unavailable desc = down"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api := &builds{build: tt.answer, err: tt.err}
			got, err := New([]string{"p", "q"}, Options{Builds: api}).Confirm(context.Background(), tt.claimed)
			if diff := cmp.Diff(tt.asked, api.asked, protocmp.Transform()); diff != "" {
				t.Errorf("GetBuild requests (-want +got):\n%s", diff)
			}
			switch {
			case tt.want == nil && err != nil:
				t.Fatalf("Confirm() error = %v", err)
			case tt.want == nil:
				if diff := cmp.Diff(tt.answer, got, protocmp.Transform()); diff != "" {
					t.Errorf("Confirm() (-want +got):\n%s", diff)
				}
			case !errors.Is(err, tt.want) || err.Error() != tt.reason:
				t.Errorf("Confirm() error = %v\nwant %q, wrapping %v", err, tt.reason, tt.want)
			}
			if errors.Is(err, ErrUnconfirmed) && status.Code(err) != status.Code(tt.err) {
				t.Errorf("Confirm() error = %v does not carry the API's status %v", err, status.Code(tt.err))
			}
		})
	}
}

// TestConfirmRefusesARemoteEmulator: the emulator's answer decides what is
// deployed, so it must be on this machine.
func TestConfirmRefusesARemoteEmulator(t *testing.T) {
	v := New([]string{"p"}, Options{EmulatorHost: "203.0.113.9:443"})
	_, err := v.Confirm(context.Background(), &cloudbuildpb.Build{Id: "b1", ProjectId: "p"})
	if !errors.Is(err, emulator.ErrNotLoopback) {
		t.Errorf("Confirm() error = %v, want one wrapping emulator.ErrNotLoopback", err)
	}
}
