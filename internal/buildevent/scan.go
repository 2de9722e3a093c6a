package buildevent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"
)

// errSyntax stops a scan at text that is not JSON.
var errSyntax = errors.New("invalid JSON")

// maxDepth is how deeply objects and arrays may nest, as in encoding/json.
const maxDepth = 10000

// scanner walks JSON text without decoding it. It checks the structure
// (objects, arrays, literals) and that no object names a key twice, and
// skips each string with bytes.IndexByte, not looking inside: whoever
// decodes the text afterwards checks the contents. This makes a walk over a
// message's kilobytes of base64 cost well under a microsecond.
type scanner struct {
	data []byte
	i    int
}

func (s *scanner) space() {
	for s.i < len(s.data) {
		switch s.data[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// at reports whether the next byte is c.
func (s *scanner) at(c byte) bool { return s.i < len(s.data) && s.data[s.i] == c }

// str reads the string at s.i and returns what is between its quotes, raw.
func (s *scanner) str() ([]byte, error) {
	if !s.at('"') {
		return nil, errSyntax
	}
	start := s.i + 1
	for j := start; ; j++ {
		k := bytes.IndexByte(s.data[j:], '"')
		if k < 0 {
			return nil, errSyntax
		}
		j += k
		n := 0 // Backslashes before the quote: an odd count escapes it.
		for j-1-n >= start && s.data[j-1-n] == '\\' {
			n++
		}
		if n%2 == 0 {
			s.i = j + 1
			return s.data[start:j], nil
		}
	}
}

// key reads an object key, decoded when it must be (escapes, invalid UTF-8)
// to compare as encoding/json would.
func (s *scanner) key() ([]byte, error) {
	raw, err := s.str()
	if err != nil {
		return nil, err
	}
	if bytes.IndexByte(raw, '\\') < 0 && utf8.Valid(raw) {
		return raw, nil
	}
	var k string
	if err := json.Unmarshal(s.data[s.i-len(raw)-2:s.i], &k); err != nil {
		return nil, errSyntax
	}
	return []byte(k), nil
}

// text reads a string value, decoded.
func (s *scanner) text() (string, error) {
	raw, err := s.str()
	if err != nil {
		return "", err
	}
	plain := utf8.Valid(raw)
	for _, c := range raw {
		plain = plain && c >= ' ' && c != '\\'
	}
	if plain {
		return string(raw), nil
	}
	var t string
	if err := json.Unmarshal(s.data[s.i-len(raw)-2:s.i], &t); err != nil {
		return "", errSyntax
	}
	return t, nil
}

// value skips one value.
func (s *scanner) value(depth int) error {
	s.space()
	if s.i >= len(s.data) {
		return errSyntax
	}
	switch s.data[s.i] {
	case '{':
		return s.object(depth, nil)
	case '[':
		if depth >= maxDepth {
			return errSyntax
		}
		s.i++
		s.space()
		if s.at(']') {
			s.i++
			return nil
		}
		for {
			if err := s.value(depth + 1); err != nil {
				return err
			}
			s.space()
			switch {
			case s.at(','):
				s.i++
			case s.at(']'):
				s.i++
				return nil
			default:
				return errSyntax
			}
		}
	case '"':
		_, err := s.str()
		return err
	}
	j := s.i
	for j < len(s.data) && bytes.IndexByte([]byte(" \t\r\n,]}"), s.data[j]) < 0 {
		j++
	}
	if !literal(s.data[s.i:j]) {
		return errSyntax
	}
	s.i = j
	return nil
}

// object reads the object at s.i. For each key it calls field, which must
// read the value; a nil field skips every value. A key named twice fails,
// wrapping ErrDuplicateKey.
func (s *scanner) object(depth int, field func(key []byte) error) error {
	if !s.at('{') || depth >= maxDepth {
		return errSyntax
	}
	s.i++
	s.space()
	if s.at('}') {
		s.i++
		return nil
	}
	var (
		small [16][]byte // The keys seen, while there are few.
		keys  = small[:0]
		many  map[string]bool
	)
	for {
		s.space()
		k, err := s.key()
		if err != nil {
			return err
		}
		seen := false
		if many != nil {
			seen = many[string(k)]
			many[string(k)] = true
		} else {
			for _, o := range keys {
				seen = seen || bytes.Equal(o, k)
			}
			if keys = append(keys, k); len(keys) == len(small) {
				many = map[string]bool{}
				for _, o := range keys {
					many[string(o)] = true
				}
			}
		}
		if seen {
			return fmt.Errorf("%w %q", ErrDuplicateKey, k)
		}
		s.space()
		if !s.at(':') {
			return errSyntax
		}
		s.i++
		s.space()
		if field != nil {
			err = field(k)
		} else {
			err = s.value(depth + 1)
		}
		if err != nil {
			return err
		}
		s.space()
		switch {
		case s.at(','):
			s.i++
		case s.at('}'):
			s.i++
			return nil
		default:
			return errSyntax
		}
	}
}

// literal reports whether b is true, false, null or a JSON number.
func literal(b []byte) bool {
	switch string(b) {
	case "true", "false", "null":
		return true
	}
	i := 0
	digits := func() bool {
		start := i
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
		return i > start
	}
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case !digits():
		return false
	}
	if i < len(b) && b[i] == '.' {
		i++
		if !digits() {
			return false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if !digits() {
			return false
		}
	}
	return i == len(b)
}

// unique walks the JSON in data and fails, wrapping ErrDuplicateKey, when an
// object names a key twice. Invalid JSON passes: the decoder that follows
// says what is wrong with it.
func unique(data []byte) error {
	s := scanner{data: data}
	if err := s.value(0); errors.Is(err, ErrDuplicateKey) {
		return err
	}
	return nil
}

// Peek reads only the ID and attributes of the message in data (a
// messagePublished CloudEvent's data or a raw push body), for deciding
// whether the rest is worth decoding: it walks the envelope without
// decoding message.data or checking its base64. It reports false when it
// cannot read them both quickly and unambiguously: data over MaxSize or not
// one JSON object, a key named twice anywhere, no message object,
// attributes that are not an object of strings, or a messageId and a
// message_id that differ. DecodeMessage then says what is wrong, if
// anything.
func Peek(data []byte) (Message, bool) {
	if len(data) > MaxSize {
		return Message{}, false
	}
	var (
		msg     Message
		found   bool
		ids     [2]string // messageId, message_id.
		s       = scanner{data: data}
		errPeek = errors.New("not peeked")
	)
	s.space()
	err := s.object(0, func(key []byte) error {
		if !exact(key, "message") {
			return errPeek
		}
		if string(key) != "message" {
			return s.value(1)
		}
		found = true
		return s.object(1, func(key []byte) error {
			if !exact(key, "attributes", "messageId", "message_id") {
				return errPeek
			}
			var err error
			switch string(key) {
			case "attributes":
				msg.Attributes = map[string]string{}
				err = s.object(2, func(key []byte) error {
					v, err := s.text()
					msg.Attributes[string(key)] = v
					return err
				})
			case "messageId":
				ids[0], err = s.text()
			case "message_id":
				ids[1], err = s.text()
			default:
				err = s.value(2)
			}
			return err
		})
	})
	s.space()
	if err != nil || !found || s.i != len(data) || ids[0] != "" && ids[1] != "" && ids[0] != ids[1] {
		return Message{}, false
	}
	msg.ID = first(ids[0], ids[1])
	return msg, true
}

// exact reports false when key is one of names only when case is ignored:
// encoding/json, which DecodeMessage uses, would take it for that name.
func exact(key []byte, names ...string) bool {
	for _, n := range names {
		if bytes.EqualFold(key, []byte(n)) && string(key) != n {
			return false
		}
	}
	return true
}
