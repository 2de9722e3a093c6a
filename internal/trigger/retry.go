package trigger

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/onnewimage/onnewimage/internal/buildevent"
	"github.com/onnewimage/onnewimage/internal/cluster"
	"github.com/onnewimage/onnewimage/internal/config"
	"github.com/onnewimage/onnewimage/internal/emulator"
	"github.com/onnewimage/onnewimage/internal/provenance"
	"github.com/onnewimage/onnewimage/internal/rollout"
)

// Retryable reports whether a failed event can succeed if Pub/Sub delivers
// it again: the error is transient (unavailable, timeout, throttled,
// conflict, a blue-green release not yet available within ROLLOUT_TIMEOUT)
// or an operator can fix its cause without touching the message
// (Unauthorized, Forbidden: IAM or RBAC). Errors that no redelivery can fix
// (undecodable message, invalid configuration such as a remote emulator host,
// a cluster lacking the chosen ENDPOINT, missing Deployment or container, a
// router pointing at neither colour, a release that exceeded its progress
// deadline, an unreadable release record, a build ID that cannot be a label
// value, a release gate that failed or cannot run, a build that Cloud Build
// refuses, an aborted canary, an HTTPRoute that cannot split traffic
// exactly) are not retryable; a release gate not done
// within GATE_TIMEOUT is, and so is a build Cloud Build could not be asked
// about (Unavailable, DeadlineExceeded, PermissionDenied). An error this function does not recognise is
// retried: MAX_EVENT_AGE bounds how long.
func Retryable(err error) bool {
	switch {
	case err == nil:
		return false
	case errors.Is(err, buildevent.ErrMalformed),
		errors.Is(err, config.ErrInvalid),
		errors.Is(err, rollout.ErrTargetMissing),
		errors.Is(err, rollout.ErrRouterUnknown),
		errors.Is(err, rollout.ErrProgressDeadline),
		errors.Is(err, rollout.ErrRecordUnreadable),
		errors.Is(err, rollout.ErrBuildIDInvalid),
		errors.Is(err, rollout.ErrGateFailed),
		errors.Is(err, rollout.ErrGateInvalid),
		errors.Is(err, rollout.ErrCanaryAborted),
		errors.Is(err, rollout.ErrRouteInvalid),
		errors.Is(err, ErrUnorderable),
		errors.Is(err, ErrNoPublishTime),
		errors.Is(err, ErrFutureBuild),
		errors.Is(err, provenance.ErrRefused),
		errors.Is(err, emulator.ErrNotLoopback),
		errors.Is(err, emulator.ErrMalformed),
		errors.Is(err, cluster.ErrNoEndpoint):
		return false
	case errors.Is(err, rollout.ErrRolloutTimeout), errors.Is(err, rollout.ErrGateTimeout):
		// The retry finds the release on the idle colour, does not patch it
		// again, and switches once it is available.
		return true
	}
	var apiStatus apierrors.APIStatus
	if errors.As(err, &apiStatus) {
		switch {
		case apierrors.IsNotFound(err), apierrors.IsInvalid(err), apierrors.IsBadRequest(err),
			apierrors.IsMethodNotSupported(err), apierrors.IsNotAcceptable(err),
			apierrors.IsUnsupportedMediaType(err), apierrors.IsRequestEntityTooLargeError(err):
			return false
		}
		return true // Conflict, 429, 5xx, timeouts, Unauthorized, Forbidden.
	}
	if s, ok := status.FromError(err); ok && s.Code() != codes.Unknown {
		switch s.Code() {
		case codes.NotFound, codes.InvalidArgument, codes.OutOfRange, codes.Unimplemented:
			return false
		}
		return true // Unavailable, DeadlineExceeded, ResourceExhausted, PermissionDenied, ...
	}
	return true // Connection, TLS, DNS, token and context errors.
}

// explain turns a failure into the reason logged, with what to do about it
// when an operator has to act.
func explain(err error) string {
	switch {
	case errors.Is(err, provenance.ErrUnconfirmed):
		return err.Error() // It names the role to grant when one is missing.
	case apierrors.IsForbidden(err):
		return fmt.Sprintf("%v: grant the function's identity this permission (see k8s/rbac.yaml)", err)
	case apierrors.IsUnauthorized(err):
		return fmt.Sprintf("%v: the cluster does not accept the function's credentials", err)
	case errors.Is(err, cluster.ErrNoToken) && errors.Is(err, context.DeadlineExceeded):
		return fmt.Sprintf("%v: Application Default Credentials gave no token for the cluster in time", err)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Sprintf("%v: the cluster did not answer in time", err)
	}
	if s, ok := status.FromError(err); ok {
		switch s.Code() {
		case codes.PermissionDenied, codes.Unauthenticated:
			return fmt.Sprintf("%v: the function's service account needs roles/container.clusterViewer on the cluster's project", err)
		case codes.NotFound:
			return fmt.Sprintf("%v: check PROJECT, LOCATION and CLUSTER", err)
		}
	}
	return err.Error()
}
