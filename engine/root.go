package engine

import (
	"context"
	"fmt"
	"time"

	"github.com/batonhq/baton"
)

// IssueRoot starts a conversation at the edge: it creates a root token for a
// signal to one destination and returns the signal, which the caller sends
// (or embeds in a form) only after IssueRoot returned. The token store
// chooses the token id. A ttl above zero lets the token expire unused;
// expiry only ever rejects the signal.
func (e *Engine) IssueRoot(ctx context.Context, emit baton.Emit, ttl time.Duration) (baton.Signal, error) {
	if emit.Topic != "" {
		return baton.Signal{}, fmt.Errorf("%w: a root signal goes to one destination, not a topic", baton.ErrInvalidSignal)
	}
	if err := emit.Validate(); err != nil {
		return baton.Signal{}, err
	}
	root := baton.Token{Destination: emit.Destination, Type: emit.Type, Digest: baton.DigestOf(emit.Payload), CreatedAt: e.cfg.Now()}
	if ttl > 0 {
		root.ExpiresAt = root.CreatedAt.Add(ttl)
	}
	tok, err := e.issue(ctx, root)
	if err != nil {
		return baton.Signal{}, fmt.Errorf("engine: issue root token: %w", err)
	}
	sig := baton.Signal{ID: tok.ID, Conversation: tok.Conversation, Destination: emit.Destination, Type: emit.Type, Payload: emit.Payload,
		Trace: e.traceContext(ctx)}
	e.stats.add(ctx, statRootsIssued, 1)
	e.emitEvent(Event{Kind: EventRootIssued, Signal: sig})
	return sig, nil
}
