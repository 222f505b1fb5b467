package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
)

// TxHarness tells RunTxStore how to open a store whose database offers
// transactions of type Tx (store.TxCommitter[Tx] and store.Starter[Tx]),
// and how the service under test writes and reads its own tables there.
type TxHarness[Tx any] struct {
	// New returns an empty store, as EntityHarness.New does. With Fused it
	// is the token store too.
	New func(t *testing.T) store.EntityStore
	// Fused says New's stores keep tokens too: CommitTx runs the fast
	// path and RecordStart creates the root token.
	Fused bool
	// Begin starts a caller's transaction in s's database; commit and
	// rollback end it.
	Begin func(t *testing.T, s store.EntityStore) (tx Tx, commit func() error, rollback func())
	// Put writes a row of the service's own table in tx, a transaction
	// in s's database.
	Put func(ctx context.Context, s store.EntityStore, tx Tx, key string, value []byte) error
	// Get reads a committed row of that table outside any transaction.
	Get func(ctx context.Context, s store.EntityStore, key string) (value []byte, found bool, err error)
}

// RunTxStore checks that the stores h opens commit activities in
// transactions and record starts as store.TxCommitter and store.Starter
// document: the activity's own writes are committed with the entity, the
// outbox entry and (fused) the transition, or not at all.
func RunTxStore[Tx any](t *testing.T, h TxHarness[Tx]) {
	t.Helper()
	if h.New == nil || h.Begin == nil || h.Put == nil || h.Get == nil {
		t.Fatal("storetest: TxHarness needs New, Begin, Put and Get")
	}
	checks := []struct {
		name string
		run  func(*testing.T, TxHarness[Tx])
	}{
		{"CommitTxCommitsAll", testCommitTxCommitsAll[Tx]},
		{"CommitTxStaleVersion", testCommitTxStaleVersion[Tx]},
		{"CommitTxHandlerError", testCommitTxHandlerError[Tx]},
		{"CommitTxDeadToken", testCommitTxDeadToken[Tx]},
		{"ConcurrentCommitTx", testConcurrentCommitTx[Tx]},
		{"RecordStart", testRecordStart[Tx]},
		{"UpdateStart", testUpdateStart[Tx]},
		{"PendingStarts", testPendingStarts[Tx]},
	}
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.run(t, h)
		})
	}
}

func txStores[Tx any](t *testing.T, h TxHarness[Tx]) (store.EntityStore, store.TxCommitter[Tx], store.Starter[Tx]) {
	t.Helper()
	s := h.New(t)
	tc, ok := s.(store.TxCommitter[Tx])
	if !ok {
		t.Fatalf("%T does not implement store.TxCommitter", s)
	}
	st, ok := s.(store.Starter[Tx])
	if !ok {
		t.Fatalf("%T does not implement store.Starter", s)
	}
	return s, tc, st
}

// txToken returns the token a CommitTx consumes: with h.Fused a live root
// in s, else an id that the token store (elsewhere) is said to hold.
func txToken[Tx any](ctx context.Context, t *testing.T, h TxHarness[Tx], s store.EntityStore) baton.Token {
	t.Helper()
	if !h.Fused {
		return unissued(baton.TokenID{}, "orders")
	}
	ts, ok := s.(store.TokenStore)
	if !ok {
		t.Fatalf("TxHarness.Fused, but %T is no token store", s)
	}
	return issue(ctx, t, ts, newRoot(baton.TokenID{}, "orders"))
}

// activity returns a write function for CommitTx that puts row=value in tx
// and commits next with children, or fails with fail.
func activity[Tx any](h TxHarness[Tx], s store.EntityStore, row string, value []byte, next store.Entity, children []baton.Token, fail error) func(context.Context, Tx) (store.Entity, []baton.Token, error) {
	return func(ctx context.Context, tx Tx) (store.Entity, []baton.Token, error) {
		if err := h.Put(ctx, s, tx, row, value); err != nil {
			return store.Entity{}, nil, err
		}
		if fail != nil {
			return store.Entity{}, nil, fail
		}
		return next, children, nil
	}
}

func requireRow[Tx any](ctx context.Context, t *testing.T, h TxHarness[Tx], s store.EntityStore, row string, want []byte) {
	t.Helper()
	got, found, err := h.Get(ctx, s, row)
	switch {
	case err != nil:
		t.Errorf("reading row %q: %v", row, err)
	case want == nil && found:
		t.Errorf("row %q = %q, want none: the activity's write was not rolled back", row, got)
	case want != nil && (!found || string(got) != string(want)):
		t.Errorf("row %q = %q (found %v), want %q", row, got, found, want)
	}
}

func testCommitTxCommitsAll[Tx any](t *testing.T, h TxHarness[Tx]) {
	ctx := testContext(t)
	s, tc, _ := txStores(t, h)
	tok := txToken(ctx, t, h, s)
	sig := baton.Signal{ID: tok.ID, Conversation: tok.Conversation, Destination: tok.Destination, Type: tok.Type}
	children := newChildren(tok, "billing", 2)
	key, row := uniqueName("order"), uniqueName("row")
	entry := store.EntryFor(sig, nil, []byte("reply"), timestamp(-time.Second))
	next := store.Entity{Key: key, State: []byte("placed"), Outbox: []store.OutboxEntry{entry}}
	version, consumed, err := tc.CommitTx(ctx, store.TxStep{Key: key, Token: tok.ID, Fused: h.Fused}, activity(h, s, row, []byte("v1"), next, children, nil))
	if err != nil || !consumed || version != 1 {
		t.Fatalf("CommitTx of a new entity = %d, %v, %v; want 1, true, nil", version, consumed, err)
	}
	next.Version = 1
	requireEntity(ctx, t, s, next)
	requireRow(ctx, t, h, s, row, []byte("v1"))
	if h.Fused {
		ts := s.(store.TokenStore)
		requireAbsent(ctx, t, ts, tok.ID)
		requireLive(ctx, t, ts, children...)
	}

	// An update of the committed entity, with another row.
	tok2 := txToken(ctx, t, h, s)
	again := store.Entity{Key: key, Version: 1, State: []byte("charged")}
	version, consumed, err = tc.CommitTx(ctx, store.TxStep{Key: key, Version: 1, Token: tok2.ID, Fused: h.Fused}, activity(h, s, row+"-2", []byte("v2"), again, nil, nil))
	if err != nil || !consumed || version != 2 {
		t.Fatalf("CommitTx of an update = %d, %v, %v; want 2, true, nil", version, consumed, err)
	}
	again.Version = 2
	requireEntity(ctx, t, s, again)
	requireRow(ctx, t, h, s, row+"-2", []byte("v2"))
}

// testCommitTxStaleVersion: a version conflict commits nothing, the
// activity's writes included, and reports ErrConflict.
func testCommitTxStaleVersion[Tx any](t *testing.T, h TxHarness[Tx]) {
	ctx := testContext(t)
	s, tc, _ := txStores(t, h)
	key := uniqueName("order")
	current := commit(ctx, t, s, store.Entity{Key: key, State: []byte("s1")})
	current = commit(ctx, t, s, store.Entity{Key: key, Version: current.Version, State: []byte("s2")})
	for _, stale := range []uint64{0, 1, 5} {
		tok := txToken(ctx, t, h, s)
		row := uniqueName("row")
		next := store.Entity{Key: key, Version: stale, State: []byte("lost")}
		_, consumed, err := tc.CommitTx(ctx, store.TxStep{Key: key, Version: stale, Token: tok.ID, Fused: h.Fused}, activity(h, s, row, []byte("lost"), next, nil, nil))
		if !errors.Is(err, store.ErrConflict) || consumed {
			t.Errorf("CommitTx at stale version %d = %v, %v; want ErrConflict", stale, consumed, err)
		}
		requireRow(ctx, t, h, s, row, nil)
		if h.Fused {
			requireLive(ctx, t, s.(store.TokenStore), tok)
		}
	}
	requireEntity(ctx, t, s, current)
}

// testCommitTxHandlerError: an error of the activity is returned as it is
// and rolls everything back.
func testCommitTxHandlerError[Tx any](t *testing.T, h TxHarness[Tx]) {
	ctx := testContext(t)
	s, tc, _ := txStores(t, h)
	tok := txToken(ctx, t, h, s)
	key, row := uniqueName("order"), uniqueName("row")
	failure := errors.New("the activity failed")
	_, consumed, err := tc.CommitTx(ctx, store.TxStep{Key: key, Token: tok.ID, Fused: h.Fused}, activity(h, s, row, []byte("v"), store.Entity{Key: key}, nil, failure))
	if !errors.Is(err, failure) || consumed {
		t.Errorf("CommitTx whose activity fails = %v, %v; want the activity's error", consumed, err)
	}
	requireRow(ctx, t, h, s, row, nil)
	requireEntity(ctx, t, s, store.Entity{Key: key})
	if h.Fused {
		requireLive(ctx, t, s.(store.TokenStore), tok)
	}
}

// testCommitTxDeadToken: on the fast path, a token that is not live makes
// CommitTx commit nothing and report consumed false: a duplicate.
func testCommitTxDeadToken[Tx any](t *testing.T, h TxHarness[Tx]) {
	if !h.Fused {
		t.Skip("the store keeps no tokens: the transition is not in its transactions")
	}
	ctx := testContext(t)
	s, tc, _ := txStores(t, h)
	tok := txToken(ctx, t, h, s)
	transition(ctx, t, s.(store.TokenStore), tok.ID, nil)
	key, row := uniqueName("order"), uniqueName("row")
	version, consumed, err := tc.CommitTx(ctx, store.TxStep{Key: key, Token: tok.ID, Fused: true}, activity(h, s, row, []byte("v"), store.Entity{Key: key, State: []byte("dup")}, nil, nil))
	if err != nil || consumed {
		t.Errorf("CommitTx of a consumed token = %d, %v, %v; want consumed false, nil", version, consumed, err)
	}
	requireRow(ctx, t, h, s, row, nil)
	requireEntity(ctx, t, s, store.Entity{Key: key})
}

// testConcurrentCommitTx: of concurrent CommitTx calls for one entity at
// one version, exactly one commits, and only its activity's write stays.
func testConcurrentCommitTx[Tx any](t *testing.T, h TxHarness[Tx]) {
	ctx := testContext(t)
	s, tc, _ := txStores(t, h)
	key := uniqueName("order")
	base := commit(ctx, t, s, store.Entity{Key: key, State: []byte("s1")})
	const racers = 8
	rows := make([]string, racers)
	tokens := make([]baton.Token, racers)
	for i := range racers {
		rows[i], tokens[i] = uniqueName("row"), txToken(ctx, t, h, s)
	}
	won := make([]bool, racers)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range racers {
		wg.Go(func() {
			<-start
			next := store.Entity{Key: key, Version: base.Version, State: fmt.Appendf(nil, "racer %d", i)}
			write := activity(h, s, rows[i], []byte("written"), next, nil, nil)
			_, consumed, err := tc.CommitTx(ctx, store.TxStep{Key: key, Version: base.Version, Token: tokens[i].ID, Fused: h.Fused},
				func(ctx context.Context, tx Tx) (store.Entity, []baton.Token, error) {
					time.Sleep(time.Millisecond) // an activity takes time: the others catch up
					return write(ctx, tx)
				})
			switch {
			case err == nil && consumed:
				won[i] = true
			case errors.Is(err, store.ErrConflict), errors.Is(err, store.ErrNotApplied):
			default:
				t.Errorf("racer %d: CommitTx = %v, %v", i, consumed, err)
			}
		})
	}
	close(start)
	wg.Wait()
	winners := 0
	for i := range racers {
		if won[i] {
			winners++
			requireRow(ctx, t, h, s, rows[i], []byte("written"))
			requireEntity(ctx, t, s, store.Entity{Key: key, Version: base.Version + 1, State: fmt.Appendf(nil, "racer %d", i)})
		} else {
			requireRow(ctx, t, h, s, rows[i], nil)
		}
	}
	if winners != 1 {
		t.Errorf("%d of %d concurrent CommitTx calls at one version committed, want 1", winners, racers)
	}
}

func newStart(destination string) store.Start {
	return store.Start{ID: baton.NewTokenID(), Destination: destination, Type: uniqueName("type"),
		Payload: randomBytes(24), Trace: baton.TraceContext{Parent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		CreatedAt: timestamp(-time.Minute)}
}

func startDiff(got, want store.Start) string {
	switch {
	case got.ID != want.ID || got.Version != want.Version || got.Root != want.Root || got.Claimed != want.Claimed:
		return fmt.Sprintf("start %s v%d root %s claimed %v, want %s v%d root %s claimed %v", got.ID, got.Version, got.Root, got.Claimed, want.ID, want.Version, want.Root, want.Claimed)
	case got.Destination != want.Destination || got.Type != want.Type || string(got.Payload) != string(want.Payload) || got.Trace != want.Trace:
		return fmt.Sprintf("start %s signal %q/%q/%x/%+v, want %q/%q/%x/%+v", got.ID, got.Destination, got.Type, got.Payload, got.Trace, want.Destination, want.Type, want.Payload, want.Trace)
	case !sameTime(got.CreatedAt, want.CreatedAt):
		return fmt.Sprintf("start %s created %s, want %s", got.ID, got.CreatedAt, want.CreatedAt)
	}
	return ""
}

func requireStart(ctx context.Context, t *testing.T, s store.Starts, want store.Start) {
	t.Helper()
	got, err := s.LoadStart(ctx, want.ID)
	if err != nil {
		t.Errorf("LoadStart(%s) = %v", want.ID, err)
		return
	}
	if d := startDiff(got, want); d != "" {
		t.Errorf("LoadStart: %s", d)
	}
}

func requireNoStart(ctx context.Context, t *testing.T, s store.Starts, id baton.TokenID) {
	t.Helper()
	if got, err := s.LoadStart(ctx, id); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("LoadStart(%s) = %+v, %v; want ErrNotFound", id, got, err)
	}
}

// recordStart records a start in a caller's transaction with a row of the
// caller's own, and commits or rolls back.
func recordStart[Tx any](ctx context.Context, t *testing.T, h TxHarness[Tx], s store.EntityStore, st store.Starter[Tx], commit bool) (store.Start, *baton.Token, string) {
	t.Helper()
	tx, commitTx, rollback := h.Begin(t, s)
	row := uniqueName("order-row")
	if err := h.Put(ctx, s, tx, row, []byte("ordered")); err != nil {
		t.Fatalf("Put in the caller's transaction: %v", err)
	}
	start := newStart("shop")
	var root *baton.Token
	if h.Fused {
		tok := start.RootToken(timestamp(0), time.Time{})
		root = &tok
	}
	recorded, err := st.RecordStart(ctx, tx, start, root)
	if err != nil {
		rollback()
		t.Fatalf("RecordStart = %v", err)
	}
	if commit {
		if err := commitTx(); err != nil {
			t.Fatalf("commit of the caller's transaction: %v", err)
		}
	} else {
		rollback()
	}
	return recorded, root, row
}

// testRecordStart: a start recorded in the caller's transaction is there
// after its commit, with the caller's writes (and on the fast path its
// root token), and not at all after a rollback.
func testRecordStart[Tx any](t *testing.T, h TxHarness[Tx]) {
	ctx := testContext(t)
	s, _, st := txStores(t, h)
	recorded, root, row := recordStart(ctx, t, h, s, st, true)
	want := recorded
	if want.Version != 1 || want.ID.IsZero() {
		t.Errorf("RecordStart returned version %d, id %s; want version 1 and an id", want.Version, want.ID)
	}
	if h.Fused {
		if root.ID.IsZero() || !recorded.Claimed || recorded.Root != root.ID {
			t.Errorf("RecordStart on the fast path: root %s, start root %s claimed %v; want the new root, claimed", root.ID, recorded.Root, recorded.Claimed)
		}
		requireLive(ctx, t, s.(store.TokenStore), *root)
	} else if !recorded.Root.IsZero() || recorded.Claimed {
		t.Errorf("RecordStart without tokens: root %s claimed %v; want none", recorded.Root, recorded.Claimed)
	}
	requireStart(ctx, t, st, want)
	requireRow(ctx, t, h, s, row, []byte("ordered"))

	lost, lostRoot, lostRow := recordStart(ctx, t, h, s, st, false)
	requireNoStart(ctx, t, st, lost.ID)
	requireRow(ctx, t, h, s, lostRow, nil)
	if h.Fused {
		requireAbsent(ctx, t, s.(store.TokenStore), lostRoot.ID)
	}
}

// testUpdateStart: updates are compare-and-sets on the version; a deleted
// start is gone, and deleting it again is fine.
func testUpdateStart[Tx any](t *testing.T, h TxHarness[Tx]) {
	ctx := testContext(t)
	s, _, st := txStores(t, h)
	start, _, _ := recordStart(ctx, t, h, s, st, true)
	next := start
	next.Root, next.Claimed = baton.NewTokenID(), true
	updated, err := st.UpdateStart(ctx, next)
	if err != nil || updated.Version != start.Version+1 {
		t.Fatalf("UpdateStart = v%d, %v; want version %d", updated.Version, err, start.Version+1)
	}
	requireStart(ctx, t, st, updated)
	if _, err := st.UpdateStart(ctx, next); !errors.Is(err, store.ErrConflict) {
		t.Errorf("UpdateStart at a stale version = %v, want ErrConflict", err)
	}
	requireStart(ctx, t, st, updated)
	if err := st.DeleteStart(ctx, start.ID); err != nil {
		t.Fatalf("DeleteStart = %v", err)
	}
	requireNoStart(ctx, t, st, start.ID)
	if err := st.DeleteStart(ctx, start.ID); err != nil {
		t.Errorf("DeleteStart of a deleted start = %v, want nil", err)
	}
	if _, err := st.UpdateStart(ctx, updated); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("UpdateStart of a deleted start = %v, want ErrNotFound", err)
	}
}

// testPendingStarts: the sweeper's listing returns starts created before
// the cutoff, oldest first, at most limit.
func testPendingStarts[Tx any](t *testing.T, h TxHarness[Tx]) {
	ctx := testContext(t)
	s, _, st := txStores(t, h)
	var ids []baton.TokenID
	for i := range 3 {
		tx, commitTx, rollback := h.Begin(t, s)
		start := newStart("shop")
		start.CreatedAt = timestamp(-time.Duration(10-i) * time.Hour)
		var root *baton.Token
		if h.Fused {
			tok := start.RootToken(start.CreatedAt, time.Time{})
			root = &tok
		}
		if _, err := st.RecordStart(ctx, tx, start, root); err != nil {
			rollback()
			t.Fatalf("RecordStart = %v", err)
		}
		if err := commitTx(); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, start.ID)
	}
	got, err := st.PendingStarts(ctx, timestamp(-8*time.Hour-30*time.Minute), 10)
	if err != nil || len(got) != 2 || got[0].ID != ids[0] || got[1].ID != ids[1] {
		t.Errorf("PendingStarts before the third = %d starts, %v; want the first two, oldest first", len(got), err)
	}
	got, err = st.PendingStarts(ctx, timestamp(time.Hour), 1)
	if err != nil || len(got) != 1 || got[0].ID != ids[0] {
		t.Errorf("PendingStarts with limit 1 = %d starts, %v; want the oldest", len(got), err)
	}
}
