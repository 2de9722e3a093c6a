package gkefake

import (
	"context"
	"fmt"
	"net"
	"sync"

	"cloud.google.com/go/cloudbuild/apiv1/v2/cloudbuildpb"
	"cloud.google.com/go/longrunning/autogen/longrunningpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// CloudBuildServer plays the Cloud Build API over loopback gRPC: GetBuild
// answers from the builds registered with it, as Cloud Build answers for the
// builds it ran. Cloud Build stores a build before it announces it on
// cloud-builds, so a test registers a build, then publishes it; to forge, it
// publishes a build it did not register, or registers another version.
type CloudBuildServer struct {
	cloudbuildpb.UnimplementedCloudBuildServer

	// Addr is the host:port the server listens on: the value for
	// CLOUDBUILD_EMULATOR_HOST.
	Addr string

	grpc *grpc.Server

	mu     sync.Mutex
	builds map[string]*cloudbuildpb.Build // By ID.
	calls  int
	fault  error
	faults int // How many more calls fail with fault; <0: until cleared.
}

// StartCloudBuildServer listens on a free loopback port and serves until Stop.
func StartCloudBuildServer() (*CloudBuildServer, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listening for the cloud build api: %w", err)
	}
	s := &CloudBuildServer{Addr: lis.Addr().String(), grpc: grpc.NewServer(), builds: map[string]*cloudbuildpb.Build{}}
	cloudbuildpb.RegisterCloudBuildServer(s.grpc, s)
	go s.grpc.Serve(lis) // Serve returns when Stop is called.
	return s, nil
}

// Stop stops the server and closes its connections.
func (s *CloudBuildServer) Stop() { s.grpc.Stop() }

// Register stores b as Cloud Build's record of its build, as a build's
// progress does: a QUEUED or WORKING version never replaces a finished one
// (Cloud Build never takes a finished build back), so registering every
// message a build publishes, in any order, leaves its final state.
func (s *CloudBuildServer) Register(b *cloudbuildpb.Build) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.builds[b.GetId()]; ok && finished(old) && !finished(b) {
		return
	}
	s.builds[b.GetId()] = proto.Clone(b).(*cloudbuildpb.Build)
}

// Forge stores b as Cloud Build's record of its build, whatever was there.
func (s *CloudBuildServer) Forge(b *cloudbuildpb.Build) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.builds[b.GetId()] = proto.Clone(b).(*cloudbuildpb.Build)
}

// Fail makes every GetBuild answer err (a gRPC status error, e.g.
// status.Error(codes.Unavailable, "...")) until Fail(nil).
func (s *CloudBuildServer) Fail(err error) { s.FailN(-1, err) }

// FailN makes the next n GetBuild calls answer err, then the server
// recovers by itself.
func (s *CloudBuildServer) FailN(n int, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fault, s.faults = err, n
	if err == nil {
		s.faults = 0
	}
}

// Calls returns how many GetBuild calls the server has answered.
func (s *CloudBuildServer) Calls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

// GetBuild implements cloudbuildpb.CloudBuildServer: a regional build by its
// name, any other by project and ID.
func (s *CloudBuildServer) GetBuild(_ context.Context, req *cloudbuildpb.GetBuildRequest) (*cloudbuildpb.Build, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if s.faults != 0 {
		if s.faults > 0 {
			s.faults--
		}
		return nil, s.fault
	}
	b, ok := s.builds[req.GetId()]
	switch {
	case !ok:
	case req.GetName() != "" && b.GetName() == req.GetName():
		return b, nil
	case req.GetName() == "" && b.GetProjectId() == req.GetProjectId():
		return b, nil
	}
	return nil, status.Errorf(codes.NotFound, "build %q not found", req.GetId())
}

// CreateBuild implements cloudbuildpb.CloudBuildServer for another process
// that registers a build before it publishes it (cmd/sandbox publish): the
// build is registered as given, ID, status and results included, and the
// operation is done at once.
func (s *CloudBuildServer) CreateBuild(_ context.Context, req *cloudbuildpb.CreateBuildRequest) (*longrunningpb.Operation, error) {
	b := req.GetBuild()
	if b.GetId() == "" || b.GetProjectId() != req.GetProjectId() {
		return nil, status.Error(codes.InvalidArgument, "the stand-in registers a build with its id and projectId")
	}
	s.Register(b)
	res, err := anypb.New(b)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &longrunningpb.Operation{Name: "operations/build/" + b.GetProjectId() + "/" + b.GetId(), Done: true,
		Result: &longrunningpb.Operation_Response{Response: res}}, nil
}

func finished(b *cloudbuildpb.Build) bool {
	switch b.GetStatus() {
	case cloudbuildpb.Build_STATUS_UNKNOWN, cloudbuildpb.Build_PENDING, cloudbuildpb.Build_QUEUED, cloudbuildpb.Build_WORKING:
		return false
	}
	return true
}

// Forget removes the build with ID id: Cloud Build no longer knows it.
func (s *CloudBuildServer) Forget(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.builds, id)
}
