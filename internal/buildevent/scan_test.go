package buildevent

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestPeek checks what Peek reads, and that it declines (leaving
// DecodeMessage to decide) whatever it cannot read unambiguously.
func TestPeek(t *testing.T) {
	queued := `"attributes":{"buildId":"b","status":"QUEUED"}`
	tests := []struct {
		name string
		body string
		want Message
		ok   bool
	}{
		{"as delivered", `{"message":{` + queued + `,"data":"%%% not base64","messageId":"7","message_id":"7","publishTime":"noon"},"subscription":"s"}`,
			Message{ID: "7", Attributes: map[string]string{"buildId": "b", "status": "QUEUED"}}, true},
		{"message_id only, spaces, escapes", " {\"message\" : { \"message_id\" : \"7\" , \"attributes\" : {\"status\":\"QUE\\u0055ED\", \"note\":\"a\\\"b\"} } }\n",
			Message{ID: "7", Attributes: map[string]string{"status": "QUEUED", "note": `a"b`}}, true},
		{"other keys of any kind", `{"x":[1,-2.5e3,true,null,{"y":[]}],"message":{` + queued + `,"z":{}}}`,
			Message{Attributes: map[string]string{"buildId": "b", "status": "QUEUED"}}, true},
		{"no attributes", `{"message":{"data":"e30="}}`, Message{}, true},
		{"duplicated status", `{"message":{"attributes":{"status":"QUEUED","status":"SUCCESS"}}}`, Message{}, false},
		{"duplicated escaped status", `{"message":{"attributes":{"status":"QUEUED","st\u0061tus":"SUCCESS"}}}`, Message{}, false},
		{"duplicated attributes", `{"message":{` + queued + `,"attributes":{"status":"SUCCESS"}}}`, Message{}, false},
		{"duplicated message", `{"message":{` + queued + `},"message":{"attributes":{"status":"SUCCESS"}}}`, Message{}, false},
		{"another case of message", `{"message":{` + queued + `},"Message":{"attributes":{"status":"SUCCESS"}}}`, Message{}, false},
		{"another case of attributes", `{"message":{` + queued + `,"ATTRIBUTES":{"status":"SUCCESS"}}}`, Message{}, false},
		{"duplicated key deep inside", `{"message":{` + queued + `},"x":{"y":[{"a":1,"a":2}]}}`, Message{}, false},
		{"messageId and message_id differ", `{"message":{` + queued + `,"messageId":"1","message_id":"2"}}`, Message{}, false},
		{"attribute not a string", `{"message":{"attributes":{"status":1}}}`, Message{}, false},
		{"control character in an attribute", "{\"message\":{\"attributes\":{\"status\":\"QUE\nUED\"}}}", Message{}, false},
		{"no message", `{"subscription":"s"}`, Message{}, false},
		{"null message", `{"message":null}`, Message{}, false},
		{"not an object", `[{"message":{` + queued + `}}]`, Message{}, false},
		{"trailing data", `{"message":{` + queued + `}} {}`, Message{}, false},
		{"unterminated", `{"message":{` + queued + `,"data":"e30=`, Message{}, false},
		{"bad literal", `{"message":{` + queued + `},"x":tru}`, Message{}, false},
		{"bad number", `{"message":{` + queued + `},"x":01}`, Message{}, false},
		{"too large", `{"message":{` + queued + `,"data":"` + strings.Repeat("A", MaxSize) + `"}}`, Message{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := Peek([]byte(tt.body))
			if ok != tt.ok {
				t.Fatalf("Peek() ok = %v, want %v", ok, tt.ok)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Peek() (-want +got):\n%s", diff)
			}
		})
	}
}

// FuzzPeek checks Peek against DecodeMessage: whatever both read, they read
// alike, and Peek finds every duplicated key the full decoder refuses.
func FuzzPeek(f *testing.F) {
	f.Add([]byte(`{"message":{"attributes":{"status":"QUEUED","buildId":"b"},"data":"e30=","messageId":"1"}}`))
	f.Add([]byte(`{"message":{"attributes":{"status":"QUEUED","st\u0061tus":"SUCCESS"}}}`))
	files, err := filepath.Glob(filepath.Join("..", "..", "testdata", "*", "*"))
	if err != nil {
		f.Fatal(err)
	}
	for _, file := range files {
		raw, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add([]byte(`{"message":{"data":"` + base64.StdEncoding.EncodeToString(raw) + `","attributes":{"status":"WORKING"}}}`))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		peeked, ok := Peek(b)
		decoded, err := DecodeMessage(b)
		if errors.Is(err, ErrDuplicateKey) && ok {
			t.Fatalf("Peek(%q) = %+v, true; DecodeMessage: %v", b, peeked, err)
		}
		if !ok || err != nil {
			return
		}
		if diff := cmp.Diff(Message{ID: decoded.ID, Attributes: decoded.Attributes}, peeked); diff != "" {
			t.Fatalf("Peek(%q) and DecodeMessage disagree (-decoded +peeked):\n%s", b, diff)
		}
	})
}

// FuzzUnique checks the scanner's duplicated keys against encoding/json's
// tokens, the way unique walked JSON before the scanner, on valid JSON.
func FuzzUnique(f *testing.F) {
	for _, s := range []string{`{"a":1,"a":2}`, `{"a":{"b":[{"c":1,"\u0063":2}]}}`, `{"a":1,"A":2}`, "{\"\xff\":1,\"\xfe\":2}",
		`[{"a":"\"a\":1"},{"a":2}]`, `{"k0":0,"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k9":9,"k10":10,"k11":11,"k12":12,"k13":13,"k14":14,"k15":15,"k16":16,"k3":3}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if !json.Valid(b) {
			return
		}
		got, want := unique(b), tokenUnique(b)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("unique(%q) = %v, want %v", b, got, want)
		}
	})
}

func TestUniqueManyKeys(t *testing.T) {
	var keys []string
	for i := range 20 {
		keys = append(keys, fmt.Sprintf(`"k%d":%d`, i, i))
	}
	for name, tt := range map[string]struct {
		json string
		want error
	}{
		"20 keys":                    {"{" + strings.Join(keys, ",") + "}", nil},
		"the 3rd key again":          {"{" + strings.Join(keys, ",") + `,"k2":0}`, fmt.Errorf("%w %q", ErrDuplicateKey, "k2")},
		"the 18th key again":         {"{" + strings.Join(keys, ",") + `,"k17":0}`, fmt.Errorf("%w %q", ErrDuplicateKey, "k17")},
		"an escaped key again":       {`{"k1":1,"k\u0031":2}`, fmt.Errorf("%w %q", ErrDuplicateKey, "k1")},
		"a key in an escaped string": {`{"a":"\"a\":","a":1}`, fmt.Errorf("%w %q", ErrDuplicateKey, "a")},
	} {
		t.Run(name, func(t *testing.T) {
			if got := unique([]byte(tt.json)); fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("unique(%s) = %v, want %v", tt.json, got, tt.want)
			}
		})
	}
}

// tokenUnique is unique as it was written before the scanner: a walk over
// encoding/json's tokens. The fuzzer holds the scanner to it.
func tokenUnique(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	var walk func() error
	walk = func() error {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		switch tok {
		case json.Delim('{'):
			seen := map[string]bool{}
			for dec.More() {
				key, err := dec.Token()
				if err != nil {
					return err
				}
				k, _ := key.(string)
				if seen[k] {
					return fmt.Errorf("%w %q", ErrDuplicateKey, k)
				}
				seen[k] = true
				if err := walk(); err != nil {
					return err
				}
			}
			_, err = dec.Token()
			return err
		case json.Delim('['):
			for dec.More() {
				if err := walk(); err != nil {
					return err
				}
			}
			_, err = dec.Token()
			return err
		}
		return nil
	}
	if err := walk(); errors.Is(err, ErrDuplicateKey) {
		return err
	}
	return nil
}
