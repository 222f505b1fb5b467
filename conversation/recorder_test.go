package conversation_test

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/backend/memory"
	"github.com/batonhq/baton/conversation"
	"github.com/batonhq/baton/engine"
	"github.com/batonhq/baton/store"
	memtransport "github.com/batonhq/baton/transport/memory"
)

type nothing struct{}

func TestRecorderDrawsAConversation(t *testing.T) {
	t.Parallel()
	rec := conversation.NewRecorder(0)
	tokens := memory.NewTokenStore()
	broker := memtransport.New(memtransport.Config{})
	newEngine := func(dest string) *engine.Engine {
		e, err := engine.New(engine.Config{Destination: dest, Tokens: tokens, Entities: memory.NewEntityStore(),
			Dispatch: broker, OnEvent: rec.Observe})
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	byConv := func(s baton.Signal) (string, error) { return s.Conversation.String(), nil }
	shop, billing := newEngine("shop"), newEngine("billing")
	if err := engine.Register(shop, engine.Activity[nothing]{Type: "order.place", Entity: byConv,
		Handle: func(context.Context, baton.Signal, *nothing) (engine.Effects, error) {
			return engine.Effects{Emit: []baton.Emit{{Destination: "billing", Type: "charge"}}}, nil
		}}); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	root, err := shop.IssueRoot(ctx, baton.Emit{Destination: "shop", Type: "order.place"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := shop.Process(ctx, root); err != nil {
		t.Fatal(err)
	}
	if _, err := shop.Process(ctx, root); err != nil { // a duplicate
		t.Fatal(err)
	}
	_ = billing

	list := rec.List(10)
	if len(list) != 1 || list[0].Signals != 2 || list[0].InFlight != 1 || list[0].Duplicates != 1 {
		t.Fatalf("list = %+v", list)
	}
	c, ok := rec.Get(root.Conversation)
	if !ok {
		t.Fatal("conversation not recorded")
	}
	var b strings.Builder
	if err := c.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	text := b.String()
	for _, want := range []string{"order.place @shop  done  (1 duplicates dropped)", "└─ charge @billing  in_flight"} {
		if !strings.Contains(text, want) {
			t.Errorf("text graph lacks %q:\n%s", want, text)
		}
	}
}

func TestRecorderKeepsOnlyTheLimit(t *testing.T) {
	t.Parallel()
	rec := conversation.NewRecorder(3)
	for range 10 {
		id := baton.NewTokenID()
		rec.Observe(engine.Event{Kind: engine.EventRootIssued, Signal: baton.Signal{ID: id, Conversation: id, Type: "x", Destination: "d"}})
	}
	if n := len(rec.List(0)); n != 3 {
		t.Fatalf("kept %d conversations, want 3", n)
	}
}

func TestRecordTokensSeesRootsAndTransitions(t *testing.T) {
	t.Parallel()
	rec := conversation.NewRecorder(0)
	tokens := conversation.RecordTokens(memory.NewTokenStore(), rec, nil)
	ctx := t.Context()
	issued, err := tokens.Issue(ctx, baton.Token{Destination: "shop", Type: "order.place", Digest: baton.DigestOf(nil)})
	if err != nil {
		t.Fatal(err)
	}
	root := baton.Signal{ID: issued.ID, Conversation: issued.Conversation, Destination: "shop", Type: "order.place"}
	child := baton.Signal{ID: baton.NewTokenID(), Conversation: root.ID, Causation: root.ID, Destination: "billing", Type: "charge"}
	if _, err := tokens.Transition(ctx, root.ID, []baton.Token{child.Token()}); err != nil {
		t.Fatal(err)
	}
	if _, err := tokens.Transition(ctx, root.ID, nil); err != nil { // already consumed: not recorded
		t.Fatal(err)
	}
	c, ok := rec.Get(root.ID)
	if !ok || len(c.Nodes) != 2 || c.Nodes[0].State != conversation.Done || c.Nodes[1].State != conversation.InFlight {
		t.Fatalf("conversation = %+v", c)
	}
}

// TestRecordTokensInBatches: the recorder keeps the inner store's batch
// calls (a token service over it serves batches in one store call each)
// and reports them as the single calls: an applied transition, and a read
// of a token no longer live as a duplicate.
func TestRecordTokensInBatches(t *testing.T) {
	t.Parallel()
	rec := conversation.NewRecorder(0)
	var calls atomic.Int64
	tokens := conversation.RecordTokens(countedBatches{memory.NewTokenStore(), &calls}, rec, nil)
	batch, ok := tokens.(store.TokenBatcher)
	if !ok {
		t.Fatal("the recorder hides the inner store's batch calls")
	}
	ctx := t.Context()
	root, err := tokens.Issue(ctx, baton.Token{Destination: "shop", Type: "order.place", Digest: baton.DigestOf(nil)})
	if err != nil {
		t.Fatal(err)
	}
	child := baton.Signal{ID: baton.NewTokenID(), Conversation: root.Conversation, Causation: root.ID, Destination: "billing", Type: "charge"}
	consumed, errs, err := batch.TransitionTokens(ctx, []store.TokenTransition{{Consume: root.ID, Create: []baton.Token{child.Token()}}})
	if err != nil || errs[0] != nil || !consumed[0] {
		t.Fatalf("TransitionTokens = %v, %v, %v", consumed, errs, err)
	}
	if _, errs, err := batch.GetTokens(ctx, []baton.TokenID{root.ID, child.ID}); err != nil || !errors.Is(errs[0], store.ErrNotFound) || errs[1] != nil {
		t.Fatalf("GetTokens = %v, %v", errs, err)
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("the inner store's batch calls ran %d times, want 2", n)
	}
	c, ok := rec.Get(root.ID)
	if !ok || len(c.Nodes) != 2 || c.Nodes[0].State != conversation.Done || c.Nodes[0].Duplicates != 1 || c.Nodes[1].State != conversation.InFlight {
		t.Fatalf("conversation = %+v, want the root done with a duplicate and its child in flight", c)
	}
}

// countedBatches counts the batch calls of a memory store.
type countedBatches struct {
	*memory.TokenStore
	calls *atomic.Int64
}

func (c countedBatches) GetTokens(ctx context.Context, ids []baton.TokenID) ([]baton.Token, []error, error) {
	c.calls.Add(1)
	return c.TokenStore.GetTokens(ctx, ids)
}

func (c countedBatches) TransitionTokens(ctx context.Context, ts []store.TokenTransition) ([]bool, []error, error) {
	c.calls.Add(1)
	return c.TokenStore.TransitionTokens(ctx, ts)
}

// TestRecordTokensCountsDuplicates: a participant reads the token of each
// signal it receives; a read of a consumed token is a copy it drops as a
// duplicate, and the token service's recorder counts it on that signal. A
// read of an id the recorder never saw changes nothing.
func TestRecordTokensCountsDuplicates(t *testing.T) {
	t.Parallel()
	rec := conversation.NewRecorder(0)
	tokens := conversation.RecordTokens(memory.NewTokenStore(), rec, nil)
	ctx := t.Context()
	root, err := tokens.Issue(ctx, baton.Token{Destination: "shop", Type: "order.place", Digest: baton.DigestOf(nil)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tokens.Get(ctx, root.ID); err != nil { // the first delivery reads a live token
		t.Fatal(err)
	}
	if _, err := tokens.Transition(ctx, root.ID, nil); err != nil {
		t.Fatal(err)
	}
	for range 2 { // two copies arrive afterwards
		if _, err := tokens.Get(ctx, root.ID); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("Get of a consumed token: %v", err)
		}
	}
	if _, err := tokens.Get(ctx, baton.NewTokenID()); !errors.Is(err, store.ErrNotFound) {
		t.Fatal(err)
	}
	c, ok := rec.Get(root.ID)
	if !ok || len(c.Nodes) != 1 || c.Nodes[0].Duplicates != 2 {
		t.Fatalf("conversation = %+v, want one signal with 2 duplicates", c)
	}
	if s := rec.Stats(); s.Duplicates != 2 {
		t.Errorf("recorder duplicates = %d, want 2", s.Duplicates)
	}
}

// fanOut feeds rec what a token service sees of one conversation whose root
// is consumed with width children, after which each of the first depth-1
// children is consumed with width children of its own: the root, then
// depth transitions that carry only the consumed id, as RecordTokens
// reports them. It returns the root and the first generation.
func fanOut(rec *conversation.Recorder, depth, width int, at time.Time) (root baton.Signal, first []baton.Signal) {
	root = baton.Signal{ID: baton.NewTokenID(), Destination: "shop", Type: "order.place"}
	root.Conversation = root.ID
	rec.Observe(engine.Event{Kind: engine.EventRootIssued, Time: at, Signal: root})
	consume := root
	for d := range depth {
		children := make([]baton.Signal, width)
		for i := range children {
			children[i] = baton.Signal{ID: baton.NewTokenID(), Conversation: root.ID, Causation: consume.ID,
				Destination: "billing", Type: "charge"}
		}
		rec.Observe(engine.Event{Kind: engine.EventTransitioned, Time: at.Add(time.Duration(d+1) * time.Millisecond),
			Signal: baton.Signal{ID: consume.ID}, Children: children})
		if d == 0 {
			first = children
		}
		consume = first[d]
	}
	return root, first
}

// One ordinary system that emits 200 × 1,000 children in one conversation
// costs the recorder one conversation's worth of signals, not 200,000.
func TestRecorderBoundsOneConversation(t *testing.T) {
	t.Parallel()
	rec := conversation.NewRecorder(0)
	root, first := fanOut(rec, 200, 1000, time.Unix(0, 0))
	c, ok := rec.Get(root.ID)
	if !ok {
		t.Fatal("the conversation is not recorded")
	}
	const kept = conversation.DefaultSignalsPerConversation
	if len(c.Nodes) != kept {
		t.Fatalf("recorded %d signals of one conversation, want the limit %d", len(c.Nodes), kept)
	}
	// The root, 1,000 children and 999 of the second generation fit; the
	// last child of the second transition and every child after it not.
	wantDropped := 1 + 198*1000
	if c.Dropped != wantDropped || rec.Stats().Dropped != int64(wantDropped) {
		t.Errorf("dropped %d (stats %d), want %d", c.Dropped, rec.Stats().Dropped, wantDropped)
	}
	if c.Nodes[0].ID != root.ID || c.Nodes[0].State != conversation.Done {
		t.Errorf("first node %+v, want the consumed root", c.Nodes[0])
	}
	// Signals that were recorded still follow their tokens.
	rec.Observe(engine.Event{Kind: engine.EventTransitioned, Time: time.Unix(1, 0), Signal: baton.Signal{ID: first[500].ID}})
	c, _ = rec.Get(root.ID)
	for _, n := range c.Nodes {
		if n.ID == first[500].ID && n.State != conversation.Done {
			t.Errorf("a recorded child consumed later is %s, want done", n.State)
		}
	}
	if s := rec.List(0); len(s) != 1 || s[0].Signals != kept {
		t.Errorf("list %+v", s)
	}
}

// heapInUse returns the live heap after a collection.
func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// The recorder's memory is bounded in total, and its estimate of it is an
// upper bound of what it really holds on the heap.
func TestRecorderMemoryStaysWithinItsBudget(t *testing.T) {
	// Not parallel: it measures the heap.
	before := heapInUse()
	rec := conversation.NewRecorder(0)
	fanOut(rec, 200, 1000, time.Unix(0, 0)) // one large conversation
	for i := range 100 {                    // and a hundred more of 2,000 signals each
		fanOut(rec, 2, 1000, time.Unix(int64(i+1), 0))
	}
	grown := int64(heapInUse()) - int64(before)
	s := rec.Stats()
	limit := rec.Limits().Bytes
	t.Logf("heap grew by %.1f MB; recorder estimate %.1f MB (limit %.1f MB); %d conversations, %d signals, %d evicted, %d dropped",
		float64(grown)/1e6, float64(s.Bytes)/1e6, float64(limit)/1e6, s.Conversations, s.Signals, s.Evicted, s.Dropped)
	if s.Bytes > limit {
		t.Errorf("estimate %d bytes exceeds the limit %d", s.Bytes, limit)
	}
	if grown > s.Bytes+s.Bytes/10 {
		t.Errorf("the heap grew by %d bytes, more than the recorder's estimate of %d", grown, s.Bytes)
	}
	if s.Evicted == 0 || s.Conversations+int(s.Evicted) != 101 {
		t.Errorf("%d conversations kept and %d evicted, want 101 in all, some evicted", s.Conversations, s.Evicted)
	}
	runtime.KeepAlive(rec)
}

// To stay within its limits the recorder evicts the least recently updated
// finished conversation, and an unfinished one only when none is finished.
func TestRecorderEvictsFinishedConversationsFirst(t *testing.T) {
	t.Parallel()
	rec := conversation.NewRecorder(3)
	at := time.Unix(0, 0)
	start := func() baton.Signal {
		at = at.Add(time.Second)
		root := baton.Signal{ID: baton.NewTokenID(), Destination: "shop", Type: "order.place"}
		root.Conversation = root.ID
		rec.Observe(engine.Event{Kind: engine.EventRootIssued, Time: at, Signal: root})
		return root
	}
	finish := func(root baton.Signal) {
		at = at.Add(time.Second)
		rec.Observe(engine.Event{Kind: engine.EventTransitioned, Time: at, Signal: baton.Signal{ID: root.ID}})
	}
	recorded := func(root baton.Signal) bool { _, ok := rec.Get(root.ID); return ok }

	waiting := start() // the oldest, still in flight
	done1, done2 := start(), start()
	finish(done1)
	finish(done2)
	newer := start()
	if !recorded(waiting) || recorded(done1) || !recorded(done2) || !recorded(newer) {
		t.Fatalf("kept waiting %v, done1 %v, done2 %v, newer %v; want done1 (the oldest finished) evicted",
			recorded(waiting), recorded(done1), recorded(done2), recorded(newer))
	}
	if s := rec.Stats(); s.Evicted != 1 || s.EvictedUnfinished != 0 {
		t.Errorf("stats %+v, want 1 evicted, finished", s)
	}
	newest := start() // evicts done2, the last finished one
	third := start()  // now only unfinished ones are left: the oldest goes
	if recorded(done2) || recorded(waiting) || !recorded(newer) || !recorded(newest) || !recorded(third) {
		t.Errorf("kept done2 %v, waiting %v; want both evicted, done2 first", recorded(done2), recorded(waiting))
	}
	if s := rec.Stats(); s.Evicted != 3 || s.EvictedUnfinished != 1 {
		t.Errorf("stats %+v, want 3 evicted, 1 of them unfinished", s)
	}
}
