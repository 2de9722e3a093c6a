package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

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
