package gkefake

import (
	"context"
	"time"
)

// Delay makes every token request that arrives from now on wait d before it
// is answered, as a slow token service does; a long d plays a hung one.
// Delay(0) ends it for the requests that follow. A request already waiting
// keeps waiting (its connection hangs), until its client gives up or the
// server stops.
func (t *TokenServer) Delay(d time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.delay = d
}

// hold waits out the delay of a token request, or until the client goes
// away.
func (t *TokenServer) hold(ctx context.Context) {
	t.mu.Lock()
	d := t.delay
	t.mu.Unlock()
	if d <= 0 {
		return
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-ctx.Done():
	}
}

// SetAccessToken makes the server answer the service account email's
// assertions with accessToken from now on, as Google's token service hands
// out a new token once the last one expired or was revoked. The account's
// key must have been written by WriteServiceAccountKey.
func (t *TokenServer) SetAccessToken(email, accessToken string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.tokens[email] = accessToken
}
