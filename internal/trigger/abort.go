package trigger

import (
	"context"
	"errors"
	"fmt"

	"github.com/onnewimage/onnewimage/internal/rollout"
	"github.com/onnewimage/onnewimage/internal/target"
)

// ErrNotCanary is wrapped by Abort's error when the target named does not
// use the canary strategy: nothing was done.
var ErrNotCanary = errors.New("not a canary target")

// Abort stops the canary in progress on the target named name (with one
// target, "" names it) at once, as rollout.AbortCanary does: traffic back on
// the stable Deployment (the HTTPRoute's weights first), the canary to 0,
// its build recorded as rejected. Unlike Rollback it does nothing else:
// with no canary in progress the error wraps rollout.ErrNoCanary; on a
// target of another strategy it wraps ErrNotCanary. A name that picks no
// target is an error wrapping config.ErrNoTarget.
func (h *Handler) Abort(ctx context.Context, name string) (rollout.Result, error) {
	t, err := h.cfg.Target(name)
	if err != nil {
		return rollout.Result{}, err
	}
	if t.Strategy != target.Canary {
		return rollout.Result{}, fmt.Errorf("%w: target %s uses the %s strategy", ErrNotCanary, t.Name, t.Strategy)
	}
	conn := h.connector(t.Cluster)
	client, err := conn.Clientset(ctx)
	if err != nil {
		return rollout.Result{}, err
	}
	res, err := rollout.AbortCanary(ctx, client, canaryOn(client, t), rollout.Options{DryRun: h.cfg.DryRun})
	if err == nil {
		return res, nil
	}
	conn.Forget(err)
	return rollout.Result{}, err
}
