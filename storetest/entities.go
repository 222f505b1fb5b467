package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
)

// EntityHarness tells RunEntityStore how to open the store under test.
type EntityHarness struct {
	// New returns an empty store that no other call of New shares data
	// with, because subtests run in parallel. It registers the store's
	// cleanup with t.Cleanup.
	New func(t *testing.T) store.EntityStore
	// Reopen, if set, closes s and opens the store again over the same
	// data, for the durability checks. Leave it nil for a store that keeps
	// nothing across a restart; those checks are then skipped.
	Reopen func(t *testing.T, s store.EntityStore) store.EntityStore
}

// RunEntityStore checks that the stores h opens implement
// store.EntityStore as documented. Each check is a parallel subtest with
// its own store.
func RunEntityStore(t *testing.T, h EntityHarness) {
	t.Helper()
	if h.New == nil {
		t.Fatal("storetest: EntityHarness.New is nil")
	}
	checks := []struct {
		name string
		run  func(*testing.T, EntityHarness)
	}{
		{"LoadMissing", testLoadMissing},
		{"CommitNew", testCommitNew},
		{"CommitRoundTrip", testCommitRoundTrip},
		{"CommitStaleVersion", testCommitStaleVersion},
		{"CreateTwice", testCreateTwice},
		{"ConcurrentCreate", testConcurrentCreate},
		{"ConcurrentIncrements", testConcurrentIncrements},
		{"KeysAreOpaque", testKeysAreOpaque},
		{"InvalidKey", testInvalidKey},
		{"InvalidOutbox", testInvalidOutbox},
		{"Stale", testStale},
		{"StaleLimit", testStaleLimit},
		{"CancelledContext", testEntityCancelledContext},
		{"Durability", testEntityDurability},
		{"LoadWithToken", testLoadWithToken},
		{"CommitBatch", testCommitBatch},
		{"LoadBatch", testLoadBatch},
		{"LoadWithTokens", testLoadWithTokens},
		{"CommitTransitions", testCommitTransitions},
		{"ChainedTransitions", testChainedTransitions},
		{"ConcurrentBatches", testConcurrentBatches},
	}
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.run(t, h)
		})
	}
}

func newSignal(destination string) baton.Signal {
	return baton.Signal{
		ID:           baton.NewTokenID(),
		Conversation: baton.NewTokenID(),
		Causation:    baton.NewTokenID(),
		Destination:  destination,
		Type:         uniqueName("type"),
		// Payloads and states are opaque bytes, not text.
		Payload: append([]byte{0, 0xff, '"', '\\', '\n'}, randomBytes(64)...),
		Trace: baton.TraceContext{
			Parent: fmt.Sprintf("00-%x-%x-01", randomBytes(16), randomBytes(8)),
			State:  "vendor=" + uniqueName("state"),
		},
	}
}

// newEntry returns an outbox entry that records its incoming signal's
// identity, as the engine writes them.
func newEntry(createdAt time.Time, signals int) store.OutboxEntry {
	var emitted []baton.Signal
	for range signals {
		emitted = append(emitted, newSignal(uniqueName("billing")))
	}
	return store.EntryFor(newSignal(uniqueName("orders")), emitted, append([]byte{0x00, 0xfe}, randomBytes(16)...), createdAt)
}

// deepCopy copies e so that changing the copy's slices leaves e alone.
func deepCopy(e store.Entity) store.Entity {
	e.State = slices.Clone(e.State)
	e.Outbox = slices.Clone(e.Outbox)
	for i := range e.Outbox {
		e.Outbox[i].Reply = slices.Clone(e.Outbox[i].Reply)
		e.Outbox[i].Signals = slices.Clone(e.Outbox[i].Signals)
		for j := range e.Outbox[i].Signals {
			e.Outbox[i].Signals[j].Payload = slices.Clone(e.Outbox[i].Signals[j].Payload)
		}
	}
	return e
}

func signalDiff(got, want baton.Signal) string {
	var diffs []string
	if got.ID != want.ID || got.Conversation != want.Conversation || got.Causation != want.Causation {
		diffs = append(diffs, fmt.Sprintf("ids %s/%s/%s, want %s/%s/%s", got.ID, got.Conversation, got.Causation, want.ID, want.Conversation, want.Causation))
	}
	if got.Destination != want.Destination || got.Type != want.Type {
		diffs = append(diffs, fmt.Sprintf("destination/type %q/%q, want %q/%q", got.Destination, got.Type, want.Destination, want.Type))
	}
	if !bytes.Equal(got.Payload, want.Payload) {
		diffs = append(diffs, fmt.Sprintf("payload %x, want %x", got.Payload, want.Payload))
	}
	if got.Trace != want.Trace {
		diffs = append(diffs, fmt.Sprintf("trace %+v, want %+v", got.Trace, want.Trace))
	}
	return strings.Join(diffs, "; ")
}

// entityDiff describes how got differs from want, or returns "". Empty and
// nil byte slices are equal; times compare with time.Equal.
func entityDiff(got, want store.Entity) string {
	var diffs []string
	if got.Key != want.Key {
		diffs = append(diffs, fmt.Sprintf("Key %q, want %q", got.Key, want.Key))
	}
	if got.Version != want.Version {
		diffs = append(diffs, fmt.Sprintf("Version %d, want %d", got.Version, want.Version))
	}
	if !bytes.Equal(got.State, want.State) {
		diffs = append(diffs, fmt.Sprintf("State %q, want %q", got.State, want.State))
	}
	if len(got.Outbox) != len(want.Outbox) {
		diffs = append(diffs, fmt.Sprintf("%d outbox entries, want %d", len(got.Outbox), len(want.Outbox)))
	} else {
		for i, w := range want.Outbox {
			g := got.Outbox[i]
			if g.Token != w.Token {
				diffs = append(diffs, fmt.Sprintf("outbox[%d].Token %s, want %s (entries keep their order)", i, g.Token, w.Token))
				continue
			}
			if g.Conversation != w.Conversation || g.Causation != w.Causation || g.Type != w.Type || g.Digest != w.Digest {
				diffs = append(diffs, fmt.Sprintf("outbox[%d] records signal %s/%s/%q/%s, want %s/%s/%q/%s", i,
					g.Conversation, g.Causation, g.Type, g.Digest, w.Conversation, w.Causation, w.Type, w.Digest))
			}
			if !sameTime(g.CreatedAt, w.CreatedAt) {
				diffs = append(diffs, fmt.Sprintf("outbox[%d].CreatedAt %s, want %s", i, g.CreatedAt.Format(time.RFC3339Nano), w.CreatedAt.Format(time.RFC3339Nano)))
			}
			if !bytes.Equal(g.Reply, w.Reply) {
				diffs = append(diffs, fmt.Sprintf("outbox[%d].Reply %x, want %x", i, g.Reply, w.Reply))
			}
			if len(g.Signals) != len(w.Signals) {
				diffs = append(diffs, fmt.Sprintf("outbox[%d] has %d signals, want %d", i, len(g.Signals), len(w.Signals)))
				continue
			}
			for j := range w.Signals {
				if d := signalDiff(g.Signals[j], w.Signals[j]); d != "" {
					diffs = append(diffs, fmt.Sprintf("outbox[%d].Signals[%d]: %s", i, j, d))
				}
			}
		}
	}
	return strings.Join(diffs, "; ")
}

func requireEntity(ctx context.Context, t *testing.T, s store.EntityStore, want store.Entity) {
	t.Helper()
	got, err := s.Load(ctx, want.Key)
	if err != nil {
		t.Errorf("Load(%q) = %v", want.Key, err)
		return
	}
	if d := entityDiff(got, want); d != "" {
		t.Errorf("Load(%q) returned a different entity: %s", want.Key, d)
	}
}

// commit commits e, which must succeed, and returns it as stored.
func commit(ctx context.Context, t *testing.T, s store.EntityStore, e store.Entity) store.Entity {
	t.Helper()
	version, err := s.Commit(ctx, e)
	if err != nil {
		t.Fatalf("Commit(%q at version %d) = %v", e.Key, e.Version, err)
	}
	if version != e.Version+1 {
		t.Fatalf("Commit(%q at version %d) returned version %d, want %d", e.Key, e.Version, version, e.Version+1)
	}
	e.Version = version
	return e
}

func testLoadMissing(t *testing.T, h EntityHarness) {
	ctx, s := testContext(t), h.New(t)
	key := uniqueName("order")
	requireEntity(ctx, t, s, store.Entity{Key: key})
}

func testCommitNew(t *testing.T, h EntityHarness) {
	ctx, s := testContext(t), h.New(t)
	e := store.Entity{Key: uniqueName("order"), State: []byte("new")}
	version, err := s.Commit(ctx, e)
	if err != nil || version != 1 {
		t.Fatalf("Commit of a new entity = %d, %v; want 1, nil", version, err)
	}
	e.Version = 1
	requireEntity(ctx, t, s, e)
}

func testCommitRoundTrip(t *testing.T, h EntityHarness) {
	ctx, s := testContext(t), h.New(t)
	key := uniqueName("order")
	first := newEntry(timestamp(-time.Minute), 2)
	noSignals := newEntry(timestamp(-time.Second), 0)
	noSignals.Reply = nil
	state := append([]byte{0, 1, 0xff, 0xfe, '{'}, randomBytes(100)...)

	committed := store.Entity{Key: key, State: state, Outbox: []store.OutboxEntry{first, noSignals}}
	want := deepCopy(committed)
	want.Version = commit(ctx, t, s, committed).Version
	requireEntity(ctx, t, s, want)

	// The store must not share memory with its callers: changing what was
	// committed, or what was loaded, changes nothing stored.
	committed.State[0] = 'X'
	committed.Outbox[0].Reply[0] = 'X'
	committed.Outbox[0].Signals[0].Payload[0] = 'X'
	committed.Outbox[0].Signals[1].Type = "changed"
	if got, err := s.Load(ctx, key); err == nil {
		if d := entityDiff(got, want); d != "" {
			t.Errorf("after the caller changed the slices of the entity it committed, the stored entity changed too (the store shares memory with its caller): %s", d)
		}
	}
	loaded, err := s.Load(ctx, key)
	if err != nil {
		t.Fatalf("Load(%q) = %v", key, err)
	}
	loaded.State[1] = 'Y'
	loaded.Outbox[0].Reply[1] = 'Y'
	loaded.Outbox[0].Signals[0].Payload[1] = 'Y'
	loaded.Outbox[0].Signals[1].Type = "changed"
	if got, err := s.Load(ctx, key); err == nil {
		if d := entityDiff(got, want); d != "" {
			t.Errorf("after the caller changed the slices of a loaded entity, the stored entity changed too (the store shares memory with its caller): %s", d)
		}
	}

	// A later version replaces state and outbox, keeping the given order.
	third := newEntry(timestamp(0), 3)
	e := commit(ctx, t, s, store.Entity{Key: key, Version: want.Version, State: []byte("second"), Outbox: []store.OutboxEntry{want.Outbox[1], third}})
	requireEntity(ctx, t, s, e)

	// Removing every entry (step 7 of the protocol) empties the outbox.
	e = commit(ctx, t, s, store.Entity{Key: key, Version: e.Version, State: []byte("third")})
	if e.Version != 3 {
		t.Fatalf("third commit gave version %d, want 3", e.Version)
	}
	requireEntity(ctx, t, s, e)

	// Empty state is a state too.
	e = commit(ctx, t, s, store.Entity{Key: key, Version: e.Version})
	requireEntity(ctx, t, s, e)
}

func testCommitStaleVersion(t *testing.T, h EntityHarness) {
	ctx, s := testContext(t), h.New(t)
	key := uniqueName("order")
	e := commit(ctx, t, s, store.Entity{Key: key, State: []byte("one")})
	e = commit(ctx, t, s, store.Entity{Key: key, Version: e.Version, State: []byte("two"), Outbox: []store.OutboxEntry{newEntry(timestamp(0), 1)}})

	for _, version := range []uint64{0, 1, 3, 99} {
		version, err := s.Commit(ctx, store.Entity{Key: key, Version: version, State: []byte("stale")})
		if !errors.Is(err, store.ErrConflict) {
			t.Errorf("Commit at a wrong version = %d, %v; want an error matching store.ErrConflict", version, err)
		}
	}
	requireEntity(ctx, t, s, e)

	// A version that was never committed conflicts for a missing entity too.
	other := uniqueName("order")
	if _, err := s.Commit(ctx, store.Entity{Key: other, Version: 4}); !errors.Is(err, store.ErrConflict) {
		t.Errorf("Commit of a missing entity at version 4 = %v, want an error matching store.ErrConflict", err)
	}
	requireEntity(ctx, t, s, store.Entity{Key: other})
}

func testCreateTwice(t *testing.T, h EntityHarness) {
	ctx, s := testContext(t), h.New(t)
	key := uniqueName("order")
	e := commit(ctx, t, s, store.Entity{Key: key, State: []byte("first")})
	if _, err := s.Commit(ctx, store.Entity{Key: key, State: []byte("second")}); !errors.Is(err, store.ErrConflict) {
		t.Errorf("second creation of one entity = %v, want an error matching store.ErrConflict", err)
	}
	requireEntity(ctx, t, s, e)
}

func testConcurrentCreate(t *testing.T, h EntityHarness) {
	ctx, s := testContext(t), h.New(t)
	key := uniqueName("order")
	const creators = 16
	var created atomic.Int32
	winner := make(chan string, creators)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range creators {
		wg.Go(func() {
			<-start
			state := "creator-" + strconv.Itoa(i)
			for attempt := 1; ; attempt++ {
				_, err := s.Commit(ctx, store.Entity{Key: key, State: []byte(state)})
				switch {
				case err == nil:
					created.Add(1)
					winner <- state
					return
				case errors.Is(err, store.ErrConflict):
					return
				case errors.Is(err, store.ErrNotApplied) && attempt < retryLimit && ctx.Err() == nil:
					continue
				default:
					t.Errorf("creator %d: Commit = %v", i, err)
					return
				}
			}
		})
	}
	close(start)
	wg.Wait()
	if n := created.Load(); n != 1 {
		t.Fatalf("%d of %d concurrent creations of one entity succeeded, want exactly 1", n, creators)
	}
	requireEntity(ctx, t, s, store.Entity{Key: key, Version: 1, State: []byte(<-winner)})
}

func testConcurrentIncrements(t *testing.T, h EntityHarness) {
	ctx, s := testContext(t), h.New(t)
	key := uniqueName("counter")
	const workers, increments = 16, 20
	var commits, conflicts atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for range increments {
				for attempt := 1; ; attempt++ {
					if attempt > 100*workers*increments || ctx.Err() != nil {
						t.Errorf("worker %d gave up after %d attempts", w, attempt-1)
						return
					}
					e, err := s.Load(ctx, key)
					if err != nil {
						t.Errorf("worker %d: Load = %v", w, err)
						return
					}
					count := 0
					if len(e.State) > 0 {
						if count, err = strconv.Atoi(string(e.State)); err != nil {
							t.Errorf("worker %d: state %q is not the counter: %v", w, e.State, err)
							return
						}
					}
					e.State = []byte(strconv.Itoa(count + 1))
					version, err := s.Commit(ctx, e)
					if err == nil {
						if version != e.Version+1 {
							t.Errorf("worker %d: Commit at version %d returned %d", w, e.Version, version)
						}
						commits.Add(1)
						break
					}
					if !errors.Is(err, store.ErrConflict) && !errors.Is(err, store.ErrNotApplied) {
						t.Errorf("worker %d: Commit = %v", w, err)
						return
					}
					conflicts.Add(1)
				}
			}
		})
	}
	wg.Wait()
	t.Logf("%d commits, %d conflicts retried", commits.Load(), conflicts.Load())
	if t.Failed() {
		return
	}
	e, err := s.Load(ctx, key)
	if err != nil {
		t.Fatalf("Load = %v", err)
	}
	if got, want := string(e.State), strconv.Itoa(workers*increments); got != want {
		t.Errorf("counter is %s after %d concurrent increments, want %s (a lost update)", got, workers*increments, want)
	}
	if e.Version != uint64(commits.Load()) {
		t.Errorf("version is %d after %d successful commits", e.Version, commits.Load())
	}
}

func testKeysAreOpaque(t *testing.T, h EntityHarness) {
	ctx, s := testContext(t), h.New(t)
	base := uniqueName("order")
	// Keys are any 1 to MaxEntityKeyBytes bytes; none is a prefix, pattern
	// or case variant of another.
	keys := []string{
		base, base + "/1", base + ".1", base + ":1", base + " 1", base + "*", base + ">",
		base + "%", base[:len(base)-1] + "_", strings.ToUpper(base), base + "-ключ-键",
		base + strings.Repeat("k", store.MaxEntityKeyBytes-len(base)),
	}
	want := make([]store.Entity, len(keys))
	for i, key := range keys {
		want[i] = commit(ctx, t, s, store.Entity{Key: key, State: []byte("state of " + strconv.Itoa(i))})
	}
	want[0] = commit(ctx, t, s, store.Entity{Key: keys[0], Version: 1, State: []byte("changed")})
	for _, e := range want {
		requireEntity(ctx, t, s, e)
	}
}

func testInvalidKey(t *testing.T, h EntityHarness) {
	ctx, s := testContext(t), h.New(t)
	long := strings.Repeat("k", store.MaxEntityKeyBytes+1)
	for _, key := range []string{"", long} {
		if _, err := s.Commit(ctx, store.Entity{Key: key, State: []byte("x")}); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("Commit with a key of %d bytes = %v, want an error matching store.ErrInvalid", len(key), err)
		}
	}
	requireEntity(ctx, t, s, store.Entity{Key: long[:store.MaxEntityKeyBytes]})
}

func testInvalidOutbox(t *testing.T, h EntityHarness) {
	ctx, s := testContext(t), h.New(t)
	key := uniqueName("order")
	e := commit(ctx, t, s, store.Entity{Key: key, State: []byte("kept")})

	repeated := newEntry(timestamp(0), 1)
	again := newEntry(timestamp(0), 1)
	again.Token = repeated.Token
	withoutToken := newEntry(timestamp(0), 1)
	withoutToken.Token = baton.TokenID{}
	for name, outbox := range map[string][]store.OutboxEntry{
		"a repeated token":       {repeated, again},
		"an entry without token": {repeated, withoutToken},
	} {
		_, err := s.Commit(ctx, store.Entity{Key: key, Version: e.Version, State: []byte("bad"), Outbox: outbox})
		if !errors.Is(err, store.ErrInvalid) {
			t.Errorf("Commit of an outbox with %s = %v, want an error matching store.ErrInvalid", name, err)
		}
	}
	requireEntity(ctx, t, s, e)
}

func testStale(t *testing.T, h EntityHarness) {
	ctx, s := testContext(t), h.New(t)
	before := timestamp(0)
	entity := func(name string, created ...time.Time) string {
		e := store.Entity{Key: uniqueName(name)}
		for _, at := range created {
			e.Outbox = append(e.Outbox, newEntry(at, 1))
		}
		commit(ctx, t, s, e)
		return e.Key
	}
	old := entity("old", before.Add(-time.Hour))
	justOld := entity("just-old", before.Add(-time.Microsecond))
	mixed := entity("mixed", before.Add(time.Hour), before.Add(-time.Minute))
	entity("new", before.Add(time.Minute))
	entity("at-cutoff", before) // not before the cutoff
	entity("empty")
	// An entity whose stale entry was removed is no longer stale.
	cleared := commit(ctx, t, s, store.Entity{Key: uniqueName("cleared"), Outbox: []store.OutboxEntry{newEntry(before.Add(-time.Hour), 1)}})
	commit(ctx, t, s, store.Entity{Key: cleared.Key, Version: cleared.Version})

	got, err := s.Stale(ctx, before, 100)
	if err != nil {
		t.Fatalf("Stale = %v", err)
	}
	want := []string{old, justOld, mixed}
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("Stale(before, 100) = %q, want %q (in any order)", got, want)
	}

	got, err = s.Stale(ctx, before.Add(-2*time.Hour), 100)
	if err != nil || len(got) != 0 {
		t.Errorf("Stale before every entry = %q, %v; want none, nil", got, err)
	}
}

func testStaleLimit(t *testing.T, h EntityHarness) {
	ctx, s := testContext(t), h.New(t)
	before := timestamp(0)
	stale := map[string]bool{}
	for i := range 5 {
		e := store.Entity{Key: uniqueName("stale"), Outbox: []store.OutboxEntry{newEntry(before.Add(-time.Duration(i+1)*time.Minute), 0)}}
		commit(ctx, t, s, e)
		stale[e.Key] = true
	}
	commit(ctx, t, s, store.Entity{Key: uniqueName("fresh"), Outbox: []store.OutboxEntry{newEntry(before.Add(time.Minute), 0)}})

	for _, limit := range []int{1, 2, 5, 10} {
		got, err := s.Stale(ctx, before, limit)
		if err != nil {
			t.Fatalf("Stale(before, %d) = %v", limit, err)
		}
		if want := min(limit, len(stale)); len(got) != want {
			t.Errorf("Stale(before, %d) returned %d keys, want %d", limit, len(got), want)
		}
		seen := map[string]bool{}
		for _, key := range got {
			if !stale[key] || seen[key] {
				t.Errorf("Stale(before, %d) returned %q, which is not stale or is repeated", limit, key)
			}
			seen[key] = true
		}
	}
}

func testEntityCancelledContext(t *testing.T, h EntityHarness) {
	live, s := testContext(t), h.New(t)
	key := uniqueName("order")
	e := commit(live, t, s, store.Entity{Key: key, Outbox: []store.OutboxEntry{newEntry(timestamp(-time.Hour), 0)}})

	ctx, cancel := context.WithCancel(live)
	cancel()
	if _, err := s.Load(ctx, key); err == nil {
		t.Error("Load with a cancelled context returned no error")
	}
	if _, err := s.Commit(ctx, store.Entity{Key: key, Version: e.Version}); err == nil {
		t.Error("Commit with a cancelled context returned no error")
	}
	if _, err := s.Stale(ctx, time.Now(), 10); err == nil {
		t.Error("Stale with a cancelled context returned no error")
	}
}

func testEntityDurability(t *testing.T, h EntityHarness) {
	if h.Reopen == nil {
		t.Skip("EntityHarness.Reopen is nil: the store is not durable, durability not checked")
	}
	ctx, s := testContext(t), h.New(t)
	key := uniqueName("order")
	e := commit(ctx, t, s, store.Entity{Key: key, State: []byte("one")})
	e = commit(ctx, t, s, store.Entity{Key: key, Version: e.Version, State: []byte("two"), Outbox: []store.OutboxEntry{newEntry(timestamp(-time.Hour), 2)}})

	s = h.Reopen(t, s)
	requireEntity(ctx, t, s, e)
	if _, err := s.Commit(ctx, store.Entity{Key: key, Version: 1}); !errors.Is(err, store.ErrConflict) {
		t.Errorf("Commit at a stale version after the reopen = %v, want an error matching store.ErrConflict", err)
	}
	got, err := s.Stale(ctx, timestamp(0), 10)
	if err != nil || !slices.Equal(got, []string{key}) {
		t.Errorf("Stale after the reopen = %q, %v; want [%q]", got, err, key)
	}
	commit(ctx, t, s, store.Entity{Key: key, Version: e.Version, State: []byte("three")})
}
