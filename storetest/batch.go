package storetest

// Checks of store.TransitionBatcher, which RunEntityStore runs where a
// store has it.

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
)

// batchStore is what the TransitionBatcher checks need: a store of
// entities and tokens that loads and commits in batches.
type batchStore interface {
	store.EntityStore
	store.TokenStore
	store.TransitionBatcher
}

func newBatchStore(t *testing.T, h EntityHarness) batchStore {
	s, ok := h.New(t).(batchStore)
	if !ok {
		t.Skip("the store does not implement store.TransitionBatcher and store.TokenStore")
	}
	return s
}

// testCommitTransitions checks that each transition of a batch is applied
// or refused on its own, all of it or nothing of it.
func testCommitTransitions(t *testing.T, h EntityHarness) {
	ctx := testContext(t)
	s := newBatchStore(t, h)
	dest := uniqueName("orders")
	a := commit(ctx, t, s, store.Entity{Key: uniqueName("a"), State: []byte("a1")})
	b := commit(ctx, t, s, store.Entity{Key: uniqueName("b"), State: []byte("b1")})
	b = commit(ctx, t, s, store.Entity{Key: b.Key, Version: b.Version, State: []byte("b2")})
	stale := commit(ctx, t, s, store.Entity{Key: uniqueName("stale"), State: []byte("s1")})
	stale = commit(ctx, t, s, store.Entity{Key: stale.Key, Version: stale.Version, State: []byte("s2")})
	roots := issueAll(ctx, t, s, newRoot(baton.TokenID{}, dest), newRoot(baton.TokenID{}, dest), newRoot(baton.TokenID{}, dest), newRoot(baton.TokenID{}, dest))
	ta, tb, tn, tStale := roots[0], roots[1], roots[2], roots[3]
	dead := unissued(baton.TokenID{}, dest)

	aKids, nKids, staleKids, deadKids := newChildren(ta, "billing", 1), newChildren(tn, "billing", 2), newChildren(tStale, "billing", 1), newChildren(dead, "billing", 1)
	nextA := store.Entity{Key: a.Key, Version: a.Version, State: []byte("a2"), Outbox: []store.OutboxEntry{newEntry(timestamp(-time.Second), 1)}}
	nextN := store.Entity{Key: uniqueName("new"), State: []byte("n1"), Outbox: []store.OutboxEntry{newEntry(timestamp(-time.Second), 2)}}
	nextB := store.Entity{Key: b.Key, Version: b.Version, State: []byte("b3")}
	staleNext := store.Entity{Key: stale.Key, Version: 1, State: []byte("lost")}
	deadNext := store.Entity{Key: uniqueName("dead"), State: []byte("ghost")}
	results, err := s.CommitTransitions(ctx, []store.Transition{
		{Entity: nextA, Token: ta.ID, Create: aKids},
		{Entity: staleNext, Token: tStale.ID, Create: staleKids},
		{Entity: nextN, Token: tn.ID, Create: nKids},
		{Entity: deadNext, Token: dead.ID, Create: deadKids},
		{Entity: nextB, Token: tb.ID},
	})
	if err != nil || len(results) != 5 {
		t.Fatalf("CommitTransitions = %v, %v; want five results", results, err)
	}
	if results[0] != nil || results[2] != nil || results[4] != nil ||
		!errors.Is(results[1], store.ErrConflict) || !errors.Is(results[3], store.ErrNotFound) {
		t.Fatalf("CommitTransitions results = %v; want nil, ErrConflict, nil, ErrNotFound, nil", results)
	}
	nextA.Version, nextN.Version, nextB.Version = a.Version+1, 1, b.Version+1
	requireEntity(ctx, t, s, nextA)
	requireEntity(ctx, t, s, nextN)
	requireEntity(ctx, t, s, nextB)
	requireEntity(ctx, t, s, stale)
	requireEntity(ctx, t, s, store.Entity{Key: deadNext.Key})
	requireAbsent(ctx, t, s, ta.ID, tb.ID, tn.ID)
	requireLive(ctx, t, s, append(append([]baton.Token{tStale}, aKids...), nKids...)...)
	requireAbsent(ctx, t, s, append(idsOf(staleKids), idsOf(deadKids)...)...)

	// A child that exists refuses the whole batch.
	tx, ty := issue(ctx, t, s, newRoot(baton.TokenID{}, dest)), issue(ctx, t, s, newRoot(baton.TokenID{}, dest))
	_, err = s.CommitTransitions(ctx, []store.Transition{
		{Entity: store.Entity{Key: nextB.Key, Version: nextB.Version, State: []byte("b4")}, Token: tx.ID},
		{Entity: store.Entity{Key: nextA.Key, Version: nextA.Version, State: []byte("a3")}, Token: ty.ID, Create: aKids[:1]},
	})
	if !errors.Is(err, store.ErrExists) {
		t.Errorf("CommitTransitions creating a live token = %v, want ErrExists", err)
	}
	requireEntity(ctx, t, s, nextA)
	requireEntity(ctx, t, s, nextB)
	requireLive(ctx, t, s, tx, ty)

	// Refused whole: one entity or one token twice.
	for name, batch := range map[string][]store.Transition{
		"same entity twice": {{Entity: nextB, Token: tx.ID}, {Entity: nextB, Token: ty.ID}},
		"same token twice":  {{Entity: nextB, Token: tx.ID}, {Entity: nextA, Token: tx.ID}},
		"token consumed and created": {
			{Entity: nextB, Token: tx.ID}, {Entity: nextA, Token: ty.ID, Create: []baton.Token{{ID: tx.ID, Conversation: ty.Conversation, Causation: ty.ID, Destination: dest, Type: "t"}}},
		},
	} {
		if _, err := s.CommitTransitions(ctx, batch); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("CommitTransitions with %s = %v, want ErrInvalid", name, err)
		}
	}
	requireEntity(ctx, t, s, nextB)
	requireLive(ctx, t, s, tx, ty)
	if results, err := s.CommitTransitions(ctx, nil); err != nil || len(results) != 0 {
		t.Errorf("CommitTransitions of nothing = %v, %v", results, err)
	}
}

// testChainedTransitions checks transitions that consume several tokens
// (Transition.Then): all of them or none.
func testChainedTransitions(t *testing.T, h EntityHarness) {
	ctx := testContext(t)
	s := newBatchStore(t, h)
	dest := uniqueName("billing")
	a := commit(ctx, t, s, store.Entity{Key: uniqueName("a"), State: []byte("a1")})
	b := commit(ctx, t, s, store.Entity{Key: uniqueName("b"), State: []byte("b1")})
	stale := commit(ctx, t, s, store.Entity{Key: uniqueName("stale"), State: []byte("s1")})
	stale = commit(ctx, t, s, store.Entity{Key: stale.Key, Version: stale.Version, State: []byte("s2")})
	roots := issueAll(ctx, t, s, newRoot(baton.TokenID{}, dest), newRoot(baton.TokenID{}, dest), newRoot(baton.TokenID{}, dest),
		newRoot(baton.TokenID{}, dest), newRoot(baton.TokenID{}, dest), newRoot(baton.TokenID{}, dest),
		newRoot(baton.TokenID{}, dest), newRoot(baton.TokenID{}, dest), newRoot(baton.TokenID{}, dest))
	dead := unissued(baton.TokenID{}, dest)
	aKids := append(newChildren(roots[0], "shipping", 1), newChildren(roots[2], "shipping", 2)...)
	bKids := newChildren(roots[3], "shipping", 1)
	newKids := newChildren(roots[8], "shipping", 1)
	nextA := store.Entity{Key: a.Key, Version: a.Version, State: []byte("a4"), Outbox: []store.OutboxEntry{newEntry(timestamp(-time.Second), 1), newEntry(timestamp(-time.Second), 2)}}
	nextB := store.Entity{Key: b.Key, Version: b.Version, State: []byte("lost")}
	staleNext := store.Entity{Key: stale.Key, Version: 1, State: []byte("lost")}
	nextNew := store.Entity{Key: uniqueName("new"), State: []byte("n2")}
	results, err := s.CommitTransitions(ctx, []store.Transition{
		{Entity: nextA, Token: roots[0].ID, Then: []baton.TokenID{roots[1].ID, roots[2].ID}, Create: aKids},
		{Entity: nextB, Token: roots[3].ID, Then: []baton.TokenID{dead.ID, roots[4].ID}, Create: bKids},
		{Entity: staleNext, Token: roots[5].ID, Then: []baton.TokenID{roots[6].ID}},
		{Entity: nextNew, Token: roots[7].ID, Then: []baton.TokenID{roots[8].ID}, Create: newKids},
	})
	if err != nil || len(results) != 4 {
		t.Fatalf("CommitTransitions = %v, %v; want four results", results, err)
	}
	if results[0] != nil || !errors.Is(results[1], store.ErrNotFound) || !errors.Is(results[2], store.ErrConflict) || results[3] != nil {
		t.Fatalf("CommitTransitions results = %v; want nil, ErrNotFound, ErrConflict, nil", results)
	}
	nextA.Version, nextNew.Version = a.Version+1, 1
	requireEntity(ctx, t, s, nextA)
	requireEntity(ctx, t, s, nextNew)
	requireEntity(ctx, t, s, b)
	requireEntity(ctx, t, s, stale)
	requireAbsent(ctx, t, s, roots[0].ID, roots[1].ID, roots[2].ID, roots[7].ID, roots[8].ID)
	requireLive(ctx, t, s, append(append(append([]baton.Token{}, roots[3:7]...), aKids...), newKids...)...)
	requireAbsent(ctx, t, s, idsOf(bKids)...)

	// Refused whole: a chained token twice, consumed elsewhere, created, or zero.
	tx, ty := issue(ctx, t, s, newRoot(baton.TokenID{}, dest)), issue(ctx, t, s, newRoot(baton.TokenID{}, dest))
	nextA.State = []byte("a5")
	for name, batch := range map[string][]store.Transition{
		"token chained after itself": {{Entity: nextA, Token: tx.ID, Then: []baton.TokenID{tx.ID}}},
		"token chained twice":        {{Entity: nextA, Token: tx.ID, Then: []baton.TokenID{ty.ID, ty.ID}}},
		"token chained and consumed": {{Entity: nextA, Token: tx.ID, Then: []baton.TokenID{ty.ID}}, {Entity: b, Token: ty.ID}},
		"token chained and created": {{Entity: nextA, Token: tx.ID, Then: []baton.TokenID{ty.ID},
			Create: []baton.Token{{ID: ty.ID, Conversation: tx.Conversation, Causation: tx.ID, Destination: dest, Type: "t"}}}},
		"zero token chained": {{Entity: nextA, Token: tx.ID, Then: []baton.TokenID{{}}}},
	} {
		if _, err := s.CommitTransitions(ctx, batch); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("CommitTransitions with %s = %v, want ErrInvalid", name, err)
		}
	}
	nextA.State = []byte("a4")
	requireEntity(ctx, t, s, nextA)
	requireLive(ctx, t, s, tx, ty)
}

// testLoadWithTokens checks that a batch of reads returns what
// LoadWithToken returns for each.
func testLoadWithTokens(t *testing.T, h EntityHarness) {
	ctx := testContext(t)
	s := newBatchStore(t, h)
	dest := uniqueName("orders")
	a := commit(ctx, t, s, store.Entity{Key: uniqueName("a"), State: []byte("a1"), Outbox: []store.OutboxEntry{newEntry(timestamp(-time.Minute), 1)}})
	live, consumed := issue(ctx, t, s, newRoot(baton.TokenID{}, dest)), issue(ctx, t, s, newRoot(baton.TokenID{}, dest))
	transition(ctx, t, s, consumed.ID, nil)
	missing := uniqueName("missing")
	got, err := s.LoadWithTokens(ctx, []store.TokenRead{
		{Key: a.Key, Token: live.ID},
		{Key: missing, Token: consumed.ID},
		{Key: a.Key, Token: consumed.ID}, // a key may repeat
	})
	if err != nil || len(got) != 3 {
		t.Fatalf("LoadWithTokens = %v, %v; want three answers", got, err)
	}
	for i, want := range []struct {
		entity store.Entity
		live   bool
	}{{a, true}, {store.Entity{Key: missing}, false}, {a, false}} {
		if d := entityDiff(got[i].Entity, want.entity); d != "" {
			t.Errorf("LoadWithTokens answer %d entity: %s", i, d)
		}
		if got[i].Live != want.live {
			t.Errorf("LoadWithTokens answer %d: Live %v, want %v", i, got[i].Live, want.live)
		}
	}
	if d := tokenDiff(got[0].Token, live); d != "" {
		t.Errorf("LoadWithTokens token: %s", d)
	}
	if got, err := s.LoadWithTokens(ctx, nil); err != nil || len(got) != 0 {
		t.Errorf("LoadWithTokens of nothing = %v, %v", got, err)
	}
}

// testConcurrentBatches runs batches over shared entities from several
// goroutines, each batch naming the entities in another order (some twice,
// as chains), and every round's batches creating the same new entities in
// other orders too: every transition reported applied must be applied
// exactly once (the entity's version counts them, its tokens are gone),
// every one refused must have left its tokens live, and no batch may fail
// as a whole (as one that waited for another in a cycle, a deadlock,
// would).
func testConcurrentBatches(t *testing.T, h EntityHarness) {
	ctx := testContext(t)
	s := newBatchStore(t, h)
	const workers, batches, existing, created = 4, 15, 6, 3
	const keys = existing + created
	names := make([]string, existing)
	for i := range names {
		names[i] = commit(ctx, t, s, store.Entity{Key: uniqueName(fmt.Sprintf("account%d", i)), State: []byte("0")}).Key
	}
	fresh := make([][]string, batches) // the entities round n creates
	for n := range fresh {
		for i := range created {
			fresh[n] = append(fresh[n], uniqueName(fmt.Sprintf("new%d-%d", n, i)))
		}
	}
	keyOf := func(w, n, i int) string {
		if i < existing {
			return names[(i*(w+1)+n)%existing]
		}
		return fresh[n][(i-existing+w)%created]
	}
	dest := uniqueName("billing")
	var mu sync.Mutex
	applied := make(map[string]int)
	var consumedTokens, liveTokens []baton.TokenID
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for n := range batches {
				reads := make([]store.TokenRead, keys)
				roots := make([]baton.Token, keys)
				for i := range reads {
					var err error
					if roots[i], err = s.Issue(ctx, newRoot(baton.TokenID{}, dest)); err != nil {
						t.Errorf("Issue = %v", err)
						return
					}
					// Each worker and round names the keys in another order.
					reads[i] = store.TokenRead{Key: keyOf(w, n, i), Token: roots[i].ID}
				}
				loaded, err := s.LoadWithTokens(ctx, reads)
				if err != nil {
					t.Errorf("LoadWithTokens = %v", err)
					return
				}
				// A key read twice makes a chain (Transition.Then).
				chain := make(map[string]int)
				var batch []store.Transition
				for i, l := range loaded {
					if j, taken := chain[l.Entity.Key]; taken {
						batch[j].Then = append(batch[j].Then, roots[i].ID)
						batch[j].Create = append(batch[j].Create, newChildren(roots[i], dest, 1)...)
						continue
					}
					chain[l.Entity.Key] = len(batch)
					next := l.Entity
					next.State = []byte(fmt.Sprint(l.Entity.Version))
					batch = append(batch, store.Transition{Entity: next, Token: roots[i].ID, Create: newChildren(roots[i], dest, 1)})
				}
				results, err := s.CommitTransitions(ctx, batch)
				if err != nil {
					t.Errorf("CommitTransitions failed as a whole: %v", err)
					return
				}
				mu.Lock()
				for i, tr := range batch {
					if results[i] == nil {
						applied[tr.Entity.Key]++
						consumedTokens = append(consumedTokens, tr.Consumes()...)
					} else {
						liveTokens = append(liveTokens, tr.Consumes()...)
					}
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	total := 0
	check := func(key string, committedBefore int) {
		e, err := s.Load(ctx, key)
		if err != nil {
			t.Fatalf("Load = %v", err)
		}
		if want := uint64(committedBefore + applied[key]); e.Version != want {
			t.Errorf("entity %s at version %d after %d applied transitions, want %d", key, e.Version, applied[key], want)
		}
		total += applied[key]
	}
	for _, key := range names {
		check(key, 1)
	}
	for _, round := range fresh {
		for _, key := range round {
			check(key, 0)
		}
	}
	if total == 0 {
		t.Errorf("no transition of %d batches was applied", workers*batches)
	}
	requireAbsent(ctx, t, s, consumedTokens...)
	for _, id := range liveTokens {
		if _, err := s.Get(ctx, id); err != nil {
			t.Errorf("token %s of a refused transition: Get = %v, want it live", id, err)
		}
	}
	t.Logf("%d transitions applied (%d tokens consumed), %d tokens left live", total, len(consumedTokens), len(liveTokens))
}
