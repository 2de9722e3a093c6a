// Package provenance confirms where a build comes from. A cloud-builds
// message is only a hint: anyone allowed to publish on the topic can write
// one. Before anything is deployed, the build the message names is read back
// from its source of truth, the Cloud Build API (GetBuild), and the API's
// copy is the one every decision is made on.
//
// A build is refused (ErrRefused: acknowledged, never deployed, never
// retried) when its project is not one of the build projects (checked before
// any call), when the API does not know it, when the API's copy is of
// another build or project, or when the API says another status than
// SUCCESS. A failure to ask (Unavailable, DeadlineExceeded, PermissionDenied)
// wraps ErrUnconfirmed and the gRPC status: a redelivery can help.
package provenance

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	cloudbuild "cloud.google.com/go/cloudbuild/apiv1/v2"
	"cloud.google.com/go/cloudbuild/apiv1/v2/cloudbuildpb"
	"github.com/googleapis/gax-go/v2"
	"google.golang.org/api/option"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/onnewimage/onnewimage/internal/emulator"
)

// Builds is the part of the Cloud Build API the Verifier uses.
type Builds interface {
	GetBuild(ctx context.Context, req *cloudbuildpb.GetBuildRequest, opts ...gax.CallOption) (*cloudbuildpb.Build, error)
}

// ErrRefused is wrapped when a message's build is not a build to deploy
// according to its source of truth: no redelivery can change that.
var ErrRefused = errors.New("build refused")

// ErrUnconfirmed is wrapped, with the API's error, when the build could not
// be confirmed because the API could not be asked or did not answer: a
// redelivery can help.
var ErrUnconfirmed = errors.New("build not confirmed with cloud build")

// CallTimeout bounds one GetBuild call. The call is made once, without the
// client library's own retries (which would retry Unavailable for up to ten
// minutes, past the function's timeout): a failure fails the event, and
// Pub/Sub's redelivery is the retry.
const CallTimeout = 30 * time.Second

// ViewerRole is the role the function's service account needs in each build
// project to read its builds.
const ViewerRole = "roles/cloudbuild.builds.viewer"

// Options adjust a Verifier. The zero value is production: the real Cloud
// Build API with Application Default Credentials.
type Options struct {
	// EmulatorHost, when set, is a loopback host:port where the Cloud Build
	// API is reached over plaintext gRPC without credentials. Any other host
	// is refused (see emulator.CheckHost).
	EmulatorHost string
	// Builds replaces the Cloud Build API client.
	Builds Builds
}

// Verifier confirms builds with the Cloud Build API. Its client is made on
// first use and kept for the instance's life. It is safe for concurrent use.
type Verifier struct {
	projects     []string
	emulatorHost string

	mu     sync.Mutex
	builds Builds
}

// New returns a Verifier that accepts builds of the projects named (project
// IDs, as a Build's projectId names them).
func New(projects []string, opts Options) *Verifier {
	return &Verifier{projects: projects, emulatorHost: opts.EmulatorHost, builds: opts.Builds}
}

// Confirm reads the build claimed names back from the Cloud Build API and
// returns the API's copy: a SUCCESS build of the same ID in one of the
// Verifier's projects. A regional build (its name's location is not
// "global") is asked for by name, any other by project and ID. Confirm
// never trusts anything else of claimed; comparing its images with the
// API's is the caller's decision.
func (v *Verifier) Confirm(ctx context.Context, claimed *cloudbuildpb.Build) (*cloudbuildpb.Build, error) {
	id, project := claimed.GetId(), claimed.GetProjectId()
	if project == "" {
		return nil, refuse("build %s names no projectId", id)
	}
	if !slices.Contains(v.projects, project) {
		return nil, refuse("build %s is of project %q, not one of BUILD_PROJECTS (%s)", id, project, strings.Join(v.projects, ", "))
	}
	req := &cloudbuildpb.GetBuildRequest{ProjectId: project, Id: id}
	if name := claimed.GetName(); name != "" {
		location, nameID, ok := parseName(name)
		switch {
		case !ok:
			return nil, refuse("build %s has the name %q, not projects/P/locations/L/builds/ID", id, name)
		case nameID != id:
			return nil, refuse("build %s has the name %q, which names another build", id, name)
		case location != "global":
			req.Name = name
		}
	}
	builds, err := v.client()
	if err != nil {
		return nil, err
	}
	call, cancel := context.WithTimeout(ctx, CallTimeout)
	defer cancel()
	got, err := builds.GetBuild(call, req, gax.WithRetry(func() gax.Retryer { return nil }))
	switch status.Code(err) {
	case codes.OK:
	case codes.NotFound, codes.InvalidArgument:
		return nil, refuse("cloud build has no build %s in project %s (%v)", id, project, status.Convert(err).Message())
	case codes.PermissionDenied:
		return nil, fmt.Errorf("%w: getting build %s of project %s: %w: grant the function's service account %s on project %s",
			ErrUnconfirmed, id, project, err, ViewerRole, project)
	default:
		return nil, fmt.Errorf("%w: getting build %s of project %s: %w", ErrUnconfirmed, id, project, err)
	}
	switch {
	case got.GetId() != id:
		return nil, refuse("cloud build answered build %q when asked for %s", got.GetId(), id)
	case !slices.Contains(v.projects, got.GetProjectId()):
		return nil, refuse("cloud build says build %s is of project %q, not one of BUILD_PROJECTS (%s)", id, got.GetProjectId(), strings.Join(v.projects, ", "))
	case got.GetStatus() != cloudbuildpb.Build_SUCCESS:
		return nil, refuse("cloud build says build %s is %s, not SUCCESS", id, got.GetStatus())
	}
	return got, nil
}

// refuse returns an error wrapping ErrRefused.
func refuse(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrRefused, fmt.Sprintf(format, args...))
}

// parseName splits projects/P/locations/L/builds/ID.
func parseName(name string) (location, id string, ok bool) {
	parts := strings.Split(name, "/")
	if len(parts) != 6 || parts[0] != "projects" || parts[2] != "locations" || parts[4] != "builds" {
		return "", "", false
	}
	for _, p := range parts {
		if p == "" {
			return "", "", false
		}
	}
	return parts[3], parts[5], true
}

// client returns the Cloud Build client, made on first use.
func (v *Verifier) client() (Builds, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.builds != nil {
		return v.builds, nil
	}
	// The client lives as long as the instance: not the invocation's context.
	ctx := context.Background()
	var opts []option.ClientOption
	if v.emulatorHost != "" {
		var err error
		if opts, err = emulator.ClientOptions(v.emulatorHost); err != nil {
			return nil, fmt.Errorf("cloud build api emulator %q: %w", v.emulatorHost, err)
		}
	}
	c, err := cloudbuild.NewClient(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("%w: creating the cloud build api client: %w", ErrUnconfirmed, err)
	}
	v.builds = c
	return c, nil
}
