package main

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
	"github.com/batonhq/baton/transport"
)

// bounded gives every store call a deadline. A network fault can swallow a
// request without closing the connection; without a deadline the call (and
// the engine worker that made it) would wait forever. A call that times out
// has an unknown outcome, which the protocol retries safely.
//
// One bounded value wraps a store that keeps both tokens and entities, and
// is passed to the engine as both, so that the engine still finds one store
// and takes the fast path.
type bounded struct {
	tokens   store.TokenStore
	entities store.EntityStore
	timeout  time.Duration
}

var (
	_ store.TokenStore         = (*bounded)(nil)
	_ store.EntityStore        = (*bounded)(nil)
	_ store.CommitTransitioner = (*bounded)(nil)
	_ store.TokenLoader        = (*bounded)(nil)
	_ store.BatchCommitter     = (*bounded)(nil)
	_ store.TransitionBatcher  = (*bounded)(nil)
	_ store.BatchLoader        = (*bounded)(nil)
	_ store.TokenBatcher       = (*bounded)(nil)
)

func (b *bounded) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, b.timeout)
}

func (b *bounded) Transition(ctx context.Context, consume baton.TokenID, create []baton.Token) (bool, error) {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return b.tokens.Transition(ctx, consume, create)
}

func (b *bounded) Issue(ctx context.Context, root baton.Token) (baton.Token, error) {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return b.tokens.Issue(ctx, root)
}

func (b *bounded) ClaimRoot(ctx context.Context, id baton.TokenID, now time.Time) (baton.Token, error) {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return b.tokens.ClaimRoot(ctx, id, now)
}

func (b *bounded) Get(ctx context.Context, id baton.TokenID) (baton.Token, error) {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return b.tokens.Get(ctx, id)
}

func (b *bounded) ListByConversation(ctx context.Context, conversation baton.TokenID, page store.Page) ([]baton.Token, error) {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return b.tokens.ListByConversation(ctx, conversation, page)
}

func (b *bounded) ListByDestination(ctx context.Context, destination string, page store.Page) ([]baton.Token, error) {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return b.tokens.ListByDestination(ctx, destination, page)
}

func (b *bounded) ExpireRoots(ctx context.Context, before time.Time, limit int) (int, error) {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return b.tokens.ExpireRoots(ctx, before, limit)
}

func (b *bounded) Load(ctx context.Context, key string) (store.Entity, error) {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return b.entities.Load(ctx, key)
}

func (b *bounded) Commit(ctx context.Context, e store.Entity) (uint64, error) {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return b.entities.Commit(ctx, e)
}

func (b *bounded) Stale(ctx context.Context, before time.Time, limit int) ([]string, error) {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return b.entities.Stale(ctx, before, limit)
}

// errNoFastPath is returned by CommitTransition when the wrapped entity
// store cannot run the fast path; the engine never calls it then, because
// it takes the fast path only when one store keeps tokens and entities.
var errNoFastPath = errors.New("worker: the entity store has no fast path")

func (b *bounded) CommitTransition(ctx context.Context, e store.Entity, token baton.TokenID, create []baton.Token) (uint64, bool, error) {
	ct, ok := b.entities.(store.CommitTransitioner)
	if !ok {
		return 0, false, errNoFastPath
	}
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return ct.CommitTransition(ctx, e, token, create)
}

// LoadWithToken is offered with the fast path, whose stores (PostgreSQL,
// embedded) all read an entity and a token in one call.
func (b *bounded) LoadWithToken(ctx context.Context, key string, token baton.TokenID) (store.Entity, baton.Token, error) {
	tl, ok := b.entities.(store.TokenLoader)
	if !ok {
		return store.Entity{}, baton.Token{}, errNoFastPath
	}
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return tl.LoadWithToken(ctx, key, token)
}

// CommitBatch, LoadWithTokens and CommitTransitions are offered with the
// fast path too: its stores implement them all.
func (b *bounded) CommitBatch(ctx context.Context, entities []store.Entity) ([]error, error) {
	bc, ok := b.entities.(store.BatchCommitter)
	if !ok {
		return nil, errNoFastPath
	}
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return bc.CommitBatch(ctx, entities)
}

func (b *bounded) LoadWithTokens(ctx context.Context, reads []store.TokenRead) ([]store.Loaded, error) {
	tb, ok := b.entities.(store.TransitionBatcher)
	if !ok {
		return nil, errNoFastPath
	}
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return tb.LoadWithTokens(ctx, reads)
}

func (b *bounded) CommitTransitions(ctx context.Context, transitions []store.Transition) ([]error, error) {
	tb, ok := b.entities.(store.TransitionBatcher)
	if !ok {
		return nil, errNoFastPath
	}
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return tb.CommitTransitions(ctx, transitions)
}

// errNoBatches is returned by the plain path's batch calls when the
// wrapped store cannot make them; the engine makes them only with
// Config.Batch, which the tests set only over stores that can.
var errNoBatches = errors.New("worker: the store has no batch calls")

// LoadBatch, GetTokens and TransitionTokens are offered for the plain
// path's batches (Redis tokens with PostgreSQL entities).
func (b *bounded) LoadBatch(ctx context.Context, keys []string) ([]store.Entity, error) {
	bl, ok := b.entities.(store.BatchLoader)
	if !ok {
		return nil, errNoBatches
	}
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return bl.LoadBatch(ctx, keys)
}

func (b *bounded) GetTokens(ctx context.Context, ids []baton.TokenID) ([]baton.Token, []error, error) {
	tb, ok := b.tokens.(store.TokenBatcher)
	if !ok {
		return nil, nil, errNoBatches
	}
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return tb.GetTokens(ctx, ids)
}

// GetTokensIn passes the batch read's conversations on (a split store
// asks only their parts).
func (b *bounded) GetTokensIn(ctx context.Context, lookups []store.TokenLookup) ([]baton.Token, []error, error) {
	tb, ok := b.tokens.(store.TokenBatcher)
	if !ok {
		return nil, nil, errNoBatches
	}
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return store.GetTokensIn(ctx, tb, lookups)
}

func (b *bounded) TransitionTokens(ctx context.Context, transitions []store.TokenTransition) ([]bool, []error, error) {
	tb, ok := b.tokens.(store.TokenBatcher)
	if !ok {
		return nil, nil, errNoBatches
	}
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return tb.TransitionTokens(ctx, transitions)
}

// The deliberately broken mode (-broken=skip-token-check) exists only so
// the tests can show that the ledger check catches a worker that does not
// keep the protocol. It treats a consumed token as live: the token store
// answers Get for any signal this process received with a token made from
// the signal itself, so duplicates are applied again. The engine then runs
// without the fast path (which would consume the token in the commit).

// received remembers every signal this process was handed.
type received struct {
	mu      sync.Mutex
	signals map[baton.TokenID]baton.Signal
}

func (r *received) add(sig baton.Signal) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.signals[sig.ID] = sig
}

func (r *received) get(id baton.TokenID) (baton.Signal, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	sig, ok := r.signals[id]
	return sig, ok
}

// forgetfulTokens is a token store that never says a received signal's
// token is gone.
type forgetfulTokens struct {
	store.TokenStore
	received *received
}

func (f forgetfulTokens) Get(ctx context.Context, id baton.TokenID) (baton.Token, error) {
	tok, err := f.TokenStore.Get(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		if sig, ok := f.received.get(id); ok {
			return sig.Token(), nil
		}
	}
	return tok, err
}

// recordingTransport hands out deliveries as its inner transport does and
// records their signals.
type recordingTransport struct {
	transport.Transport
	received *received
}

func (r recordingTransport) Subscribe(ctx context.Context, destination string) (transport.Subscription, error) {
	sub, err := r.Transport.Subscribe(ctx, destination)
	if err != nil {
		return nil, err
	}
	return recordingSubscription{sub, r.received}, nil
}

type recordingSubscription struct {
	transport.Subscription
	received *received
}

func (r recordingSubscription) Next(ctx context.Context) (transport.Delivery, error) {
	d, err := r.Subscription.Next(ctx)
	if err == nil {
		r.received.add(d.Signal())
	}
	return d, err
}
