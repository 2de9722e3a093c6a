package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"cloud.google.com/go/pubsub/v2"

	"github.com/onnewimage/onnewimage/internal/result"
	"github.com/onnewimage/onnewimage/internal/testenv/pubsubemu"
)

// resultEnv adds to env what makes the function publish its results to
// topic on e: RESULT_TOPIC, by its full name, and PUBSUB_EMULATOR_HOST.
func resultEnv(env map[string]string, e *pubsubemu.Emulator, topic string) map[string]string {
	out := map[string]string{"RESULT_TOPIC": e.TopicName(topic), "PUBSUB_EMULATOR_HOST": e.Host}
	for k, v := range env {
		out[k] = v
	}
	return out
}

// Received is a result message as a subscriber receives it.
type Received struct {
	// ID is the Pub/Sub message ID: a redelivery of one message keeps it.
	ID         string
	Attributes map[string]string
	Result     result.Message
}

// Results collects the result messages of a pull subscription, from
// Subscribe until its context ends.
type Results struct {
	mu      sync.Mutex
	got     []Received
	seen    map[string]bool
	changed chan struct{}
	done    chan struct{}
	err     error
}

// Subscribe creates the pull subscription subID on topic of the sandbox's
// emulator and collects what it receives until ctx ends.
func (s *Sandbox) Subscribe(ctx context.Context, subID, topic string) (*Results, error) {
	if err := s.PubSub.CreatePullSubscription(ctx, subID, topic); err != nil {
		return nil, err
	}
	client, err := s.PubSub.Client(ctx)
	if err != nil {
		return nil, err
	}
	r := &Results{seen: map[string]bool{}, changed: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		defer client.Close()
		sub := client.Subscriber(s.PubSub.SubscriptionName(subID))
		// One message at a time, acknowledged once recorded: the results
		// are recorded in the order the subscription delivers them.
		sub.ReceiveSettings.MaxOutstandingMessages = 1
		err := sub.Receive(ctx, func(_ context.Context, m *pubsub.Message) {
			defer m.Ack()
			rec := Received{ID: m.ID, Attributes: m.Attributes}
			if err := json.Unmarshal(m.Data, &rec.Result); err != nil {
				rec.Result.Reason = fmt.Sprintf("undecodable result %q: %v", m.Data, err)
			}
			r.mu.Lock()
			defer r.mu.Unlock()
			if r.seen[m.ID] { // Pub/Sub delivers at least once.
				return
			}
			r.seen[m.ID] = true
			r.got = append(r.got, rec)
			close(r.changed)
			r.changed = make(chan struct{})
		})
		r.mu.Lock()
		r.err = err
		r.mu.Unlock()
	}()
	return r, nil
}

// All returns what has been received so far, each message once.
func (r *Results) All() []Received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Received(nil), r.got...)
}

// Wait waits until a message for which match holds has been received, and
// returns it.
func (r *Results) Wait(ctx context.Context, match func(Received) bool) (Received, error) {
	for {
		r.mu.Lock()
		got, changed, err := r.got, r.changed, r.err
		r.mu.Unlock()
		for _, m := range got {
			if match(m) {
				return m, nil
			}
		}
		select {
		case <-changed:
		case <-r.done:
			return Received{}, errors.Join(errors.New("the subscription stopped receiving"), err)
		case <-ctx.Done():
			return Received{}, fmt.Errorf("waiting for a result: %w (received: %d)", ctx.Err(), len(got))
		}
	}
}
