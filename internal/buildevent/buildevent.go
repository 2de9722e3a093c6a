// Package buildevent decodes the Pub/Sub messages Cloud Build publishes to
// the cloud-builds topic, in every envelope a function can receive them.
//
// The envelope ({"message": {...}, "subscription": ...}) is decoded with
// encoding/json into our own struct, because real deliveries carry both
// messageId and message_id (and publishTime and publish_time), which a strict
// protojson decode of PubsubMessage rejects. The Build in message.data is
// decoded with protojson into cloudbuildpb.Build, discarding unknown fields
// so that a newer Cloud Build schema never breaks us. Peek reads only a
// message's ID and attributes, for dismissing most messages at a small
// fraction of that cost.
package buildevent

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"cloud.google.com/go/cloudbuild/apiv1/v2/cloudbuildpb"
	"google.golang.org/protobuf/encoding/protojson"
)

// ErrMalformed is wrapped by every decoding error: the message can never be
// understood, so it must not be retried.
var ErrMalformed = errors.New("malformed build message")

// Why a message is malformed. Each is wrapped together with ErrMalformed.
var (
	// ErrTooLarge means the event data exceeds MaxSize.
	ErrTooLarge = errors.New("message too large")
	// ErrEncoding means message.data is not standard, padded base64, the only
	// encoding Pub/Sub writes.
	ErrEncoding = errors.New("message data is not standard padded base64")
	// ErrDuplicateKey means a JSON object names a key twice, which decoders
	// resolve differently (encoding/json keeps the last, others the first).
	ErrDuplicateKey = errors.New("duplicated JSON key")
	// ErrMismatch means the status attribute and the build disagree.
	ErrMismatch = errors.New("message attributes disagree with the build")
)

// MaxSize is the largest event data decoded, in bytes. Cloud Build's Build
// messages are a few kilobytes; a build pushing ten thousand images is about
// 2 MiB once base64-encoded. Anything larger is refused before decoding.
const MaxSize = 4 << 20

// Message is a Pub/Sub message as delivered to the function.
type Message struct {
	// ID is the Pub/Sub message ID.
	ID string
	// PublishTime is when Pub/Sub accepted the message; redeliveries keep it.
	PublishTime time.Time
	// Attributes are the message attributes. Cloud Build sets buildId and status.
	Attributes map[string]string
	// Data is message.data, base64-decoded: the Build as JSON.
	Data []byte
}

// envelope is the CloudEvent data of google.cloud.pubsub.topic.v1.messagePublished,
// which is also the body of a raw push delivery.
type envelope struct {
	Message *struct {
		Data             string            `json:"data"`
		Attributes       map[string]string `json:"attributes"`
		MessageID        string            `json:"messageId"`
		MessageIDSnake   string            `json:"message_id"`
		PublishTime      string            `json:"publishTime"`
		PublishTimeSnake string            `json:"publish_time"`
	} `json:"message"`
	Subscription string `json:"subscription"`
}

// DecodeMessage decodes a messagePublished CloudEvent's data (or a raw push
// body). It fails, wrapping ErrMalformed, when there is no message, and also
// ErrTooLarge, ErrDuplicateKey or ErrEncoding when the data exceeds MaxSize,
// names a key twice, or message.data is not standard padded base64.
func DecodeMessage(data []byte) (Message, error) {
	if len(data) > MaxSize {
		return Message{}, fmt.Errorf("%w: %w: %d bytes, more than %d", ErrMalformed, ErrTooLarge, len(data), MaxSize)
	}
	if err := unique(data); err != nil {
		return Message{}, fmt.Errorf("%w: envelope: %w", ErrMalformed, err)
	}
	var env envelope
	if err := json.Unmarshal(data, &env); err != nil {
		return Message{}, fmt.Errorf("%w: envelope: %v", ErrMalformed, err)
	}
	if env.Message == nil {
		return Message{}, fmt.Errorf("%w: envelope has no \"message\"", ErrMalformed)
	}
	m := env.Message
	if m.MessageID != "" && m.MessageIDSnake != "" && m.MessageID != m.MessageIDSnake {
		// Pub/Sub writes both spellings with one value.
		return Message{}, fmt.Errorf("%w: %w: messageId %q and message_id %q differ", ErrMalformed, ErrDuplicateKey, m.MessageID, m.MessageIDSnake)
	}
	// Strict: Pub/Sub writes one spelling of each message, so another (URL
	// alphabet, no padding, stray bits) was written by someone else.
	raw, err := base64.StdEncoding.Strict().DecodeString(m.Data)
	if err != nil {
		return Message{}, fmt.Errorf("%w: %w: %v", ErrMalformed, ErrEncoding, err)
	}
	msg := Message{
		ID:         first(m.MessageID, m.MessageIDSnake),
		Attributes: m.Attributes,
		Data:       raw,
	}
	for _, ts := range []string{m.PublishTime, m.PublishTimeSnake} {
		if ts == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil {
			return Message{}, fmt.Errorf("%w: publishTime %q: %v", ErrMalformed, ts, err)
		}
		if !msg.PublishTime.IsZero() && !t.Equal(msg.PublishTime) {
			return Message{}, fmt.Errorf("%w: %w: publishTime %s and publish_time %s differ", ErrMalformed, ErrDuplicateKey,
				msg.PublishTime.Format(time.RFC3339Nano), t.Format(time.RFC3339Nano))
		}
		msg.PublishTime = t
	}
	return msg, nil
}

// Check reports, wrapping ErrMismatch, a message whose status attribute is
// not its build's status. Cloud Build sets it from the build it publishes, so
// a disagreement is a message written by someone else; an absent attribute
// leaves the build to decide.
func (m Message) Check(b *cloudbuildpb.Build) error {
	if s, ok := m.Attributes["status"]; ok && s != b.GetStatus().String() {
		return fmt.Errorf("%w: %w: status attribute %q, build status %s", ErrMalformed, ErrMismatch, s, b.GetStatus())
	}
	return nil
}

// Status returns the build status the message announces: its status
// attribute, which Cloud Build always sets. It is empty when absent, and then
// only the decoded Build can tell.
func (m Message) Status() string { return m.Attributes["status"] }

// BuildID returns the buildId attribute, or "".
func (m Message) BuildID() string { return m.Attributes["buildId"] }

var unmarshal = protojson.UnmarshalOptions{DiscardUnknown: true}

// DecodeBuild decodes a message's data into a Build. Unknown fields are
// discarded; a body that is not a Build (empty, not JSON, wrong types) fails
// wrapping ErrMalformed, and also ErrDuplicateKey when it names a key twice,
// even an unknown one.
func DecodeBuild(data []byte) (*cloudbuildpb.Build, error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("%w: message has no data", ErrMalformed)
	}
	if err := unique(data); err != nil {
		return nil, fmt.Errorf("%w: build: %w", ErrMalformed, err)
	}
	b := new(cloudbuildpb.Build)
	if err := unmarshal.Unmarshal(data, b); err != nil {
		return nil, fmt.Errorf("%w: build: %v", ErrMalformed, err)
	}
	if b.GetId() == "" {
		return nil, fmt.Errorf("%w: build has no id", ErrMalformed)
	}
	return b, nil
}

// Commit returns the commit a build was made from: the resolved source
// provenance first, then the COMMIT_SHA substitution; "" when unknown.
func Commit(b *cloudbuildpb.Build) string {
	if sha := b.GetSourceProvenance().GetResolvedRepoSource().GetCommitSha(); sha != "" {
		return sha
	}
	if rev := b.GetSourceProvenance().GetResolvedGitSource().GetRevision(); rev != "" {
		return rev
	}
	if sha := b.GetSubstitutions()["COMMIT_SHA"]; sha != "" {
		return sha
	}
	return b.GetSubstitutions()["REVISION_ID"]
}

func first(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
