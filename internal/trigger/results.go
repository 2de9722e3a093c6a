package trigger

import (
	"context"

	"cloud.google.com/go/cloudbuild/apiv1/v2/cloudbuildpb"

	"github.com/onnewimage/onnewimage/internal/buildevent"
	"github.com/onnewimage/onnewimage/internal/result"
	"github.com/onnewimage/onnewimage/internal/rollout"
	"github.com/onnewimage/onnewimage/internal/target"
)

// Publisher publishes a target's result of a build (result.Publisher, for
// RESULT_TOPIC).
type Publisher interface {
	Publish(ctx context.Context, m result.Message) error
}

// publish publishes rep, t's outcome of b, when results are published, and
// records the message and any error in rep.
func (h *Handler) publish(ctx context.Context, rep *Report, t target.Target, b *cloudbuildpb.Build) {
	if h.results == nil {
		return
	}
	m := result.Message{
		BuildID:       rep.BuildID,
		Target:        t.Name,
		Where:         t.Where(),
		Image:         rep.Image,
		PreviousImage: rep.Previous,
		Strategy:      string(t.Strategy),
		Outcome:       string(rep.Outcome),
		Reason:        rep.Reason,
		Retry:         rep.Outcome == rollout.Failed && Retryable(rep.Err),
		DryRun:        rep.DryRun,
		Commit:        buildevent.Commit(b),
		Branch:        target.Branch.Value(b),
		Tag:           target.Tag.Value(b),
		Time:          h.now().UTC(),
	}
	rep.Result = &m
	rep.ResultErr = h.results.Publish(ctx, m)
}
