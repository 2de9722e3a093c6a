// Package onnewimage is the onNewImage Cloud Function: an event-driven
// continuous-deployment trigger for GKE.
//
// It is fired by each message Cloud Build publishes to the cloud-builds
// topic. For a SUCCESS build that pushed a target's image and satisfies its
// when rules, it updates that target's Deployment to the image, pinned by
// the digest the build produced: every such target, concurrently, with one
// log line per target. Everything else is acknowledged with one log line
// saying why.
//
// A returned error asks Pub/Sub to deliver the message again (deploy with
// --retry): some target failed in a way a redelivery can help, and on it the
// targets already done skip the release. nil means done, even when the
// function chose to do nothing or a target failed for good (logged ERROR).
package onnewimage

import (
	"context"
	"log/slog"
	"os"
	"sync"

	"github.com/GoogleCloudPlatform/functions-framework-go/functions"
	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/onnewimage/onnewimage/internal/cloudlog"
	"github.com/onnewimage/onnewimage/internal/config"
	"github.com/onnewimage/onnewimage/internal/rollout"
	"github.com/onnewimage/onnewimage/internal/trigger"
)

func init() {
	functions.CloudEvent("onNewImage", OnNewImage)
}

var (
	logger = cloudlog.New(os.Stdout)

	// handler reads the configuration once per instance, on first use.
	handler = sync.OnceValues(func() (*trigger.Handler, error) {
		cfg, err := config.Load(os.Getenv)
		if err != nil {
			return nil, err
		}
		return trigger.New(cfg, trigger.Options{}), nil
	})
)

// OnNewImage handles one cloud-builds message.
func OnNewImage(ctx context.Context, e event.Event) error {
	h, err := handler()
	if err != nil {
		logger.LogAttrs(ctx, slog.LevelError, "configuration is invalid: "+err.Error(),
			slog.String("messageId", e.ID()),
			slog.String("outcome", string(rollout.Failed)),
			slog.String("reason", err.Error()))
		return nil // Redelivery cannot help until an operator redeploys.
	}
	// Each target's line is written as soon as it is done; the error joins
	// the failures a redelivery can help.
	return h.Dispatch(ctx, trigger.Event{ID: e.ID(), Time: e.Time(), Data: e.Data()}, func(rep trigger.Report) {
		logReport(ctx, rep)
		if rep.ResultErr != nil {
			logResultError(ctx, rep)
		}
	})
}

// logReport writes one log line: a target's outcome, or the message's.
func logReport(ctx context.Context, rep trigger.Report) {
	level, msg := slog.LevelInfo, "skipped build "+rep.BuildID+": "+rep.Reason
	switch rep.Outcome {
	case rollout.Deployed:
		level, msg = cloudlog.LevelNotice, "deployed "+rep.Image+" to "+rep.Target
	case rollout.Failed:
		level, msg = slog.LevelError, "failed to deploy build "+rep.BuildID+": "+rep.Reason
	}
	attrs := []slog.Attr{
		slog.String("messageId", rep.MessageID),
		slog.String("buildId", rep.BuildID),
		slog.String("status", rep.Status),
		slog.String("image", rep.Image),
		slog.String("target", rep.Target),
		slog.String("targetName", rep.TargetName),
		slog.String("outcome", string(rep.Outcome)),
		slog.String("reason", rep.Reason),
	}
	if rep.Previous != "" {
		attrs = append(attrs, slog.String("previousImage", rep.Previous))
	}
	if rep.Outcome == rollout.Failed {
		attrs = append(attrs, slog.Bool("retry", trigger.Retryable(rep.Err)))
	}
	if rep.DryRun {
		attrs = append(attrs, slog.Bool("dryRun", true))
		if rep.Patch != "" {
			attrs = append(attrs, slog.String("patch", rep.Patch))
		}
	}
	logger.LogAttrs(ctx, level, msg, attrs...)
}

// logResultError writes the WARNING line of a result that could not be
// published to RESULT_TOPIC, with the message's content, so that what
// subscribers missed can be read in the log.
func logResultError(ctx context.Context, rep trigger.Report) {
	logger.LogAttrs(ctx, slog.LevelWarn, "result of build "+rep.BuildID+" for target "+rep.TargetName+" not published: "+rep.ResultErr.Error(),
		slog.String("messageId", rep.MessageID),
		slog.String("buildId", rep.BuildID),
		slog.String("targetName", rep.TargetName),
		slog.String("outcome", string(rep.Outcome)),
		slog.Any("result", rep.Result))
}
