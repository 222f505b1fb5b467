package sim

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/backend/memory"
	"github.com/batonhq/baton/store"
)

// tokenStore is the memory token store with a yield point and faults at
// every call, and the checks of token invariants as writes happen.
type tokenStore struct {
	sim   *Sim
	inner *memory.TokenStore
}

var _ store.TokenStore = (*tokenStore)(nil)

func (t *tokenStore) Transition(ctx context.Context, consume baton.TokenID, create []baton.Token) (bool, error) {
	if err := t.sim.yield(ctx, fmt.Sprintf("tokens.Transition(%s, %d children)", short(consume), len(create))); err != nil {
		return false, err
	}
	if err := t.sim.failBefore(ctx, "transition"); err != nil {
		return false, err
	}
	consumed, err := t.inner.Transition(ctx, consume, create)
	if err != nil {
		return consumed, err
	}
	if consumed {
		t.sim.consumedEver[consume] = true
		for _, tok := range create {
			t.sim.tokenCreated(tok)
		}
	}
	return consumed, t.sim.respond(ctx, "transition")
}

func (t *tokenStore) Issue(ctx context.Context, root baton.Token) (baton.Token, error) {
	if err := t.sim.yield(ctx, "tokens.Issue("+root.Destination+")"); err != nil {
		return baton.Token{}, err
	}
	if err := t.sim.failBefore(ctx, "issue"); err != nil {
		return baton.Token{}, err
	}
	tok, err := t.inner.Issue(ctx, root)
	if err != nil {
		return baton.Token{}, err
	}
	t.sim.tokenCreated(tok)
	return tok, t.sim.respond(ctx, "issue")
}

func (t *tokenStore) ClaimRoot(ctx context.Context, id baton.TokenID, now time.Time) (baton.Token, error) {
	if err := t.sim.yield(ctx, "tokens.ClaimRoot("+short(id)+")"); err != nil {
		return baton.Token{}, err
	}
	if err := t.sim.failBefore(ctx, "claim"); err != nil {
		return baton.Token{}, err
	}
	tok, err := t.inner.ClaimRoot(ctx, id, now)
	if err != nil {
		return baton.Token{}, err
	}
	return tok, t.sim.respond(ctx, "claim")
}

func (t *tokenStore) Get(ctx context.Context, id baton.TokenID) (baton.Token, error) {
	if err := t.sim.yield(ctx, "tokens.Get("+short(id)+")"); err != nil {
		return baton.Token{}, err
	}
	if err := t.sim.failBefore(ctx, "token read"); err != nil {
		return baton.Token{}, err
	}
	return t.inner.Get(ctx, id)
}

// GetTokens reads every token in one step (store.TokenBatcher), as a
// pipeline does on the plain path with batches.
func (t *tokenStore) GetTokens(ctx context.Context, ids []baton.TokenID) ([]baton.Token, []error, error) {
	if err := t.sim.yield(ctx, fmt.Sprintf("tokens.GetTokens(%d)", len(ids))); err != nil {
		return nil, nil, err
	}
	if err := t.sim.failBefore(ctx, "token read"); err != nil {
		return nil, nil, err
	}
	tokens, errs := make([]baton.Token, len(ids)), make([]error, len(ids))
	for i, id := range ids {
		tokens[i], errs[i] = t.inner.Get(ctx, id)
	}
	t.sim.count("path: plain batch token read")
	return tokens, errs, nil
}

// TransitionTokens runs the transitions one after another in one step
// (store.TokenBatcher), each with faults of its own, as a pipeline whose
// connection breaks part way leaves some applied and others not.
func (t *tokenStore) TransitionTokens(ctx context.Context, transitions []store.TokenTransition) ([]bool, []error, error) {
	if err := t.sim.yield(ctx, fmt.Sprintf("tokens.TransitionTokens(%d)", len(transitions))); err != nil {
		return nil, nil, err
	}
	if err := store.ValidateTokenTransitions(transitions); err != nil {
		return nil, nil, err
	}
	consumed, errs := make([]bool, len(transitions)), make([]error, len(transitions))
	for i, tr := range transitions {
		if errs[i] = t.sim.failBefore(ctx, "transition in a batch"); errs[i] != nil {
			continue
		}
		if consumed[i], errs[i] = t.inner.Transition(ctx, tr.Consume, tr.Create); errs[i] != nil {
			continue
		}
		if consumed[i] {
			t.sim.consumedEver[tr.Consume] = true
			for _, tok := range tr.Create {
				t.sim.tokenCreated(tok)
			}
		}
		errs[i] = t.sim.failAfter(ctx, "transition in a batch")
	}
	t.sim.count("path: plain batch transitions")
	// The answer may come late, but a failure is per transition.
	return consumed, errs, t.sim.yield(ctx, "tokens.TransitionTokens answered")
}

func (t *tokenStore) ListByConversation(ctx context.Context, c baton.TokenID, p store.Page) ([]baton.Token, error) {
	return t.inner.ListByConversation(ctx, c, p)
}

func (t *tokenStore) ListByDestination(ctx context.Context, d string, p store.Page) ([]baton.Token, error) {
	return t.inner.ListByDestination(ctx, d, p)
}

func (t *tokenStore) ExpireRoots(ctx context.Context, before time.Time, limit int) (int, error) {
	if err := t.sim.yield(ctx, "tokens.ExpireRoots"); err != nil {
		return 0, err
	}
	return t.inner.ExpireRoots(ctx, before, limit)
}

// entityStore is one destination's memory entity store with yield points,
// faults, and the ledger of applied activities checked on every commit.
type entityStore struct {
	sim         *Sim
	destination string
	inner       *memory.EntityStore
}

var (
	_ store.EntityStore    = (*entityStore)(nil)
	_ store.BatchCommitter = (*entityStore)(nil)
	_ store.BatchLoader    = (*entityStore)(nil)
	_ store.TokenBatcher   = (*tokenStore)(nil)
)

func (e *entityStore) Load(ctx context.Context, key string) (store.Entity, error) {
	if err := e.sim.yield(ctx, e.destination+".Load("+key+")"); err != nil {
		return store.Entity{}, err
	}
	if err := e.sim.failBefore(ctx, "entity load"); err != nil {
		return store.Entity{}, err
	}
	return e.inner.Load(ctx, key)
}

func (e *entityStore) Commit(ctx context.Context, ent store.Entity) (uint64, error) {
	if err := e.sim.yield(ctx, fmt.Sprintf("%s.Commit(%s@v%d, %d outbox)", e.destination, ent.Key, ent.Version, len(ent.Outbox))); err != nil {
		return 0, err
	}
	if err := e.sim.failBefore(ctx, "entity commit"); err != nil {
		return 0, err
	}
	before, err := e.inner.Load(ctx, ent.Key)
	if err != nil {
		return 0, err
	}
	version, err := e.inner.Commit(ctx, ent)
	if err != nil {
		return 0, err
	}
	e.sim.committed(e.destination, before, ent)
	return version, e.sim.respond(ctx, "entity commit")
}

// LoadBatch reads every entity in one step (store.BatchLoader).
func (e *entityStore) LoadBatch(ctx context.Context, keys []string) ([]store.Entity, error) {
	if err := e.sim.yield(ctx, fmt.Sprintf("%s.LoadBatch(%d)", e.destination, len(keys))); err != nil {
		return nil, err
	}
	if err := e.sim.failBefore(ctx, "entity load"); err != nil {
		return nil, err
	}
	out := make([]store.Entity, len(keys))
	for i, key := range keys {
		var err error
		if out[i], err = e.inner.Load(ctx, key); err != nil {
			return nil, err
		}
	}
	e.sim.count("path: plain batch load")
	return out, nil
}

// CommitBatch commits each entity as Commit does, in one atomic step with
// one yield point and the same faults (store.BatchCommitter), so deferred
// removals and plain batches run the engine's batch path.
func (e *entityStore) CommitBatch(ctx context.Context, entities []store.Entity) ([]error, error) {
	if err := e.sim.yield(ctx, fmt.Sprintf("%s.CommitBatch(%d entities)", e.destination, len(entities))); err != nil {
		return nil, err
	}
	if err := e.sim.failBefore(ctx, "entity batch commit"); err != nil {
		return nil, err
	}
	results := make([]error, len(entities))
	activities := false
	for i, ent := range entities {
		before, err := e.inner.Load(ctx, ent.Key)
		if err != nil {
			return nil, err
		}
		activities = activities || len(ent.Outbox) > len(before.Outbox) || ent.Version == 0
		if len(ent.Outbox)-len(before.Outbox) > 1 && before.Version == ent.Version {
			e.sim.count("path: plain chain of signals for one entity committed")
		}
		if _, results[i] = e.inner.Commit(ctx, ent); results[i] == nil {
			e.sim.committed(e.destination, before, ent)
		}
	}
	if activities {
		e.sim.count("path: plain batch commit of activities")
	} else {
		e.sim.count("path: batch commit of deferred removals")
	}
	return results, e.sim.respond(ctx, "entity batch commit")
}

func (e *entityStore) Stale(ctx context.Context, before time.Time, limit int) ([]string, error) {
	if err := e.sim.yield(ctx, e.destination+".Stale"); err != nil {
		return nil, err
	}
	return e.inner.Stale(ctx, before, limit)
}

// CommitTx commits a transactional activity in the memory store's
// transaction, as one atomic step with the same faults as Commit, and
// checks that the rows the activity wrote are new: a service's own rows
// are written exactly once (store.TxCommitter).
func (e *entityStore) CommitTx(ctx context.Context, step store.TxStep, write func(context.Context, *memory.Tx) (store.Entity, []baton.Token, error)) (uint64, bool, error) {
	if err := e.sim.yield(ctx, fmt.Sprintf("%s.CommitTx(%s@v%d)", e.destination, step.Key, step.Version)); err != nil {
		return 0, false, err
	}
	if err := e.sim.failBefore(ctx, "transaction commit"); err != nil {
		return 0, false, err
	}
	version, consumed, err := e.commitTx(ctx, step, write, nil)
	if err != nil {
		return 0, false, err
	}
	return version, consumed, e.sim.respond(ctx, "transaction commit")
}

// commitTx runs the inner store's CommitTx and the checks of a commit;
// transition, if set, runs in the same atomic step after the commit (the
// fast path).
func (e *entityStore) commitTx(ctx context.Context, step store.TxStep, write func(context.Context, *memory.Tx) (store.Entity, []baton.Token, error), transition func([]baton.Token)) (uint64, bool, error) {
	before, err := e.inner.Load(ctx, step.Key)
	if err != nil {
		return 0, false, err
	}
	rows := e.inner.Table(sideTable)
	var children []baton.Token
	inner := step
	inner.Fused = false
	version, consumed, err := e.inner.CommitTx(ctx, inner, func(ctx context.Context, tx *memory.Tx) (store.Entity, []baton.Token, error) {
		next, create, err := write(ctx, tx)
		children = create
		return next, create, err
	})
	if err != nil {
		return 0, false, err
	}
	after, err := e.inner.Load(ctx, step.Key)
	if err != nil {
		return 0, false, err
	}
	e.sim.committed(e.destination, before, after)
	for key := range e.inner.Table(sideTable) {
		if _, had := rows[key]; !had {
			e.sim.rowWritten(e.destination, key)
		}
	}
	if transition != nil {
		transition(children)
	}
	return version, consumed, nil
}

// RecordStart, LoadStart, UpdateStart, DeleteStart and PendingStarts make
// the destination's store record starts (store.Starter): each is a yield
// point with faults, as any write.
func (e *entityStore) RecordStart(ctx context.Context, tx *memory.Tx, start store.Start, root *baton.Token) (store.Start, error) {
	return e.inner.RecordStart(ctx, tx, start, root)
}

func (e *entityStore) LoadStart(ctx context.Context, id baton.TokenID) (store.Start, error) {
	if err := e.sim.yield(ctx, e.destination+".LoadStart("+short(id)+")"); err != nil {
		return store.Start{}, err
	}
	if err := e.sim.failBefore(ctx, "start load"); err != nil {
		return store.Start{}, err
	}
	return e.inner.LoadStart(ctx, id)
}

func (e *entityStore) UpdateStart(ctx context.Context, start store.Start) (store.Start, error) {
	if err := e.sim.yield(ctx, fmt.Sprintf("%s.UpdateStart(%s@v%d)", e.destination, short(start.ID), start.Version)); err != nil {
		return store.Start{}, err
	}
	if err := e.sim.failBefore(ctx, "start update"); err != nil {
		return store.Start{}, err
	}
	updated, err := e.inner.UpdateStart(ctx, start)
	if err != nil {
		return store.Start{}, err
	}
	return updated, e.sim.respond(ctx, "start update")
}

func (e *entityStore) DeleteStart(ctx context.Context, id baton.TokenID) error {
	if err := e.sim.yield(ctx, e.destination+".DeleteStart("+short(id)+")"); err != nil {
		return err
	}
	if err := e.sim.failBefore(ctx, "start delete"); err != nil {
		return err
	}
	if err := e.inner.DeleteStart(ctx, id); err != nil {
		return err
	}
	return e.sim.respond(ctx, "start delete")
}

func (e *entityStore) PendingStarts(ctx context.Context, before time.Time, limit int) ([]store.Start, error) {
	if err := e.sim.yield(ctx, e.destination+".PendingStarts"); err != nil {
		return nil, err
	}
	return e.inner.PendingStarts(ctx, before, limit)
}

// committed checks a successful commit: newly applied activities must each
// be applied for the first time, and the children recorded in new outbox
// entries become the only signals that may ever be dispatched.
func (s *Sim) committed(destination string, before, after store.Entity) {
	var old, cur ledgerState
	_ = json.Unmarshal(before.State, &old)
	_ = json.Unmarshal(after.State, &cur)
	for _, applied := range cur.Applied[min(len(old.Applied), len(cur.Applied)):] {
		s.ledger[ledgerKey(applied)]++
		if s.ledger[ledgerKey(applied)] > 1 {
			s.violate("activity applied twice: %s at %s", applied, destination)
		}
	}
	for _, entry := range after.Outbox {
		if _, had := before.Entry(entry.Token); had {
			continue
		}
		for _, sig := range entry.Signals {
			s.committedSignals[sig.ID] = true
		}
	}
}

// ledgerKey drops the token id: a second, different signal for the same
// activity of a conversation (a ghost of a losing attempt) is a duplicate too.
func ledgerKey(applied string) string {
	for i := len(applied) - 1; i >= 0; i-- {
		if applied[i] == '/' {
			return applied[:i]
		}
	}
	return applied
}

func (s *Sim) tokenCreated(tok baton.Token) {
	if tok.Root() {
		s.issuedRoots[tok.ID] = true
	}
	if s.consumedEver[tok.ID] {
		s.violate("token %s resurrected: created again after it was consumed", short(tok.ID))
	}
	if !tok.Root() && !s.committedSignals[tok.ID] {
		s.violate("garbage token %s: no committed activity emitted it", short(tok.ID))
	}
}

func short(id baton.TokenID) string { return id.String()[:8] }

// fastStore is one destination's view of a database that keeps both its
// entities and the tokens, so the engine takes the fast path (protocol.md 3.2):
// steps 4 and 5 in one atomic operation.
type fastStore struct {
	*tokenStore
	*entityStore
}

var (
	_ store.CommitTransitioner      = (*fastStore)(nil)
	_ store.TxCommitter[*memory.Tx] = (*fastStore)(nil)
)

// CommitTx is the fast path of a transactional activity: the token's
// liveness, the activity's commit with its writes, and the transition in
// one atomic step.
func (f *fastStore) CommitTx(ctx context.Context, step store.TxStep, write func(context.Context, *memory.Tx) (store.Entity, []baton.Token, error)) (uint64, bool, error) {
	s := f.tokenStore.sim
	if err := s.yield(ctx, fmt.Sprintf("%s.CommitTx(%s@v%d, %s)", f.destination, step.Key, step.Version, short(step.Token))); err != nil {
		return 0, false, err
	}
	if err := s.failBefore(ctx, "transaction commit+transition"); err != nil {
		return 0, false, err
	}
	if _, err := f.tokenStore.inner.Get(ctx, step.Token); err != nil {
		return 0, false, nil // not live: nothing applied
	}
	version, consumed, err := f.entityStore.commitTx(ctx, step, write, func(children []baton.Token) {
		if consumed, err := f.tokenStore.inner.Transition(ctx, step.Token, children); err != nil || !consumed {
			s.violate("sim: fast path transition did not apply after its transactional commit: %v", err)
		}
		s.consumedEver[step.Token] = true
		for _, tok := range children {
			s.tokenCreated(tok)
		}
	})
	if err != nil {
		return 0, false, err
	}
	s.count("path: transactional commit+transition")
	return version, consumed, s.respond(ctx, "transaction commit+transition")
}

func (f *fastStore) CommitTransition(ctx context.Context, ent store.Entity, token baton.TokenID, create []baton.Token) (uint64, bool, error) {
	s := f.tokenStore.sim
	if err := s.yield(ctx, fmt.Sprintf("%s.CommitTransition(%s@v%d, %s)", f.destination, ent.Key, ent.Version, short(token))); err != nil {
		return 0, false, err
	}
	if err := s.failBefore(ctx, "commit+transition"); err != nil {
		return 0, false, err
	}
	if _, err := f.tokenStore.inner.Get(ctx, token); err != nil {
		return 0, false, nil // not live: nothing applied
	}
	before, err := f.entityStore.inner.Load(ctx, ent.Key)
	if err != nil {
		return 0, false, err
	}
	version, err := f.entityStore.inner.Commit(ctx, ent)
	if err != nil {
		return 0, false, err
	}
	s.committed(f.destination, before, ent)
	if consumed, err := f.tokenStore.inner.Transition(ctx, token, create); err != nil || !consumed {
		s.violate("sim: fast path transition did not apply after its commit: %v", err)
	}
	s.consumedEver[token] = true
	for _, tok := range create {
		s.tokenCreated(tok)
	}
	s.count("path: fast commit+transition")
	return version, true, s.respond(ctx, "commit+transition")
}

// snapshotStore is a fastStore that also reads an entity and a token at one
// instant (store.TokenLoader), as the PostgreSQL and embedded stores do:
// the engine then does steps 1 and 3 in one call.
type snapshotStore struct{ *fastStore }

var _ store.TokenLoader = snapshotStore{}

func (f snapshotStore) LoadWithToken(ctx context.Context, key string, token baton.TokenID) (store.Entity, baton.Token, error) {
	s := f.tokenStore.sim
	if err := s.yield(ctx, fmt.Sprintf("%s.LoadWithToken(%s, %s)", f.destination, key, short(token))); err != nil {
		return store.Entity{}, baton.Token{}, err
	}
	if err := s.failBefore(ctx, "entity load with token"); err != nil {
		return store.Entity{}, baton.Token{}, err
	}
	ent, err := f.entityStore.inner.Load(ctx, key)
	if err != nil {
		return store.Entity{}, baton.Token{}, err
	}
	tok, err := f.tokenStore.inner.Get(ctx, token)
	s.count("path: snapshot load with token")
	return ent, tok, err
}

// batchStore is a snapshotStore that also reads and commits many signals
// at once (store.TransitionBatcher), as the PostgreSQL and embedded stores
// do: the engine then processes batches of deliveries (Config.Batch).
// Each call is one atomic step, faults included.
type batchStore struct{ snapshotStore }

var _ store.TransitionBatcher = batchStore{}

func (f batchStore) LoadWithTokens(ctx context.Context, reads []store.TokenRead) ([]store.Loaded, error) {
	s := f.tokenStore.sim
	if err := s.yield(ctx, fmt.Sprintf("%s.LoadWithTokens(%d)", f.destination, len(reads))); err != nil {
		return nil, err
	}
	if err := s.failBefore(ctx, "batch load"); err != nil {
		return nil, err
	}
	out := make([]store.Loaded, len(reads))
	for i, r := range reads {
		ent, err := f.entityStore.inner.Load(ctx, r.Key)
		if err != nil {
			return nil, err
		}
		tok, err := f.tokenStore.inner.Get(ctx, r.Token)
		out[i] = store.Loaded{Entity: ent, Token: tok, Live: err == nil}
	}
	s.count("path: batch load")
	return out, nil
}

// firstAbsent returns the first of ids that is not a live token's, or nil.
func (f batchStore) firstAbsent(ctx context.Context, ids []baton.TokenID) *baton.TokenID {
	for i, id := range ids {
		if _, err := f.tokenStore.inner.Get(ctx, id); err != nil {
			return &ids[i]
		}
	}
	return nil
}

func (f batchStore) CommitTransitions(ctx context.Context, transitions []store.Transition) ([]error, error) {
	s := f.tokenStore.sim
	if err := s.yield(ctx, fmt.Sprintf("%s.CommitTransitions(%d)", f.destination, len(transitions))); err != nil {
		return nil, err
	}
	if err := store.ValidateTransitions(transitions); err != nil {
		return nil, err
	}
	if err := s.failBefore(ctx, "batch commit"); err != nil {
		return nil, err
	}
	results := make([]error, len(transitions))
	for i, t := range transitions {
		if gone := f.firstAbsent(ctx, t.Consumes()); gone != nil {
			results[i] = fmt.Errorf("%w: token %s", store.ErrNotFound, gone)
			continue
		}
		before, err := f.entityStore.inner.Load(ctx, t.Entity.Key)
		if err != nil {
			return nil, err
		}
		if before.Version != t.Entity.Version {
			results[i] = fmt.Errorf("%w: %s", store.ErrConflict, t.Entity.Key)
			continue
		}
		if _, err := f.entityStore.inner.Commit(ctx, t.Entity); err != nil {
			s.violate("sim: batch commit of %s refused after its check: %v", t.Entity.Key, err)
		}
		s.committed(f.destination, before, t.Entity)
		if len(t.Then) > 0 {
			s.count("path: chain of signals for one entity committed")
		}
		for j, id := range t.Consumes() {
			var create []baton.Token
			if j == 0 {
				create = t.Create
			}
			if consumed, err := f.tokenStore.inner.Transition(ctx, id, create); err != nil || !consumed {
				s.violate("sim: batch transition did not apply after its commit: %v", err)
			}
			s.consumedEver[id] = true
		}
		for _, tok := range t.Create {
			s.tokenCreated(tok)
		}
	}
	s.count(fmt.Sprintf("path: batch commit of %d", len(transitions)))
	return results, s.respond(ctx, "batch commit")
}
