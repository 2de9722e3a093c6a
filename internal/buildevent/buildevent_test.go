package buildevent

import (
	"bytes"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/cloudbuild/apiv1/v2/cloudbuildpb"
	"github.com/google/go-cmp/cmp"
)

// readSample reads a captured build from testdata/cloudbuild, dropping the
// `// ...` lines its authors used to elide parts of JSONC files.
func readSample(t *testing.T, name string) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "testdata", "cloudbuild", name))
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, line := range bytes.Split(raw, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("//")) {
			out = append(out, line)
		}
	}
	return bytes.Join(out, []byte("\n"))
}

func TestDecodeBuildSamples(t *testing.T) {
	tests := []struct {
		file       string
		id, status string
		images     int
		commit     string
		createTime string
	}{
		{"cloudbuild-build-QUEUED.kazuhito-m.json", "ae13e183-5daf-4979-8d6c-7bad0b4482e5", "QUEUED", 0, "3f1ca068629de144fdffdc8570c0d0db41657dee", "2019-12-11T15:14:07.411757591Z"},
		{"cloudbuild-build-WORKING.kazuhito-m.json", "d2dac834-88dc-4ef8-80bc-2448e44019fe", "WORKING", 0, "329f6c9b838cd4034d0449762b30c0827633a59e", "2019-12-11T15:27:40.29907163Z"},
		{"cloudbuild-build-FAILURE.kazuhito-m.json", "d2dac834-88dc-4ef8-80bc-2448e44019fe", "FAILURE", 0, "329f6c9b838cd4034d0449762b30c0827633a59e", "2019-12-11T15:27:40.29907163Z"},
		{"cloudbuild-build-SUCCESS-noimages.kazuhito-m.json", "7c91336f-90e1-4efd-aef7-53904ef0ef5f", "SUCCESS", 0, "9d87fc01ff9e94e8a14b961df598a60a9f21f811", "2019-11-21T06:02:41.117927696Z"},
		{"cloudbuild-build-SUCCESS-with-images.knative-gcp.json", "BUILD_ID", "SUCCESS", 2, "", "2020-04-03T23:51:15.340709933Z"},
		{"cloudbuild-build-SUCCESS-with-images-and-trigger.vial.jsonc", "859e111f-a238-44f7-9e06-0fc09fe9ed8f", "SUCCESS", 2, "7860c99ea90fb27d442701275149a4012c970fcb", "2021-04-28T17:22:26.740339083Z"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			b, err := DecodeBuild(readSample(t, tt.file))
			if err != nil {
				t.Fatalf("DecodeBuild: %v", err)
			}
			got := []any{b.GetId(), b.GetStatus().String(), len(b.GetResults().GetImages()), Commit(b), b.GetCreateTime().AsTime().Format(time.RFC3339Nano)}
			want := []any{tt.id, tt.status, tt.images, tt.commit, tt.createTime}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("decoded build (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecodeBuildDiscardsUnknownFields(t *testing.T) {
	b, err := DecodeBuild([]byte(`{"id":"x","status":"SUCCESS","fieldFromTheFuture":{"a":1},"results":{"images":[{"name":"gcr.io/p/web","digest":"sha256:00","newField":true}]}}`))
	if err != nil {
		t.Fatalf("DecodeBuild: %v", err)
	}
	if got := b.GetResults().GetImages()[0].GetName(); got != "gcr.io/p/web" {
		t.Errorf("image name = %q", got)
	}
}

func TestDecodeBuildUnknownStatusIsNotSuccess(t *testing.T) {
	b, err := DecodeBuild([]byte(`{"id":"x","status":"A_STATUS_FROM_THE_FUTURE"}`))
	if err != nil {
		t.Fatalf("DecodeBuild: %v", err)
	}
	if got := b.GetStatus().String(); got != "STATUS_UNKNOWN" {
		t.Errorf("status = %s, want STATUS_UNKNOWN", got)
	}
}

func TestDecodeBuildRejects(t *testing.T) {
	for name, data := range map[string]string{
		"empty":         ``,
		"not json":      `hello`,
		"array":         `[]`,
		"wrong type":    `{"id":"x","status":42.5}`,
		"no id":         `{"status":"SUCCESS"}`,
		"bad timestamp": `{"id":"x","createTime":"yesterday"}`,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := DecodeBuild([]byte(data)); !errors.Is(err, ErrMalformed) {
				t.Errorf("DecodeBuild(%q) error = %v, want ErrMalformed", data, err)
			}
		})
	}
}

func TestDecodeMessage(t *testing.T) {
	data := base64.StdEncoding.EncodeToString([]byte(`{"id":"b"}`))
	want := Message{
		ID:          "11925470562539716",
		PublishTime: time.Date(2020, 4, 3, 23, 51, 29, 811e6, time.UTC),
		Attributes:  map[string]string{"buildId": "b", "status": "SUCCESS"},
		Data:        []byte(`{"id":"b"}`),
	}
	for name, body := range map[string]string{
		"camelCase and snake_case, as delivered": `{"message":{"attributes":{"buildId":"b","status":"SUCCESS"},"data":"` + data + `","messageId":"11925470562539716","message_id":"11925470562539716","publishTime":"2020-04-03T23:51:29.811Z","publish_time":"2020-04-03T23:51:29.811Z"},"subscription":"projects/p/subscriptions/s"}`,
		"camelCase only":                         `{"message":{"attributes":{"buildId":"b","status":"SUCCESS"},"data":"` + data + `","messageId":"11925470562539716","publishTime":"2020-04-03T23:51:29.811Z"}}`,
		"snake_case only":                        `{"message":{"attributes":{"buildId":"b","status":"SUCCESS"},"data":"` + data + `","message_id":"11925470562539716","publish_time":"2020-04-03T23:51:29.811Z"}}`,
	} {
		t.Run(name, func(t *testing.T) {
			got, err := DecodeMessage([]byte(body))
			if err != nil {
				t.Fatalf("DecodeMessage: %v", err)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("DecodeMessage (-want +got):\n%s", diff)
			}
			if got.Status() != "SUCCESS" || got.BuildID() != "b" {
				t.Errorf("Status(), BuildID() = %q, %q", got.Status(), got.BuildID())
			}
		})
	}
}

func TestDecodeMessageRejects(t *testing.T) {
	for name, body := range map[string]string{
		"not json":         `{`,
		"no message":       `{"subscription":"s"}`,
		"null message":     `{"message":null}`,
		"data not base64":  `{"message":{"data":"%%%"}}`,
		"bad publish time": `{"message":{"data":"","publishTime":"noon"}}`,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := DecodeMessage([]byte(body)); !errors.Is(err, ErrMalformed) {
				t.Errorf("DecodeMessage(%s) error = %v, want ErrMalformed", body, err)
			}
		})
	}
}

// FuzzDecode checks that no input makes the decoders panic. It is seeded
// with every sample in testdata, as it is and wrapped in an envelope.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"message":{"data":"e30=","attributes":{"status":"SUCCESS"}}}`))
	files, err := filepath.Glob(filepath.Join("..", "..", "testdata", "*", "*"))
	if err != nil || len(files) == 0 {
		f.Fatalf("samples: %v, %v", files, err)
	}
	for _, file := range files {
		raw, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
		f.Add([]byte(`{"message":{"data":"` + base64.StdEncoding.EncodeToString(raw) + `","attributes":{"status":"SUCCESS"}}}`))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if m, err := DecodeMessage(b); err == nil {
			DecodeBuild(m.Data) // Only panics matter here.
		}
		DecodeBuild(b) // Only panics matter here.
	})
}

// envelopeOf is a messagePublished envelope whose message.data is data, as
// given (already encoded, or not).
func envelopeOf(data string) []byte {
	return []byte(`{"message":{"attributes":{"buildId":"b","status":"SUCCESS"},"data":"` + data + `","messageId":"1"},"subscription":"s"}`)
}

// TestDecodeMessageRefuses checks each decoding rule and the sentinel that
// classifies it; every refusal also wraps ErrMalformed (never retried).
func TestDecodeMessageRefuses(t *testing.T) {
	// {"id":"?>"} encodes with '+' and '/' in the standard alphabet, so its
	// URL-safe spelling differs.
	build := []byte(`{"id":"?>?~"}`)
	std := base64.StdEncoding.EncodeToString(build)
	if !strings.ContainsAny(std, "+/=") {
		t.Fatalf("sample %q encodes as %q: pick one that needs + / or padding", build, std)
	}
	tests := []struct {
		name string
		body []byte
		want error
	}{
		{"URL-safe base64", envelopeOf(base64.URLEncoding.EncodeToString(build)), ErrEncoding},
		{"unpadded base64", envelopeOf(base64.RawStdEncoding.EncodeToString(build)), ErrEncoding},
		{"not base64", envelopeOf("%%%"), ErrEncoding},
		{"non-canonical padding bits", envelopeOf("e31="), ErrEncoding},
		{"duplicated data key", []byte(`{"message":{"data":"` + std + `","data":"e30="}}`), ErrDuplicateKey},
		{"duplicated message key", []byte(`{"message":{"data":"e30="},"message":{"data":"` + std + `"}}`), ErrDuplicateKey},
		{"duplicated attribute", []byte(`{"message":{"attributes":{"status":"FAILURE","status":"SUCCESS"},"data":"e30="}}`), ErrDuplicateKey},
		{"messageId and message_id differ", []byte(`{"message":{"data":"e30=","messageId":"1","message_id":"2"}}`), ErrDuplicateKey},
		{"publishTime and publish_time differ", []byte(`{"message":{"data":"e30=","publishTime":"2020-01-01T00:00:00Z","publish_time":"2099-01-01T00:00:00Z"}}`), ErrDuplicateKey},
		{"too large", envelopeOf(strings.Repeat("A", MaxSize)), ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeMessage(tt.body)
			if !errors.Is(err, tt.want) || !errors.Is(err, ErrMalformed) {
				t.Errorf("DecodeMessage error = %v, want %v wrapped with %v", err, tt.want, ErrMalformed)
			}
		})
	}
	sameInstant := `{"message":{"data":"e30=","publishTime":"2020-04-03T23:51:29.811Z","publish_time":"2020-04-03T23:51:29.811000+00:00"}}`
	if m, err := DecodeMessage([]byte(sameInstant)); err != nil || !m.PublishTime.Equal(time.Date(2020, 4, 3, 23, 51, 29, 811e6, time.UTC)) {
		t.Errorf("one publish time spelt two ways: %v, %v; want it accepted", m.PublishTime, err)
	}
	if m, err := DecodeMessage(envelopeOf(std)); err != nil || string(m.Data) != string(build) {
		t.Errorf("standard padded base64: %q, %v; want %q", m.Data, err, build)
	}
}

func TestDecodeBuildRefusesDuplicatedKeys(t *testing.T) {
	tests := []struct {
		name, data string
		want       error
	}{
		{"status twice", `{"id":"x","status":"FAILURE","status":"SUCCESS"}`, ErrDuplicateKey},
		{"inside results", `{"id":"x","results":{"images":[{"name":"a","digest":"sha256:0","digest":"sha256:1"}]}}`, ErrDuplicateKey},
		{"unknown field twice", `{"id":"x","fromTheFuture":1,"fromTheFuture":2}`, ErrDuplicateKey},
		// Two spellings of one field: protojson itself refuses them.
		{"camelCase and snake_case aliases", `{"id":"x","createTime":"2020-01-01T00:00:00Z","create_time":"2099-01-01T00:00:00Z"}`, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := DecodeBuild([]byte(tt.data)); !errors.Is(err, tt.want) || !errors.Is(err, ErrMalformed) {
				t.Errorf("DecodeBuild(%s) error = %v, want %v and ErrMalformed", tt.data, err, tt.want)
			}
		})
	}
}

func TestCheckAttributesAgreeWithTheBuild(t *testing.T) {
	build := func(id, status string) *cloudbuildpb.Build {
		return &cloudbuildpb.Build{Id: id, Status: cloudbuildpb.Build_Status(cloudbuildpb.Build_Status_value[status])}
	}
	tests := []struct {
		name  string
		attrs map[string]string
		build *cloudbuildpb.Build
		want  error
	}{
		{"both SUCCESS", map[string]string{"buildId": "b", "status": "SUCCESS"}, build("b", "SUCCESS"), nil},
		{"no attributes: the build decides", nil, build("b", "SUCCESS"), nil},
		{"attribute SUCCESS, build FAILURE", map[string]string{"buildId": "b", "status": "SUCCESS"}, build("b", "FAILURE"), ErrMismatch},
		{"attribute FAILURE, build SUCCESS", map[string]string{"buildId": "b", "status": "FAILURE"}, build("b", "SUCCESS"), ErrMismatch},
		{"another build ID: the log names the build's", map[string]string{"buildId": "a", "status": "SUCCESS"}, build("b", "SUCCESS"), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Message{Attributes: tt.attrs}.Check(tt.build)
			if !errors.Is(err, tt.want) || (tt.want != nil && !errors.Is(err, ErrMalformed)) {
				t.Errorf("Check error = %v, want %v", err, tt.want)
			}
		})
	}
}
