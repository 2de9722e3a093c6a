package onnewimage

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// hostileShapes build each delivery shape's request around a Pub/Sub
// message given as raw JSON, so that a case can carry what a map cannot
// (a duplicated key, a string that is not base64).
var hostileShapes = map[string]func(t *testing.T, msg string, published time.Time) *http.Request{
	"binary CloudEvent": func(t *testing.T, msg string, published time.Time) *http.Request {
		r := rawPost(t, "application/json", `{"message":`+msg+`,"subscription":"projects/demo/subscriptions/eventarc-onnewimage"}`)
		r.Header.Set("ce-id", "4242")
		r.Header.Set("ce-source", "//pubsub.googleapis.com/projects/demo/topics/cloud-builds")
		r.Header.Set("ce-specversion", "1.0")
		r.Header.Set("ce-type", "google.cloud.pubsub.topic.v1.messagePublished")
		r.Header.Set("ce-time", published.Format(time.RFC3339Nano))
		return r
	},
	"structured CloudEvent": func(t *testing.T, msg string, published time.Time) *http.Request {
		return rawPost(t, "application/cloudevents+json", `{"specversion":"1.0","id":"4242","type":"google.cloud.pubsub.topic.v1.messagePublished",`+
			`"source":"//pubsub.googleapis.com/projects/demo/topics/cloud-builds","time":"`+published.Format(time.RFC3339Nano)+`",`+
			`"datacontenttype":"application/json","data":{"message":`+msg+`,"subscription":"projects/demo/subscriptions/eventarc-onnewimage"}}`)
	},
	"1st-gen background event": func(t *testing.T, msg string, published time.Time) *http.Request {
		return rawPost(t, "application/json", `{"context":{"eventId":"4242","eventType":"google.pubsub.topic.publish","timestamp":"`+published.Format(time.RFC3339Nano)+`",`+
			`"resource":{"service":"pubsub.googleapis.com","name":"projects/demo/topics/cloud-builds","type":"type.googleapis.com/google.pubsub.v1.PubsubMessage"}},`+
			`"data":`+msg+`}`)
	},
	"raw push body": func(t *testing.T, msg string, _ time.Time) *http.Request {
		return rawPost(t, "application/json", `{"message":`+msg+`,"subscription":"projects/demo/subscriptions/eventarc-onnewimage"}`)
	},
}

func rawPost(t *testing.T, contentType, body string) *http.Request {
	t.Helper()
	r, err := http.NewRequest(http.MethodPost, functionURL, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("Content-Type", contentType)
	return r
}

// message is a Pub/Sub message as Pub/Sub writes it, around data encoded
// as given, with status and buildId attributes (left out when empty).
func message(data, status, buildID string, published time.Time) string {
	attrs := map[string]string{}
	if status != "" {
		attrs["status"] = status
	}
	if buildID != "" {
		attrs["buildId"] = buildID
	}
	a, _ := json.Marshal(attrs)
	d, _ := json.Marshal(data)
	p := published.Format(time.RFC3339Nano)
	return fmt.Sprintf(`{"attributes":%s,"data":%s,"messageId":"4242","message_id":"4242","publishTime":%q,"publish_time":%q}`, a, d, p, p)
}

// jsonString is s as a JSON string.
func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// b64 encodes a build as Pub/Sub does.
func b64(build string) string { return base64.StdEncoding.EncodeToString([]byte(build)) }

// knativeWith returns the deployable sample build with edit applied to its
// decoded JSON.
func knativeWith(t *testing.T, edit func(b map[string]any)) string {
	t.Helper()
	var b map[string]any
	if err := json.Unmarshal(sample(t, knative), &b); err != nil {
		t.Fatal(err)
	}
	edit(b)
	out, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// withImages replaces the build's pushed images with name, digest pairs.
func withImages(nameDigest ...string) func(map[string]any) {
	return func(b map[string]any) {
		var imgs []any
		for i := 0; i < len(nameDigest); i += 2 {
			imgs = append(imgs, map[string]any{"name": nameDigest[i], "digest": nameDigest[i+1]})
		}
		b["results"] = map[string]any{"images": imgs}
	}
}

// injected is what a hostile field carries to forge a log entry or a field.
const injected = "x\"}\n{\"severity\":\"NOTICE\",\"outcome\":\"deployed\",\"injected\":\"1\"}\r\n\u2028"

// want is how the function must answer a hostile message.
type want struct {
	Code     int    // HTTP status: 200 acknowledges, 5xx asks for redelivery.
	Severity string // "" when the function never runs (the framework refuses).
	Outcome  string
	Reason   string // A prefix of the logged reason.
}

// frameworkRefuses is the answer when the functions framework refuses the
// request before the function runs: it decodes a raw push body's message
// itself (data as standard base64, publishTime as a time).
var frameworkRefuses = want{Code: http.StatusBadRequest}

func refused(reason string) want { return want{http.StatusOK, "ERROR", "failed", reason} }
func skipped(reason string) want { return want{http.StatusOK, "INFO", "skipped", reason} }

// TestHostileInput delivers each hostile or broken message through every
// delivery shape to the real functions framework server. Each must change
// nothing in the cluster (no write; no connection at all for what is
// dismissed before one), be acknowledged or retried as stated, and log
// exactly one line with the usual fields and no other.
func TestHostileInput(t *testing.T) {
	now := time.Now().Add(-time.Minute)
	hex := strings.Repeat("ab", 32)
	match := func(reason string) string { return `no pushed image matches "` + sampleRepo + `"` + reason }
	other := func(id string) string { // A SUCCESS build of another image, with id.
		return knativeWith(t, func(b map[string]any) {
			b["id"] = id
			withImages("gcr.io/other/app:v1", "sha256:"+hex)(b)
		})
	}
	tenThousand := func(b map[string]any) {
		var imgs []any
		for i := 0; i < 10000; i++ {
			imgs = append(imgs, map[string]any{"name": fmt.Sprintf("%s:t%d", sampleRepo, i), "digest": fmt.Sprintf("sha256:%064x", i)})
		}
		b["results"] = map[string]any{"images": imgs}
	}
	ok := knativeWith(t, func(map[string]any) {})
	// Tags whose bytes encode with '+' and '/': the URL-safe spelling differs.
	okTagged := knativeWith(t, func(b map[string]any) { b["tags"] = []any{"?>?~??>"} })
	if std := b64(okTagged); !strings.ContainsAny(std, "+/") {
		t.Fatalf("pick tags that need '+' or '/': %s", std)
	}
	for len(okTagged)%3 == 0 {
		okTagged += " " // So that the standard spelling is padded.
	}
	tests := []struct {
		name    string
		msg     string
		want    want
		byShape map[string]want // Where a shape answers otherwise.
	}{
		// Not a Build.
		{"data not JSON", message(b64("hello"), "SUCCESS", "b", now), refused("malformed build message: build: proto:"), nil},
		{"data is a JSON array", message(b64(`[1,2]`), "SUCCESS", "b", now), refused("malformed build message: build: proto:"), nil},
		{"data is JSON but not a Build", message(b64(`{"hello":"world"}`), "SUCCESS", "b", now), refused("malformed build message: build has no id"), nil},
		{"data has wrong types", message(b64(`{"id":5,"status":true}`), "SUCCESS", "b", now), refused("malformed build message: build: proto:"), nil},
		{"empty data", message("", "SUCCESS", "b", now), refused("malformed build message: message has no data"), nil},
		{"no data at all", `{"attributes":{"status":"SUCCESS"},"messageId":"4242","publishTime":"` + now.Format(time.RFC3339Nano) + `"}`,
			refused("malformed build message: message has no data"), nil},
		// Encodings.
		{"data not base64", message("%%%", "SUCCESS", "b", now), refused("malformed build message: message data is not standard padded base64"),
			map[string]want{"raw push body": frameworkRefuses}},
		{"URL-safe base64", message(base64.URLEncoding.EncodeToString([]byte(okTagged)), "SUCCESS", "b", now),
			refused("malformed build message: message data is not standard padded base64"), map[string]want{"raw push body": frameworkRefuses}},
		{"unpadded base64", message(base64.RawStdEncoding.EncodeToString([]byte(okTagged)), "SUCCESS", "b", now),
			refused("malformed build message: message data is not standard padded base64"), map[string]want{"raw push body": frameworkRefuses}},
		{"10 MiB of data", message(strings.Repeat("A", 10<<20), "SUCCESS", "b", now), refused("malformed build message: message too large: "), nil},
		// Duplicated keys.
		{"duplicated status in the build", message(b64(strings.Replace(ok, `"status":"SUCCESS"`, `"status":"FAILURE","status":"SUCCESS"`, 1)), "SUCCESS", "b", now),
			refused(`malformed build message: build: duplicated JSON key "status"`), nil},
		{"duplicated digest in the build", message(b64(strings.Replace(ok, `"digest":"`, `"digest":"sha256:`+hex+`","digest":"`, 1)), "SUCCESS", "b", now),
			refused(`malformed build message: build: duplicated JSON key "digest"`), nil},
		{"duplicated data in the message", strings.Replace(message(b64(other("last")), "SUCCESS", "b", now), `"data":`, `"data":"`+b64(ok)+`","data":`, 1),
			refused(`malformed build message: envelope: duplicated JSON key "data"`),
			// These shapes decode the message in the framework, which keeps
			// the last key: the function sees only the last build.
			map[string]want{"1st-gen background event": skipped(match("")), "raw push body": skipped(match(""))}},
		// Status attribute against the build.
		{"status attribute SUCCESS, build FAILURE", message(b64(strings.Replace(ok, `"status":"SUCCESS"`, `"status":"FAILURE"`, 1)), "SUCCESS", "b", now),
			refused(`malformed build message: message attributes disagree with the build: status attribute "SUCCESS", build status FAILURE`), nil},
		{"status attribute FAILURE, build SUCCESS", message(b64(ok), "FAILURE", "b", now), skipped("build status is FAILURE, not SUCCESS"), nil},
		{"status attribute QUEUED, data not even JSON", message(b64("garbage"), "QUEUED", "b", now), skipped("build status is QUEUED, not SUCCESS"), nil},
		// Dismissed from the attributes before message.data is decoded: its
		// base64 is no longer checked (refused before the performance work).
		{"status attribute QUEUED, data not base64", message("%%%", "QUEUED", "b", now), skipped("build status is QUEUED, not SUCCESS"),
			map[string]want{"raw push body": frameworkRefuses}},
		{"status attribute QUEUED, publishTime not a time", strings.Replace(message(b64(ok), "QUEUED", "b", now), `"`+now.Format(time.RFC3339Nano)+`"`, `"noon"`, 2),
			skipped("build status is QUEUED, not SUCCESS"),
			map[string]want{"1st-gen background event": {Code: http.StatusOK}, "raw push body": frameworkRefuses}},
		{"status attribute QUEUED twice, then SUCCESS", strings.Replace(message(b64(other("b")), "SUCCESS", "b", now), `"status":"SUCCESS"`, `"status":"QUEUED","status":"SUCCESS"`, 1),
			refused(`malformed build message: envelope: duplicated JSON key "status"`),
			map[string]want{"1st-gen background event": skipped(match("")), "raw push body": skipped(match(""))}},
		{"no status attribute, build FAILURE", message(b64(strings.Replace(ok, `"status":"SUCCESS"`, `"status":"FAILURE"`, 1)), "", "", now),
			skipped("build status is FAILURE, not SUCCESS"), nil},
		// Images and digests.
		{"SUCCESS without images", message(b64(knativeWith(t, func(b map[string]any) { delete(b, "results") })), "SUCCESS", "b", now),
			skipped(match(" (pushed: none)")), nil},
		{"image without digest", message(b64(knativeWith(t, withImages(sampleRepo+":v1", ""))), "SUCCESS", "b", now),
			skipped("matching image has no digest: " + sampleRepo), nil},
		{"digest of 63 hex", message(b64(knativeWith(t, withImages(sampleRepo+":v1", "sha256:"+hex[:63]))), "SUCCESS", "b", now),
			skipped("digest is not sha256:<64 lower-case hex>"), nil},
		{"digest in upper-case hex", message(b64(knativeWith(t, withImages(sampleRepo+":v1", "sha256:"+strings.ToUpper(hex)))), "SUCCESS", "b", now),
			skipped("digest is not sha256:<64 lower-case hex>"), nil},
		{"sha512 digest", message(b64(knativeWith(t, withImages(sampleRepo+":v1", "sha512:"+hex+hex))), "SUCCESS", "b", now),
			skipped("digest is not sha256:<64 lower-case hex>"), nil},
		{"digest without algorithm", message(b64(knativeWith(t, withImages(sampleRepo+":v1", hex))), "SUCCESS", "b", now),
			skipped("digest is not sha256:<64 lower-case hex>"), nil},
		{"name with a quote", message(b64(knativeWith(t, withImages(sampleRepo+`"`, "sha256:"+hex))), "SUCCESS", "b", now), skipped(match("")), nil},
		{"name with a newline", message(b64(knativeWith(t, withImages(sampleRepo+"\n", "sha256:"+hex))), "SUCCESS", "b", now), skipped(match("")), nil},
		{"name with a space", message(b64(knativeWith(t, withImages(sampleRepo+" ", "sha256:"+hex))), "SUCCESS", "b", now), skipped(match("")), nil},
		{"name with ..", message(b64(knativeWith(t, withImages("gcr.io/project-id/evil/../quickstart-image", "sha256:"+hex))), "SUCCESS", "b", now), skipped(match("")), nil},
		{"name in upper case", message(b64(knativeWith(t, withImages("gcr.io/project-id/Quickstart-Image", "sha256:"+hex))), "SUCCESS", "b", now), skipped(match("")), nil},
		{"name with a Cyrillic lookalike", message(b64(knativeWith(t, withImages("gcr.io/project-id/quickstart-imag\u0435", "sha256:"+hex))), "SUCCESS", "b", now), skipped(match("")), nil},
		{"name with a trailing /", message(b64(knativeWith(t, withImages(sampleRepo+"/", "sha256:"+hex))), "SUCCESS", "b", now), skipped(match("")), nil},
		{"lookalike quickstart-image-evil", message(b64(knativeWith(t, withImages(sampleRepo+"-evil", "sha256:"+hex))), "SUCCESS", "b", now), skipped(match("")), nil},
		{"lookalike quickstart-image/evil", message(b64(knativeWith(t, withImages(sampleRepo+"/evil", "sha256:"+hex))), "SUCCESS", "b", now), skipped(match("")), nil},
		{"another project's quickstart-image", message(b64(knativeWith(t, withImages("gcr.io/evil-project/quickstart-image", "sha256:"+hex))), "SUCCESS", "b", now), skipped(match("")), nil},
		{"another registry host", message(b64(knativeWith(t, withImages("eu.gcr.io/project-id/quickstart-image", "sha256:"+hex))), "SUCCESS", "b", now), skipped(match("")), nil},
		{"a registry port", message(b64(knativeWith(t, withImages("gcr.io:443/project-id/quickstart-image", "sha256:"+hex))), "SUCCESS", "b", now), skipped(match("")), nil},
		{"10,000 images of the repository", message(b64(knativeWith(t, tenThousand)), "SUCCESS", "b", now),
			skipped("matching images have different digests: " + sampleRepo + " has sha256:"), nil},
		// Times.
		{"created in 2099", message(b64(knativeWith(t, func(b map[string]any) { b["createTime"] = "2099-01-01T00:00:00Z" })), "SUCCESS", "b", now),
			refused("build created in the future: build BUILD_ID was created at 2099-01-01T00:00:00Z"), nil},
		{"no createTime", message(b64(knativeWith(t, func(b map[string]any) { delete(b, "createTime") })), "SUCCESS", "b", now),
			refused("build cannot be ordered: build BUILD_ID has no createTime"), nil},
		// Injection into every field that reaches the log line.
		{"injection in the buildId attribute", message(b64("garbage"), "QUEUED", injected, now), skipped("build status is QUEUED, not SUCCESS"), nil},
		{"injection in the status attribute", message(b64("garbage"), injected, "b", now), skipped("build status is " + injected), nil},
		{"injection in the messageId", strings.Replace(message(b64("garbage"), "QUEUED", "b", now), `"4242"`, jsonString(injected), 2),
			skipped("build status is QUEUED"),
			// The framework sets messageId from the event ID, leaving
			// message_id to disagree.
			map[string]want{"1st-gen background event": refused(`malformed build message: duplicated JSON key: messageId "4242" and message_id "x\"}\n{`)}},
		{"injection in the build id", message(b64(other(injected)), "SUCCESS", "b", now), skipped(match("")), nil},
		{"injection in a pushed name", message(b64(knativeWith(t, withImages(sampleRepo+":"+injected, "sha256:"+hex))), "SUCCESS", "b", now),
			skipped(match(` (pushed: ` + sampleRepo + `:` + injected)), nil},
		{"injection in a digest", message(b64(knativeWith(t, withImages(sampleRepo+":v1", "sha256:"+injected))), "SUCCESS", "b", now),
			skipped("digest is not sha256:<64 lower-case hex>: " + sampleRepo + ":v1 has digest "), nil},
		{"injection in the createTime", message(b64(knativeWith(t, func(b map[string]any) { b["createTime"] = injected })), "SUCCESS", "b", now),
			refused("malformed build message: build: proto:"), nil},
		{"injection in the publishTime", strings.Replace(message(b64(ok), "SUCCESS", "b", now), `"`+now.Format(time.RFC3339Nano)+`"`, jsonString(injected), 2),
			refused("malformed build message: publishTime "),
			// These shapes take the publish time from the event, not the message.
			map[string]want{"1st-gen background event": {Code: http.StatusOK}, "raw push body": frameworkRefuses}},
	}
	if len(tests) < 40 {
		t.Errorf("%d hostile cases, want at least 40", len(tests))
	}
	for _, tt := range tests {
		for shape, request := range hostileShapes {
			t.Run(tt.name+"/"+shape, func(t *testing.T) {
				w, ok := tt.byShape[shape]
				if !ok {
					w = tt.want
				}
				tg := newTarget(t)
				use(t, env(), tg)
				before, confirmations := containerAPI.Calls(), cloudBuild.Calls()
				code, lines := deliver(t, request(t, tt.msg, now))
				if code != w.Code {
					t.Errorf("HTTP status %d, want %d", code, w.Code)
				}
				if got := cloudBuild.Calls() - confirmations; got != 0 {
					t.Errorf("asked Cloud Build %d times, want none: only a deployable message costs the call", got)
				}
				for _, a := range tg.client.Actions() {
					if !slices.Contains([]string{"get", "list", "watch"}, a.GetVerb()) {
						t.Errorf("wrote to the cluster: %s %s", a.GetVerb(), a.GetResource().Resource)
					}
				}
				if w.Severity == "" {
					// The framework refused, or a shape that resolved the
					// hostile part on its own: whatever it logged, nothing
					// may have been written (checked above).
					if w.Code == http.StatusBadRequest && len(lines) != 0 {
						t.Errorf("function ran and logged %v; want the framework to refuse", lines)
					}
					return
				}
				if got := containerAPI.Calls() - before; got != 0 || len(tg.client.Actions()) != 0 {
					t.Errorf("connected to the cluster (%d GetCluster calls, %d API calls), want none", got, len(tg.client.Actions()))
				}
				if len(lines) != 1 {
					t.Fatalf("function wrote %d log lines, want exactly 1: %.1000v", len(lines), lines)
				}
				line := lines[0]
				keys := []string{"buildId", "image", "message", "messageId", "outcome", "reason", "severity", "status", "target", "targetName", "time"}
				if w.Outcome == "failed" {
					keys = append(keys, "retry")
				}
				slices.Sort(keys)
				if diff := cmp.Diff(keys, slices.Sorted(maps.Keys(line))); diff != "" {
					t.Errorf("log line fields (-want +got):\n%s", diff)
				}
				got := want{code, fmt.Sprint(line["severity"]), fmt.Sprint(line["outcome"]), fmt.Sprint(line["reason"])}
				if len(got.Reason) > 1024 {
					t.Errorf("reason is %d bytes long, want at most 1024: %.200s...", len(got.Reason), got.Reason)
				}
				if strings.HasPrefix(got.Reason, w.Reason) {
					got.Reason = w.Reason
				}
				if diff := cmp.Diff(w, got); diff != "" {
					t.Errorf("answer (-want +got):\n%s", diff)
				}
				if w.Outcome == "failed" && line["retry"] != false {
					t.Errorf("retry = %v, want false", line["retry"])
				}
			})
		}
	}
}

// deliver sends r to the function and returns the HTTP status and every
// line the function logged, one entry per line of output (a line that is
// not JSON fails the test).
func deliver(t *testing.T, r *http.Request) (int, []map[string]any) {
	t.Helper()
	logs.take()
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, logs.take()
}
