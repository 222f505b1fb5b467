package engine_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/backend/memory"
	"github.com/batonhq/baton/engine"
	"github.com/batonhq/baton/internal/testlog"
	"github.com/batonhq/baton/store"
	"github.com/batonhq/baton/tokenservice"
	"github.com/batonhq/baton/tokenservice/client"
	memtransport "github.com/batonhq/baton/transport/memory"
)

// errRefused is what a store that is down answers: nothing applied.
var errRefused = fmt.Errorf("%w: dial tcp 127.0.0.1:5432: connect: connection refused", store.ErrNotApplied)

// unavailableTokens fails every read while down is set, as a token store
// whose server is unreachable does: not applied.
type unavailableTokens struct {
	store.TokenStore
	down atomic.Bool
}

func (u *unavailableTokens) Get(ctx context.Context, id baton.TokenID) (baton.Token, error) {
	if u.down.Load() {
		return baton.Token{}, errRefused
	}
	return u.TokenStore.Get(ctx, id)
}

// A token store outage longer than MaxAttempts' redeliveries parks
// nothing: the engine stops receiving while its stores do not answer (so
// deliveries do not use up their attempts on an outage), says so once,
// and resumes by itself when they answer again, when the backlog drains.
// Parking is for signals that cannot be processed, not for an outage,
// which would leave every signal in flight for an operator to replay.
func TestStoreOutageParksNothingAndDrainsAfterwards(t *testing.T) {
	t.Parallel()
	tokens := &unavailableTokens{TokenStore: memory.NewTokenStore()}
	logs := outageWithoutParking(t, tokens, &tokens.down, 0)
	if n := logs.Count("stores answer again"); n != 1 {
		t.Errorf("%d lines say that the stores answer again, want 1", n)
	}
	if n := logs.Count("sweep failed"); n != 0 {
		t.Errorf("%d lines say that a sweep failed while receiving was paused, want none", n)
	}
}

// outageWithoutParking runs an engine over tokens, publishes 20 signals
// while down is set, clears it a second later, and checks that every
// signal was applied, none parked, and the outage logged once. It returns
// the engine's log.
func outageWithoutParking(t *testing.T, tokens store.TokenStore, down *atomic.Bool, callTimeout time.Duration) *testlog.Recorder {
	t.Helper()
	broker := memtransport.New(memtransport.Config{})
	logs := &testlog.Recorder{}
	e, err := engine.New(engine.Config{Destination: "shop", Tokens: tokens, Entities: memory.NewEntityStore(),
		Dispatch: broker, Source: broker, MaxAttempts: 3, RedeliveryDelay: time.Millisecond, CallTimeout: callTimeout,
		SweepInterval: 10 * time.Millisecond, Logger: slog.New(logs)})
	must(t, err)
	must(t, engine.Register(e, engine.Activity[counter]{Type: "order", Entity: byConversation,
		Handle: func(context.Context, baton.Signal, *counter) (engine.Effects, error) { return engine.Effects{}, nil }}))
	ctx, stop := running(t, e)
	defer stop()

	const signals = 20
	down.Store(true)
	for range signals {
		sig, err := e.IssueRoot(ctx, baton.Emit{Destination: "shop", Type: "order"}, 0)
		must(t, err)
		must(t, broker.Publish(ctx, sig))
	}
	time.Sleep(time.Second) // hundreds of redelivery delays
	down.Store(false)
	deadline := time.Now().Add(20 * time.Second)
	for e.Stats().Applied < signals && len(broker.Parked()) == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if parked := broker.Parked(); len(parked) != 0 {
		t.Fatalf("%d signals parked by an outage of the token store: %s", len(parked), parked[0].Reason)
	}
	if got := e.Stats().Applied; got != signals {
		t.Fatalf("%d of %d signals applied after the store came back", got, signals)
	}
	if n := logs.Count("stores do not answer"); n != 1 {
		t.Errorf("%d lines say that the stores do not answer, want 1", n)
	}
	return logs
}

// unavailableEntities fails Stale and Load while down is set.
type unavailableEntities struct {
	store.EntityStore
	down atomic.Bool
}

func (u *unavailableEntities) Stale(ctx context.Context, before time.Time, limit int) ([]string, error) {
	if u.down.Load() {
		return nil, errRefused
	}
	return u.EntityStore.Stale(ctx, before, limit)
}

func (u *unavailableEntities) Load(ctx context.Context, key string) (store.Entity, error) {
	if u.down.Load() {
		return store.Entity{}, errRefused
	}
	return u.EntityStore.Load(ctx, key)
}

// An engine that only sweeps (no Source, as the edge of a service) logs an
// outage of its stores once, not a failed sweep every SweepInterval.
func TestStoreOutageIsLoggedOnceBySweeper(t *testing.T) {
	t.Parallel()
	entities := &unavailableEntities{EntityStore: memory.NewEntityStore()}
	logs := &testlog.Recorder{}
	e, err := engine.New(engine.Config{Destination: "edge", Tokens: memory.NewTokenStore(), Entities: entities,
		Dispatch: memtransport.New(memtransport.Config{}), SweepInterval: time.Millisecond, Logger: slog.New(logs)})
	must(t, err)
	_, stop := running(t, e)
	entities.down.Store(true)
	time.Sleep(300 * time.Millisecond) // hundreds of sweeps
	entities.down.Store(false)
	time.Sleep(100 * time.Millisecond)
	stop()
	if n := logs.Count("sweep failed") + logs.Count("stores do not answer"); n != 1 {
		t.Errorf("%d lines about the outage, want 1", n)
	}
	if n := logs.Count("stores answer again"); n != 1 {
		t.Errorf("%d lines say that the stores answer again, want 1", n)
	}
}

// hangingTokens answers no read while down is set, as a token store
// behind a cut connection or in the middle of a failover: each read ends
// when its deadline passes, with an unknown outcome.
type hangingTokens struct {
	store.TokenStore
	down atomic.Bool
}

func (h *hangingTokens) Get(ctx context.Context, id baton.TokenID) (baton.Token, error) {
	if h.down.Load() {
		<-ctx.Done()
		return baton.Token{}, fmt.Errorf("read tcp 127.0.0.1:5432: i/o timeout: %w", ctx.Err())
	}
	return h.TokenStore.Get(ctx, id)
}

// A store that does not answer at all (calls time out: their outcome is
// unknown, so the error does not say that the store is down) parks
// nothing either: the failed delivery makes the engine probe its stores,
// and when the probe does not get an answer within CallTimeout it pauses
// receiving as for a store that refuses calls.
func TestHangingStoreParksNothing(t *testing.T) {
	t.Parallel()
	tokens := &hangingTokens{TokenStore: memory.NewTokenStore()}
	outageWithoutParking(t, tokens, &tokens.down, 20*time.Millisecond)
}

// serviceFor serves tokens over HTTP as the token service, with systems
// "shop" (its own destination) and "mallory" (its own, and issuing roots),
// and returns a client for each.
func serviceFor(t *testing.T, tokens store.TokenStore) (shop, mallory *client.Client) {
	t.Helper()
	shopKey, shopHash := tokenservice.NewAPIKey()
	malloryKey, malloryHash := tokenservice.NewAPIKey()
	h, err := tokenservice.New(tokenservice.Config{Tokens: tokens, Systems: []tokenservice.System{
		{Name: "shop", KeySHA256: shopHash, IssueRoots: true},
		{Name: "mallory", KeySHA256: malloryHash, IssueRoots: true}}})
	must(t, err)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	shop, err = client.New(srv.URL, shopKey, client.Options{})
	must(t, err)
	mallory, err = client.New(srv.URL, malloryKey, client.Options{})
	must(t, err)
	t.Cleanup(func() { _ = shop.Close(); _ = mallory.Close() })
	return shop, mallory
}

// A probe of the stores is answered by any answer of the token store:
// over the token service, another system may hold a token with the
// probe's id (ids of children are the caller's, and the probe's is in the
// source), which the service refuses to show this one (403, not your
// token). That refusal is an answer, so the engine neither pauses on it
// nor stays paused for ever while the stores are up.
func TestProbeAnsweredByTokenOfAnotherSystem(t *testing.T) {
	t.Parallel()
	tokens, mallory := serviceFor(t, memory.NewTokenStore())
	ctx := t.Context()
	root, err := mallory.Issue(ctx, baton.Token{Destination: "mallory", Type: "x", Digest: baton.DigestOf(nil)})
	must(t, err)
	child := baton.Token{ID: engine.ProbeToken, Conversation: root.Conversation, Causation: root.ID, Destination: "mallory", Type: "y", Digest: baton.DigestOf(nil)}
	if _, err := mallory.Transition(ctx, root.ID, []baton.Token{child}); err != nil {
		t.Fatal(err)
	}
	broker := memtransport.New(memtransport.Config{})
	logs := &testlog.Recorder{}
	e, err := engine.New(engine.Config{Destination: "shop", Tokens: tokens, Entities: memory.NewEntityStore(),
		Dispatch: broker, Source: broker, MaxAttempts: 5, RedeliveryDelay: time.Millisecond,
		SweepInterval: 10 * time.Millisecond, Logger: slog.New(logs)})
	must(t, err)
	var failed atomic.Bool
	must(t, engine.Register(e, engine.Activity[counter]{Type: "order", Entity: byConversation,
		Handle: func(context.Context, baton.Signal, *counter) (engine.Effects, error) {
			if failed.CompareAndSwap(false, true) {
				return engine.Effects{}, fmt.Errorf("the warehouse is busy")
			}
			return engine.Effects{}, nil
		}}))
	_, stop := running(t, e)
	defer stop()

	const signals = 10
	for range signals {
		sig, err := e.IssueRoot(ctx, baton.Emit{Destination: "shop", Type: "order"}, 0)
		must(t, err)
		must(t, broker.Publish(ctx, sig))
	}
	deadline := time.Now().Add(5 * time.Second)
	for e.Stats().Applied < signals && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got := e.Stats().Applied; got != signals {
		t.Errorf("%d of %d signals applied with the stores up", got, signals)
	}
	if n := logs.Count("stores do not answer"); n != 0 {
		t.Errorf("%d lines say that the stores do not answer, want none", n)
	}
}

// An activity's own failure says nothing of the engine's stores, even
// when it wraps store.ErrNotApplied (an activity that calls a token
// service or another store): it is retried, and receiving is not paused.
func TestActivityErrorPausesNothing(t *testing.T) {
	t.Parallel()
	broker := memtransport.New(memtransport.Config{})
	logs := &testlog.Recorder{}
	e, err := engine.New(engine.Config{Destination: "shop", Tokens: memory.NewTokenStore(), Entities: memory.NewEntityStore(),
		Dispatch: broker, Source: broker, MaxAttempts: 5, RedeliveryDelay: time.Millisecond,
		SweepInterval: 10 * time.Millisecond, Logger: slog.New(logs)})
	must(t, err)
	var failed atomic.Bool
	must(t, engine.Register(e, engine.Activity[counter]{Type: "order", Entity: byConversation,
		Handle: func(context.Context, baton.Signal, *counter) (engine.Effects, error) {
			if failed.CompareAndSwap(false, true) {
				return engine.Effects{}, fmt.Errorf("reserve stock: %w", store.ErrNotApplied)
			}
			return engine.Effects{}, nil
		}}))
	ctx, stop := running(t, e)
	defer stop()
	sig, err := e.IssueRoot(ctx, baton.Emit{Destination: "shop", Type: "order"}, 0)
	must(t, err)
	must(t, broker.Publish(ctx, sig))
	deadline := time.Now().Add(5 * time.Second)
	for e.Stats().Applied < 1 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got := e.Stats().Applied; got != 1 {
		t.Fatalf("%d of 1 signal applied", got)
	}
	if n := logs.Count("stores do not answer"); n != 0 {
		t.Errorf("an activity's failure paused receiving (%d lines say that the stores do not answer)", n)
	}
}

// A delivery cut short by the end of the shutdown timeout fails with its
// stores' "not applied: context canceled": that is the engine stopping,
// not an outage, and logs none.
func TestShutdownIsNoOutage(t *testing.T) {
	t.Parallel()
	broker := memtransport.New(memtransport.Config{})
	logs := &testlog.Recorder{}
	e, err := engine.New(engine.Config{Destination: "shop", Tokens: memory.NewTokenStore(), Entities: memory.NewEntityStore(),
		Dispatch: broker, Source: broker, ShutdownTimeout: 20 * time.Millisecond, Logger: slog.New(logs)})
	must(t, err)
	started := make(chan struct{})
	must(t, engine.Register(e, engine.Activity[counter]{Type: "order", Entity: byConversation,
		Handle: func(ctx context.Context, _ baton.Signal, _ *counter) (engine.Effects, error) {
			close(started)
			<-ctx.Done() // an activity that finishes anyway
			return engine.Effects{}, nil
		}}))
	ctx, stop := running(t, e)
	sig, err := e.IssueRoot(ctx, baton.Emit{Destination: "shop", Type: "order"}, 0)
	must(t, err)
	must(t, broker.Publish(ctx, sig))
	<-started
	stop()
	if n := logs.Count("stores do not answer"); n != 0 {
		t.Errorf("stopping the engine logged an outage of its stores (%d lines)", n)
	}
}

// refusingEntities refuses, applying nothing, the commits of one entity,
// as a store answers a transaction that it rolled back: MySQL one whose
// value does not fit its column (strict sql_mode) or that deadlocked past
// its retries, PostgreSQL a serialization failure.
type refusingEntities struct {
	store.EntityStore
	key string // set before the engine runs
}

func (r *refusingEntities) Commit(ctx context.Context, ent store.Entity) (uint64, error) {
	if ent.Key == r.key {
		return 0, fmt.Errorf("mysql: commit: %w: Error 1406 (22001): Data too long for column 'state' at row 1", store.ErrNotApplied)
	}
	return r.EntityStore.Commit(ctx, ent)
}

// A store that answers one signal's call with "not applied" while it
// answers every other call is not down: the engine pauses receiving only
// when a probe of its stores confirms it, so that a signal that a store
// refuses (an attacker's, crafted so) does not stop the whole engine at
// each of its attempts.
func TestRefusedSignalPausesNothing(t *testing.T) {
	t.Parallel()
	broker := memtransport.New(memtransport.Config{})
	logs := &testlog.Recorder{}
	entities := &refusingEntities{EntityStore: memory.NewEntityStore()}
	e, err := engine.New(engine.Config{Destination: "shop", Tokens: memory.NewTokenStore(), Entities: entities,
		Dispatch: broker, Source: broker, MaxAttempts: 3, RedeliveryDelay: time.Millisecond,
		SweepInterval: 10 * time.Millisecond, Logger: slog.New(logs)})
	must(t, err)
	must(t, engine.Register(e, engine.Activity[counter]{Type: "order", Entity: byConversation,
		Handle: func(context.Context, baton.Signal, *counter) (engine.Effects, error) { return engine.Effects{}, nil }}))
	ctx := t.Context()
	bad, err := e.IssueRoot(ctx, baton.Emit{Destination: "shop", Type: "order"}, 0)
	must(t, err)
	entities.key, _ = byConversation(bad)
	must(t, broker.Publish(ctx, bad))
	_, stop := running(t, e)
	defer stop()

	for deadline := time.Now().Add(5 * time.Second); len(broker.Parked()) == 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	if n := logs.Count("stores do not answer"); n != 0 {
		t.Errorf("a signal that the entity store refused paused receiving (%d lines say that the stores do not answer)", n)
	}
	const signals = 10
	for range signals {
		sig, err := e.IssueRoot(ctx, baton.Emit{Destination: "shop", Type: "order"}, 0)
		must(t, err)
		must(t, broker.Publish(ctx, sig))
	}
	deadline := time.Now().Add(5 * time.Second)
	for e.Stats().Applied < signals && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got := e.Stats().Applied; got != signals {
		t.Errorf("%d of %d signals applied", got, signals)
	}
}
