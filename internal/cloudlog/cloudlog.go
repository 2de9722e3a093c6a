// Package cloudlog writes log/slog records as the JSON lines Cloud Logging
// parses from a function's standard output: "severity" and "message" keys,
// every other attribute kept as a structured field.
package cloudlog

import (
	"io"
	"log/slog"
)

// LevelNotice is Cloud Logging's NOTICE: normal but significant, such as a
// deployment.
const LevelNotice = slog.Level(2)

// New returns a logger writing Cloud Logging JSON lines to w.
func New(w io.Writer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{
		Level:       slog.LevelDebug,
		ReplaceAttr: replace,
	}))
}

func replace(groups []string, a slog.Attr) slog.Attr {
	if len(groups) > 0 {
		return a
	}
	switch a.Key {
	case slog.MessageKey:
		a.Key = "message"
	case slog.LevelKey:
		a.Key = "severity"
		a.Value = slog.StringValue(Severity(a.Value.Any().(slog.Level)))
	}
	return a
}

// Severity names a slog level as Cloud Logging does.
func Severity(l slog.Level) string {
	switch {
	case l < slog.LevelInfo:
		return "DEBUG"
	case l < LevelNotice:
		return "INFO"
	case l < slog.LevelWarn:
		return "NOTICE"
	case l < slog.LevelError:
		return "WARNING"
	default:
		return "ERROR"
	}
}
