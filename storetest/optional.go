package storetest

// Checks of the optional capabilities of entity stores (store.TokenLoader,
// store.BatchCommitter, store.BatchLoader), which RunEntityStore runs
// where a store has them; store.TransitionBatcher has its own in batch.go.

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
)

// snapshotStore is what testLoadWithToken needs: a store of entities and
// tokens that reads both in one call.
type snapshotStore interface {
	store.EntityStore
	store.TokenStore
	store.TokenLoader
}

// testLoadWithToken checks store.TokenLoader, for entity stores that offer
// it (and are token stores too); others skip it.
func testLoadWithToken(t *testing.T, h EntityHarness) {
	ctx := testContext(t)
	s, ok := h.New(t).(snapshotStore)
	if !ok {
		t.Skip("the store does not implement store.TokenLoader and store.TokenStore")
	}
	key := uniqueName("order")
	root := unissued(baton.NewTokenID(), "shop")

	// Neither exists: the entity at version 0, and ErrNotFound.
	ent, _, err := s.LoadWithToken(ctx, key, root.ID)
	if !errors.Is(err, store.ErrNotFound) || ent.Key != key || ent.Version != 0 {
		t.Fatalf("LoadWithToken of nothing = %+v, %v; want version 0 and ErrNotFound", ent, err)
	}

	// Both exist: what Load and Get return.
	root = issue(ctx, t, s, newRoot(root.Conversation, root.Destination))
	want := commit(ctx, t, s, store.Entity{Key: key, State: []byte("placed"), Outbox: []store.OutboxEntry{newEntry(timestamp(-time.Minute), 2)}})
	ent, tok, err := s.LoadWithToken(ctx, key, root.ID)
	if err != nil {
		t.Fatalf("LoadWithToken = %v", err)
	}
	if d := entityDiff(ent, want); d != "" {
		t.Errorf("LoadWithToken entity: %s", d)
	}
	if d := tokenDiff(tok, root); d != "" {
		t.Errorf("LoadWithToken token: %s", d)
	}

	// The token consumed: the entity still, and ErrNotFound.
	if consumed, err := s.Transition(ctx, root.ID, nil); err != nil || !consumed {
		t.Fatalf("Transition = %v, %v", consumed, err)
	}
	ent, _, err = s.LoadWithToken(ctx, key, root.ID)
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("LoadWithToken of a consumed token = %v, want ErrNotFound", err)
	}
	if d := entityDiff(ent, want); d != "" {
		t.Errorf("LoadWithToken entity after the token was consumed: %s", d)
	}

	// A cancelled context is an error, and not ErrNotFound: the caller
	// must not take the signal for a duplicate.
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, _, err := s.LoadWithToken(cancelled, key, root.ID); err == nil || errors.Is(err, store.ErrNotFound) {
		t.Errorf("LoadWithToken with a cancelled context = %v, want an error other than ErrNotFound", err)
	}
}

// testCommitBatch checks store.BatchCommitter, for entity stores that
// offer it; others skip it.
func testCommitBatch(t *testing.T, h EntityHarness) {
	ctx := testContext(t)
	s := h.New(t)
	bc, ok := s.(store.BatchCommitter)
	if !ok {
		t.Skip("the store does not implement store.BatchCommitter")
	}
	a := commit(ctx, t, s, store.Entity{Key: uniqueName("a"), State: []byte("a1"), Outbox: []store.OutboxEntry{newEntry(timestamp(-time.Minute), 1)}})
	b := commit(ctx, t, s, store.Entity{Key: uniqueName("b"), State: []byte("b1")})
	c := commit(ctx, t, s, store.Entity{Key: uniqueName("c"), State: []byte("c1")})
	c = commit(ctx, t, s, store.Entity{Key: c.Key, Version: c.Version, State: []byte("c2")})
	taken := commit(ctx, t, s, store.Entity{Key: uniqueName("taken"), State: []byte("t1")})

	// a and b at their versions, c at a stale one, a new entity, and a
	// new entity whose key is taken.
	nextA := store.Entity{Key: a.Key, Version: a.Version, State: []byte("a2")} // its outbox entry removed
	nextB := store.Entity{Key: b.Key, Version: b.Version, State: []byte("b2"), Outbox: []store.OutboxEntry{newEntry(timestamp(-time.Second), 2)}}
	staleC := store.Entity{Key: c.Key, Version: 1, State: []byte("lost")}
	fresh := store.Entity{Key: uniqueName("fresh"), State: []byte("n1"), Outbox: []store.OutboxEntry{newEntry(timestamp(-time.Second), 1)}}
	retaken := store.Entity{Key: taken.Key, State: []byte("lost"), Outbox: []store.OutboxEntry{newEntry(timestamp(-time.Second), 1)}}
	results, err := bc.CommitBatch(ctx, []store.Entity{nextA, staleC, nextB, fresh, retaken})
	if err != nil || len(results) != 5 {
		t.Fatalf("CommitBatch = %v, %v; want five results", results, err)
	}
	if results[0] != nil || !errors.Is(results[1], store.ErrConflict) || results[2] != nil || results[3] != nil || !errors.Is(results[4], store.ErrConflict) {
		t.Fatalf("CommitBatch results = %v; want nil, ErrConflict, nil, nil, ErrConflict", results)
	}
	nextA.Version, nextB.Version, fresh.Version = a.Version+1, b.Version+1, 1
	for _, e := range []store.Entity{nextA, nextB, c, fresh, taken} {
		requireEntity(ctx, t, s, e)
	}
	stale, err := s.Stale(ctx, time.Now().Add(time.Hour), 10)
	if err != nil || !slices.Contains(stale, b.Key) || !slices.Contains(stale, fresh.Key) || slices.Contains(stale, a.Key) || slices.Contains(stale, taken.Key) {
		t.Errorf("Stale after CommitBatch = %v, %v; want b and the new entity (entries), not a (none left) nor the taken key (none written)", stale, err)
	}

	// Refused whole: two commits of one key, an outbox that names a token
	// twice (as Commit refuses it).
	newKey := uniqueName("new")
	repeated := newEntry(timestamp(0), 1)
	again := newEntry(timestamp(0), 1)
	again.Token = repeated.Token
	for name, batch := range map[string][]store.Entity{
		"same key twice":     {{Key: c.Key, Version: c.Version, State: []byte("x")}, {Key: c.Key, Version: c.Version, State: []byte("y")}},
		"same new key twice": {{Key: newKey, State: []byte("x")}, {Key: newKey, State: []byte("y")}},
		"a repeated token in an outbox": {{Key: newKey, State: []byte("x")},
			{Key: c.Key, Version: c.Version, State: []byte("y"), Outbox: []store.OutboxEntry{repeated, again}}},
	} {
		if _, err := bc.CommitBatch(ctx, batch); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("CommitBatch with %s = %v, want ErrInvalid", name, err)
		}
	}
	requireEntity(ctx, t, s, c)
	requireEntity(ctx, t, s, store.Entity{Key: newKey})
	if results, err := bc.CommitBatch(ctx, nil); err != nil || len(results) != 0 {
		t.Errorf("CommitBatch of nothing = %v, %v", results, err)
	}
}

// testLoadBatch checks store.BatchLoader, for entity stores that offer it;
// others skip it.
func testLoadBatch(t *testing.T, h EntityHarness) {
	ctx := testContext(t)
	s := h.New(t)
	bl, ok := s.(store.BatchLoader)
	if !ok {
		t.Skip("the store does not implement store.BatchLoader")
	}
	a := commit(ctx, t, s, store.Entity{Key: uniqueName("a"), State: []byte("a1"), Outbox: []store.OutboxEntry{newEntry(timestamp(-time.Minute), 2), newEntry(timestamp(-time.Second), 0)}})
	b := commit(ctx, t, s, store.Entity{Key: uniqueName("b"), State: []byte("b1")})
	commit(ctx, t, s, store.Entity{Key: b.Key, Version: b.Version, State: []byte("b2")})

	// Missing keys among them: a case variant, one no commit accepts, one
	// that is not UTF-8; and a repeated key.
	keys := []string{a.Key, uniqueName("missing"), b.Key, strings.ToUpper(a.Key), "", a.Key + "\xff", a.Key}
	got, err := bl.LoadBatch(ctx, keys)
	if err != nil || len(got) != len(keys) {
		t.Fatalf("LoadBatch = %d entities, %v; want %d", len(got), err, len(keys))
	}
	for i, key := range keys {
		want, err := s.Load(ctx, key)
		if err != nil {
			t.Fatalf("Load(%q) = %v", key, err)
		}
		if d := entityDiff(got[i], want); d != "" {
			t.Errorf("LoadBatch[%d] (%q) differs from Load: %s", i, key, d)
		}
	}

	// Each result is its own, as from Load: a repeated key's are not shared.
	got[0].State[0] ^= 0xff
	got[0].Outbox[0].Reply[0] ^= 0xff
	if d := entityDiff(got[len(keys)-1], a); d != "" {
		t.Errorf("changing one result of a repeated key changed the other: %s", d)
	}

	if got, err := bl.LoadBatch(ctx, nil); err != nil || len(got) != 0 {
		t.Errorf("LoadBatch of nothing = %v, %v", got, err)
	}

	// A failed read is an error, not entities at version 0.
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := bl.LoadBatch(cancelled, []string{a.Key}); err == nil {
		t.Error("LoadBatch with a cancelled context succeeded, want an error")
	}
}
