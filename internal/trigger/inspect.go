package trigger

import (
	"context"

	"github.com/onnewimage/onnewimage/internal/rollout"
	"github.com/onnewimage/onnewimage/internal/target"
)

// Inspect reads what the target named name (with one target, "" names it)
// runs and keeps out, with get requests only (see rollout.Inspect and
// rollout.InspectBlueGreen), through the same shared connection to its
// cluster as its deploys. A name that picks no target is an error wrapping
// config.ErrNoTarget.
func (h *Handler) Inspect(ctx context.Context, name string) (rollout.State, error) {
	t, err := h.cfg.Target(name)
	if err != nil {
		return rollout.State{}, err
	}
	conn := h.connector(t.Cluster)
	client, err := conn.Clientset(ctx)
	if err != nil {
		return rollout.State{}, err
	}
	var s rollout.State
	switch t.Strategy {
	case target.BlueGreen:
		s, err = rollout.InspectBlueGreen(ctx, client, blueGreenTarget(t))
	case target.Canary:
		s, err = rollout.InspectCanary(ctx, client, canaryOn(client, t))
	default:
		s, err = rollout.Inspect(ctx, client, rollingTarget(t))
	}
	conn.Forget(err)
	return s, err
}
