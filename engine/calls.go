package engine

import (
	"context"
	"fmt"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
)

// Every call to a store or a publisher gets its own deadline
// (Config.CallTimeout): a request that a network swallowed must end as an
// error whose outcome is unknown, which the protocol retries, rather than
// hold a worker forever.

func (e *Engine) bounded(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, e.cfg.CallTimeout)
}

func (e *Engine) load(ctx context.Context, key string) (store.Entity, error) {
	ctx, cancel := e.bounded(ctx)
	defer cancel()
	return e.cfg.Entities.Load(ctx, key)
}

func (e *Engine) loadWithToken(ctx context.Context, key string, token baton.TokenID) (store.Entity, baton.Token, error) {
	ctx, cancel := e.bounded(ctx)
	defer cancel()
	return e.snapshot.LoadWithToken(ctx, key, token)
}

func (e *Engine) commitEntity(ctx context.Context, ent store.Entity) (uint64, error) {
	ctx, cancel := e.bounded(ctx)
	defer cancel()
	return e.cfg.Entities.Commit(ctx, ent)
}

func (e *Engine) commitInTx(ctx context.Context, h handler, step store.TxStep, write func(context.Context, any) (store.Entity, []baton.Token, error)) (uint64, bool, error) {
	ctx, cancel := e.bounded(ctx)
	defer cancel()
	return h.commitTx(ctx, step, write)
}

func (e *Engine) commitTransition(ctx context.Context, ent store.Entity, token baton.TokenID, create []baton.Token) (uint64, bool, error) {
	ctx, cancel := e.bounded(ctx)
	defer cancel()
	return e.fast.CommitTransition(ctx, ent, token, create)
}

func (e *Engine) commitBatch(ctx context.Context, bc store.BatchCommitter, entities []store.Entity) ([]error, error) {
	ctx, cancel := e.bounded(ctx)
	defer cancel()
	results, err := bc.CommitBatch(ctx, entities)
	return results, answeredAll(err, len(entities), len(results))
}

func (e *Engine) stale(ctx context.Context, before time.Time) ([]string, error) {
	ctx, cancel := e.bounded(ctx)
	defer cancel()
	return e.cfg.Entities.Stale(ctx, before, sweepBatch)
}

// The token calls name the conversation of the token where the engine knows
// it (zero where not), so that a token store split by conversation asks one
// part (store.WithConversation).

func (e *Engine) getToken(ctx context.Context, conversation, id baton.TokenID) (baton.Token, error) {
	ctx, cancel := e.bounded(store.WithConversation(ctx, conversation))
	defer cancel()
	return e.cfg.Tokens.Get(ctx, id)
}

func (e *Engine) issue(ctx context.Context, root baton.Token) (baton.Token, error) {
	ctx, cancel := e.bounded(ctx)
	defer cancel()
	return e.cfg.Tokens.Issue(ctx, root)
}

func (e *Engine) claimRoot(ctx context.Context, conversation, id baton.TokenID) (baton.Token, error) {
	ctx, cancel := e.bounded(store.WithConversation(ctx, conversation))
	defer cancel()
	return e.cfg.Tokens.ClaimRoot(ctx, id, e.cfg.Now())
}

func (e *Engine) transitionTokens(ctx context.Context, conversation, consume baton.TokenID, create []baton.Token) (bool, error) {
	ctx, cancel := e.bounded(store.WithConversation(ctx, conversation))
	defer cancel()
	return e.cfg.Tokens.Transition(ctx, consume, create)
}

func (e *Engine) expireRoots(ctx context.Context, before time.Time) (int, error) {
	ctx, cancel := e.bounded(ctx)
	defer cancel()
	return e.cfg.Tokens.ExpireRoots(ctx, before, sweepBatch)
}

func (e *Engine) publish(ctx context.Context, sig baton.Signal) error {
	ctx, cancel := e.bounded(ctx)
	defer cancel()
	return e.cfg.Dispatch.Publish(ctx, sig)
}

func (e *Engine) loadStart(ctx context.Context, starts store.Starts, id baton.TokenID) (store.Start, error) {
	ctx, cancel := e.bounded(ctx)
	defer cancel()
	return starts.LoadStart(ctx, id)
}

func (e *Engine) updateStart(ctx context.Context, starts store.Starts, start store.Start) (store.Start, error) {
	ctx, cancel := e.bounded(ctx)
	defer cancel()
	return starts.UpdateStart(ctx, start)
}

func (e *Engine) deleteStart(ctx context.Context, starts store.Starts, id baton.TokenID) error {
	ctx, cancel := e.bounded(ctx)
	defer cancel()
	return starts.DeleteStart(ctx, id)
}

func (e *Engine) pendingStarts(ctx context.Context, starts store.Starts, before time.Time) ([]store.Start, error) {
	ctx, cancel := e.bounded(ctx)
	defer cancel()
	return starts.PendingStarts(ctx, before, sweepBatch)
}

// The batch calls check that a store answered each item: a store that
// did not is treated as one whose outcome is unknown, not trusted.

func (e *Engine) loadWithTokens(ctx context.Context, reads []store.TokenRead) ([]store.Loaded, error) {
	ctx, cancel := e.bounded(ctx)
	defer cancel()
	loaded, err := e.batcher.LoadWithTokens(ctx, reads)
	return loaded, answeredAll(err, len(reads), len(loaded))
}

func (e *Engine) commitTransitions(ctx context.Context, transitions []store.Transition) ([]error, error) {
	ctx, cancel := e.bounded(ctx)
	defer cancel()
	refused, err := e.batcher.CommitTransitions(ctx, transitions)
	return refused, answeredAll(err, len(transitions), len(refused))
}

// answeredAll returns err, or an error if a store answered got items of
// asked.
func answeredAll(err error, asked int, got ...int) error {
	if err != nil {
		return err
	}
	for _, n := range got {
		if n != asked {
			return fmt.Errorf("engine: the store answered %d of %d items: outcome unknown", n, asked)
		}
	}
	return nil
}

func (e *Engine) loadBatch(ctx context.Context, keys []string) ([]store.Entity, error) {
	ctx, cancel := e.bounded(ctx)
	defer cancel()
	entities, err := e.plain.loader.LoadBatch(ctx, keys)
	return entities, answeredAll(err, len(keys), len(entities))
}

func (e *Engine) commitEntities(ctx context.Context, entities []store.Entity) ([]error, error) {
	return e.commitBatch(ctx, e.plain.committer, entities)
}

// getTokens is step 3 of a plain batch, each token named with its
// signal's conversation (a store split by conversation asks its part).
func (e *Engine) getTokens(ctx context.Context, lookups []store.TokenLookup) ([]baton.Token, []error, error) {
	ctx, cancel := e.bounded(ctx)
	defer cancel()
	tokens, errs, err := store.GetTokensIn(ctx, e.plain.tokens, lookups)
	return tokens, errs, answeredAll(err, len(lookups), len(tokens), len(errs))
}

// transitionBatch is step 5 of a plain batch. A whole-call error means
// nothing was applied; an answer that misses items leaves every item's
// outcome unknown.
func (e *Engine) transitionBatch(ctx context.Context, transitions []store.TokenTransition) ([]bool, []error, error) {
	ctx, cancel := e.bounded(ctx)
	defer cancel()
	consumed, errs, err := e.plain.tokens.TransitionTokens(ctx, transitions)
	return consumed, errs, answeredAll(err, len(transitions), len(consumed), len(errs))
}
