package conformance

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/batonhq/baton"
)

// run is one Check: the kit's configuration and token service, the
// participant and a client for it.
type run struct {
	cfg         Config
	participant string
	tokens      *tokenService
	client      *http.Client
	id          string // prefix of this run's entity names
}

// payloadFor is the counting activity's payload for entity.
func payloadFor(entity string) []byte {
	b, _ := json.Marshal(map[string]string{"entity": entity})
	return b
}

// entity names an entity of this run.
func (r *run) entity(name string) string { return "conformance-" + r.id + "-" + name }

// child creates, in the kit's token store, the token of a signal that the
// kit's own activity emitted to the participant for entity, and returns the
// signal: a signal in the middle of a conversation, whose token does not
// expire.
func (r *run) child(ctx context.Context, entity string) (baton.Signal, error) {
	return r.childTo(ctx, r.cfg.Destination, entity)
}

// childTo is child with the token addressed to destination.
func (r *run) childTo(ctx context.Context, destination, entity string) (baton.Signal, error) {
	root, err := r.tokens.tokens.Issue(ctx, baton.Token{Destination: kitDestination, Type: "start",
		Digest: baton.DigestOf(nil), CreatedAt: time.Now()})
	if err != nil {
		return baton.Signal{}, fmt.Errorf("issuing the kit's root: %w", err)
	}
	sig := baton.Signal{ID: baton.NewTokenID(), Conversation: root.Conversation, Causation: root.ID,
		Destination: destination, Type: r.cfg.Type, Payload: payloadFor(entity)}
	tok := sig.Token()
	tok.CreatedAt = time.Now()
	if _, err := r.tokens.tokens.Transition(ctx, root.ID, []baton.Token{tok}); err != nil {
		return baton.Signal{}, fmt.Errorf("creating the signal's token: %w", err)
	}
	return sig, nil
}

// root issues a root token addressed to the participant that expires
// after ttl, and returns its signal.
func (r *run) root(ctx context.Context, entity string, ttl time.Duration) (baton.Signal, error) {
	payload := payloadFor(entity)
	now := time.Now()
	tok, err := r.tokens.tokens.Issue(ctx, baton.Token{Destination: r.cfg.Destination, Type: r.cfg.Type,
		Digest: baton.DigestOf(payload), CreatedAt: now, ExpiresAt: now.Add(ttl)})
	if err != nil {
		return baton.Signal{}, fmt.Errorf("issuing a root: %w", err)
	}
	return baton.Signal{ID: tok.ID, Conversation: tok.Conversation, Destination: r.cfg.Destination,
		Type: r.cfg.Type, Payload: payload}, nil
}

// live reports whether sig's token is live in the kit's store.
func (r *run) live(ctx context.Context, sig baton.Signal) bool {
	_, err := r.tokens.tokens.Get(ctx, sig.ID)
	return err == nil
}

// applications finds how often the participant applied entity's activity
// so far: it sends one more signal for entity, settles it, and returns its
// count minus one.
func (r *run) applications(ctx context.Context, entity string) (int, error) {
	sig, err := r.child(ctx, entity)
	if err != nil {
		return 0, err
	}
	a, err := r.settle(ctx, sig)
	if err != nil {
		return 0, fmt.Errorf("counting signal: %w", err)
	}
	if a.status != http.StatusOK {
		return 0, fmt.Errorf("counting signal answered %s, want 200", a)
	}
	n, err := a.count()
	if err != nil {
		return 0, err
	}
	return n - 1, nil
}

// expectApplied checks that entity's activity was applied exactly want
// times so far.
func (r *run) expectApplied(ctx context.Context, entity string, want int) error {
	got, err := r.applications(ctx, entity)
	if err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("the activity was applied %d times, want %d", got, want)
	}
	return nil
}
