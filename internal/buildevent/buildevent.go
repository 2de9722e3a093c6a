// Package buildevent decodes the Pub/Sub messages Cloud Build publishes to
// the cloud-builds topic, in every envelope a function can receive them.
//
// The envelope ({"message": {...}, "subscription": ...}) is decoded with
// encoding/json into our own struct, because real deliveries carry both
// messageId and message_id (and publishTime and publish_time), which a strict
// protojson decode of PubsubMessage rejects. The Build in message.data is
// decoded with protojson into cloudbuildpb.Build, discarding unknown fields
// so that a newer Cloud Build schema never breaks us.
package buildevent

import (
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
		Data             []byte            `json:"data"`
		Attributes       map[string]string `json:"attributes"`
		MessageID        string            `json:"messageId"`
		MessageIDSnake   string            `json:"message_id"`
		PublishTime      string            `json:"publishTime"`
		PublishTimeSnake string            `json:"publish_time"`
	} `json:"message"`
	Subscription string `json:"subscription"`
}

// DecodeMessage decodes a messagePublished CloudEvent's data (or a raw push
// body). It fails, wrapping ErrMalformed, when there is no message or its
// data is not base64.
func DecodeMessage(data []byte) (Message, error) {
	var env envelope
	if err := json.Unmarshal(data, &env); err != nil {
		return Message{}, fmt.Errorf("%w: envelope: %v", ErrMalformed, err)
	}
	if env.Message == nil {
		return Message{}, fmt.Errorf("%w: envelope has no \"message\"", ErrMalformed)
	}
	m := env.Message
	msg := Message{
		ID:         first(m.MessageID, m.MessageIDSnake),
		Attributes: m.Attributes,
		Data:       m.Data,
	}
	if ts := first(m.PublishTime, m.PublishTimeSnake); ts != "" {
		t, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil {
			return Message{}, fmt.Errorf("%w: publishTime %q: %v", ErrMalformed, ts, err)
		}
		msg.PublishTime = t
	}
	return msg, nil
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
// wrapping ErrMalformed.
func DecodeBuild(data []byte) (*cloudbuildpb.Build, error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("%w: message has no data", ErrMalformed)
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
