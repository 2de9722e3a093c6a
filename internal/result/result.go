// Package result publishes what became of a build on each target it
// concerned: one Pub/Sub message per target and build, so that whatever
// already listens to Pub/Sub (chat notifiers, load tests, change records,
// paging) can act on a deploy as it acts on a Cloud Build notification.
//
// A message's data is the Message as JSON; its attributes repeat outcome,
// target and buildId so that a subscription can filter without decoding
// (--message-filter='attributes.outcome = "failed"').
package result

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	pubsub "cloud.google.com/go/pubsub/v2/apiv1"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"golang.org/x/oauth2/google"
	"google.golang.org/api/option"
)

// Message is one target's result of one build: the data of a result
// message.
type Message struct {
	// BuildID is the Cloud Build ID.
	BuildID string `json:"buildId"`
	// Target is the target's name ("default" for the single-target
	// variables).
	Target string `json:"target"`
	// Where is the target's Deployment: CLUSTER/NAMESPACE/DEPLOYMENT:CONTAINER.
	Where string `json:"where"`
	// Image is the image deployed, or that would have been, pinned by
	// digest.
	Image string `json:"image"`
	// PreviousImage is the image the target ran before; "" when the outcome
	// is failed.
	PreviousImage string `json:"previousImage,omitempty"`
	// Strategy is the target's strategy: rolling or blue-green.
	Strategy string `json:"strategy"`
	// Outcome is what became of the build on the target (deployed, skipped,
	// failed, ...), as the function's log line says.
	Outcome string `json:"outcome"`
	// Reason explains the outcome in a sentence.
	Reason string `json:"reason"`
	// Retry, with outcome failed, says Pub/Sub will deliver the build again
	// (and another result will follow).
	Retry bool `json:"retry,omitempty"`
	// DryRun says the function ran with DRY_RUN: nothing was changed.
	DryRun bool `json:"dryRun,omitempty"`
	// Commit, Branch and Tag are where the build came from, when known.
	Commit string `json:"commit,omitempty"`
	Branch string `json:"branch,omitempty"`
	Tag    string `json:"tag,omitempty"`
	// Time is when the outcome was decided.
	Time time.Time `json:"time"`
}

// Attributes are the message attributes subscribers filter on: outcome,
// target and buildId.
func (m Message) Attributes() map[string]string {
	return map[string]string{"outcome": m.Outcome, "target": m.Target, "buildId": m.BuildID}
}

// Data is the message's data: m as JSON.
func (m Message) Data() []byte {
	b, err := json.Marshal(m)
	if err != nil {
		panic(err) // Strings, booleans and a time.
	}
	return b
}

// DefaultTimeout bounds one Publish, its retries included, when
// Options.Timeout is zero.
const DefaultTimeout = 10 * time.Second

// Options adjust a Publisher.
type Options struct {
	// Timeout bounds each Publish, retries included; DefaultTimeout when 0.
	Timeout time.Duration
	// ClientOptions are given to the Pub/Sub client (tests: a fake server).
	// Without them the client uses Application Default Credentials, or the
	// emulator PUBSUB_EMULATOR_HOST names.
	ClientOptions []option.ClientOption
}

// Publisher publishes result messages to one topic. Its client is made on
// the first Publish and kept for the next ones (a warm instance's events);
// a client that could not be made is tried again on the next Publish. It is
// safe for concurrent use.
//
// It publishes through Pub/Sub's generated client, one message per call:
// the high-level client's batching serves nothing here, and it imports
// OpenCensus, whose initialisers cost every cold start.
type Publisher struct {
	topic   string
	opts    Options
	timeout time.Duration

	mu     sync.Mutex
	client *pubsub.TopicAdminClient
	name   string // The topic's full name.
}

// NewPublisher returns a Publisher to topic: a full name,
// projects/PROJECT/topics/TOPIC, or a topic ID in the project of the
// credentials (the function's). It connects to nothing yet.
func NewPublisher(topic string, o Options) *Publisher {
	p := &Publisher{topic: topic, opts: o, timeout: o.Timeout}
	if p.timeout <= 0 {
		p.timeout = DefaultTimeout
	}
	return p
}

// Topic is the topic as configured.
func (p *Publisher) Topic() string { return p.topic }

// Publish publishes m and waits until Pub/Sub has it. Failures Pub/Sub
// calls transient (unavailable, deadline exceeded, throttled, internal) are
// retried with backoff by the client library, within the Publisher's
// timeout; the error says what was last refused.
func (p *Publisher) Publish(ctx context.Context, m Message) error {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	client, name, err := p.publisher(ctx)
	if err != nil {
		return fmt.Errorf("publishing the result to %s: %w", p.topic, err)
	}
	req := &pubsubpb.PublishRequest{Topic: name, Messages: []*pubsubpb.PubsubMessage{{Data: m.Data(), Attributes: m.Attributes()}}}
	if _, err := client.Publish(ctx, req); err != nil {
		return fmt.Errorf("publishing the result to %s: %w", p.topic, err)
	}
	return nil
}

// publisher returns the client and the topic's full name, made on first
// use.
func (p *Publisher) publisher(ctx context.Context) (*pubsub.TopicAdminClient, string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.client != nil {
		return p.client, p.name, nil
	}
	name := p.topic
	if !strings.Contains(name, "/") {
		project, err := projectID(ctx)
		if err != nil {
			return nil, "", err
		}
		name = "projects/" + project + "/topics/" + p.topic
	}
	// The client outlives this call's deadline: it serves the instance.
	client, err := pubsub.NewTopicAdminClient(context.WithoutCancel(ctx), p.opts.ClientOptions...)
	if err != nil {
		return nil, "", fmt.Errorf("creating the pub/sub client: %w", err)
	}
	p.client, p.name = client, name
	return client, name, nil
}

// projectID is the project of a bare topic ID, found as Pub/Sub's client
// finds it: GOOGLE_CLOUD_PROJECT, else the project of Application Default
// Credentials (the function's).
func projectID(ctx context.Context) (string, error) {
	if id := os.Getenv("GOOGLE_CLOUD_PROJECT"); id != "" {
		return id, nil
	}
	creds, err := google.FindDefaultCredentials(ctx, "https://www.googleapis.com/auth/pubsub")
	if err != nil {
		return "", fmt.Errorf("finding the project of topic ID: %w", err)
	}
	if creds.ProjectID == "" {
		return "", errors.New("finding the project of topic ID: none in GOOGLE_CLOUD_PROJECT or the credentials")
	}
	return creds.ProjectID, nil
}

// Close closes the client, if it was made.
func (p *Publisher) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.client == nil {
		return nil
	}
	err := p.client.Close()
	p.client = nil
	return err
}

// CheckTopic returns nil when topic names a Pub/Sub topic: a full name,
// projects/PROJECT/topics/TOPIC, or a bare topic ID. A topic ID is 3 to 255
// letters, digits and - _ . ~ + %, starts with a letter and does not start
// with "goog".
func CheckTopic(topic string) error {
	id := topic
	if strings.Contains(topic, "/") {
		parts := strings.Split(topic, "/")
		if len(parts) != 4 || parts[0] != "projects" || parts[1] == "" || parts[2] != "topics" {
			return fmt.Errorf("%q is neither projects/PROJECT/topics/TOPIC nor a topic ID", topic)
		}
		id = parts[3]
	}
	switch {
	case len(id) < 3 || len(id) > 255:
		return fmt.Errorf("topic ID %q must be 3 to 255 characters long", id)
	case !isLetter(id[0]):
		return fmt.Errorf("topic ID %q must start with a letter", id)
	case strings.HasPrefix(strings.ToLower(id), "goog"):
		return fmt.Errorf("topic ID %q must not start with goog", id)
	}
	for _, c := range []byte(id) {
		if !isLetter(c) && (c < '0' || c > '9') && !strings.ContainsRune("-_.~+%", rune(c)) {
			return fmt.Errorf("topic ID %q may hold only letters, digits and - _ . ~ + %%", id)
		}
	}
	return nil
}

func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
