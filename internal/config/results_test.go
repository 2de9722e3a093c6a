package config

import (
	"errors"
	"strings"
	"testing"
)

// RESULT_TOPIC takes a full topic name or a topic ID; PUBSUB_EMULATOR_HOST,
// which the Pub/Sub client honours without credentials, must be this
// machine, as CONTAINER_EMULATOR_HOST must.
func TestLoadResultTopic(t *testing.T) {
	tests := []struct {
		name      string
		topic     string
		emulator  string
		want      string // A problem Load names, or "" when accepted.
		wantTopic string
	}{
		{"unset", "", "", "", ""},
		{"topic ID", "deploy-results", "", "", "deploy-results"},
		{"full name", "projects/demo/topics/deploy-results", "", "", "projects/demo/topics/deploy-results"},
		{"spaces trimmed", " deploy-results ", "", "", "deploy-results"},
		{"emulator on loopback", "deploy-results", "127.0.0.1:8085", "", "deploy-results"},
		{"bad topic ID", "goog-results", "", `RESULT_TOPIC="goog-results": topic ID "goog-results" must not start with goog`, ""},
		{"subscription, not topic", "projects/demo/subscriptions/results", "", `RESULT_TOPIC="projects/demo/subscriptions/results": "projects/demo/subscriptions/results" is neither projects/PROJECT/topics/TOPIC nor a topic ID`, ""},
		{"remote emulator", "deploy-results", "10.0.0.7:8085", `PUBSUB_EMULATOR_HOST="10.0.0.7:8085": host 10.0.0.7 is not a loopback address`, ""},
		{"remote emulator without topic", "", "pubsub.example.com:8085", `PUBSUB_EMULATOR_HOST="pubsub.example.com:8085": host pubsub.example.com is not a loopback address`, ""},
		{"emulator without port", "deploy-results", "localhost", `PUBSUB_EMULATOR_HOST="localhost": not host:port`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := valid()
			e["RESULT_TOPIC"], e["PUBSUB_EMULATOR_HOST"] = tt.topic, tt.emulator
			c, err := Load(env(e))
			if tt.want == "" {
				if err != nil || c.ResultTopic != tt.wantTopic {
					t.Errorf("Load() = %q, %v; want %q accepted", c.ResultTopic, err, tt.wantTopic)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Load() error = %v, want ErrInvalid naming %q", err, tt.want)
			}
		})
	}
}
