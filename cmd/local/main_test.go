package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestListenAddr checks where local listens for each setting: loopback
// unless another host is asked for by name.
func TestListenAddr(t *testing.T) {
	tests := []struct {
		name  string
		env   map[string]string
		event bool
		want  string // What the functions framework listens on, or the error.
	}{
		{"default is loopback", nil, false, "127.0.0.1:8080"},
		{"PORT", map[string]string{"PORT": "9090"}, false, "127.0.0.1:9090"},
		{"LOCAL_ONLY=true, the functions framework convention", map[string]string{"LOCAL_ONLY": "true"}, false, "127.0.0.1:8080"},
		{"every interface, asked for", map[string]string{"HOST": "0.0.0.0", "PORT": "9090"}, false, "0.0.0.0:9090"},
		{"every interface, IPv6", map[string]string{"HOST": "::"}, false, "[::]:8080"},
		{"one address", map[string]string{"HOST": "192.0.2.7"}, false, "192.0.2.7:8080"},
		{"IPv6 loopback", map[string]string{"HOST": "::1", "LOCAL_ONLY": "true"}, false, "[::1]:8080"},
		{"localhost", map[string]string{"HOST": "localhost", "LOCAL_ONLY": "true"}, false, "localhost:8080"},
		{"-event stays on loopback", map[string]string{"HOST": "0.0.0.0"}, true, "127.0.0.1:8080"},
		{"LOCAL_ONLY=true contradicts HOST", map[string]string{"HOST": "0.0.0.0", "LOCAL_ONLY": "true"}, false,
			`error: HOST="0.0.0.0" is not a loopback address, and LOCAL_ONLY=true`},
		{"LOCAL_ONLY=false no longer opens the port", map[string]string{"LOCAL_ONLY": "false"}, false,
			`error: LOCAL_ONLY="false": local listens on loopback unless HOST names another address (HOST=0.0.0.0 for every interface)`},
		{"LOCAL_ONLY garbage", map[string]string{"LOCAL_ONLY": "yes"}, false,
			`error: LOCAL_ONLY="yes": local listens on loopback unless HOST names another address`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			host, port, err := listenAddr(func(k string) string { return tt.env[k] }, tt.event)
			got := host + ":" + port // As funcframework.StartHostPort joins them.
			if err != nil {
				got = "error: " + err.Error()
			}
			if strings.HasPrefix(tt.want, "error: ") && strings.HasPrefix(got, tt.want) {
				return
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("listenAddr (-want +got):\n%s", diff)
			}
		})
	}
}

func TestReadRequest(t *testing.T) {
	req, err := readRequest(filepath.Join("..", "..", "testdata", "cloudbuild", "cloudevent-pubsub-binary-request.http"))
	if err != nil {
		t.Fatal(err)
	}
	if req.Method != "POST" || req.Header.Get("ce-type") != "google.cloud.pubsub.topic.v1.messagePublished" || req.Header.Get("ce-id") != "11925470562539716" {
		t.Errorf("request %s with headers %v", req.Method, req.Header)
	}
	if req.Header.Get("Authorization") != "" {
		t.Error("the recorded placeholder token is sent")
	}
	body, _ := io.ReadAll(req.Body)
	if int64(len(body)) != req.ContentLength || !strings.HasPrefix(string(body), "{\n  \"message\"") || !strings.Contains(string(body), `"subscription"`) {
		t.Errorf("body of %d bytes (Content-Length %d): %.60q", len(body), req.ContentLength, body)
	}
}

func TestReadRequestRejectsAFileWithoutABody(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.http")
	if err := writeFile(path, "POST / HTTP/1.1\nHost: x\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := readRequest(path); err == nil {
		t.Error("a request file without a blank line was accepted")
	}
}

func writeFile(path, s string) error { return os.WriteFile(path, []byte(s), 0o600) }
