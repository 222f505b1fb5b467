package conversation

import (
	"container/list"
	"slices"
	"strings"
	"sync"
	"time"
	"unique"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/engine"
)

// State is where a signal is in its life.
type State string

const (
	Pending  State = "pending"   // emitted by a committed activity; token not yet created
	InFlight State = "in_flight" // token live: the signal is on its way or waiting
	Applied  State = "applied"   // its activity committed; its transition not yet seen
	Done     State = "done"      // its token consumed
	Parked   State = "parked"    // set aside after failures; token live
)

// Node is one signal and the activity that processes it.
type Node struct {
	ID          baton.TokenID `json:"id"`
	Causation   baton.TokenID `json:"causation,omitzero"`
	Type        string        `json:"type"`
	Destination string        `json:"destination"`
	State       State         `json:"state"`
	Created     time.Time     `json:"created"`
	Updated     time.Time     `json:"updated"`
	Duplicates  int           `json:"duplicates"` // copies dropped
	Reason      string        `json:"reason,omitempty"`
}

// Conversation is a snapshot of one conversation.
type Conversation struct {
	ID      baton.TokenID `json:"id"`
	Started time.Time     `json:"started"`
	Updated time.Time     `json:"updated"`
	Nodes   []Node        `json:"nodes"` // in creation order
	// Dropped counts the events about signals that were not recorded
	// because the conversation already held Limits.SignalsPerConversation
	// signals. Nonzero means Nodes is not the whole conversation.
	Dropped int `json:"dropped,omitempty"`
}

// Summary describes a conversation in a listing.
type Summary struct {
	ID         baton.TokenID `json:"id"`
	Started    time.Time     `json:"started"`
	Updated    time.Time     `json:"updated"`
	Signals    int           `json:"signals"`
	InFlight   int           `json:"in_flight"`
	Parked     int           `json:"parked"`
	Duplicates int           `json:"duplicates"`
}

// ParkedSignal is a parked signal and the conversation it belongs to.
type ParkedSignal struct {
	Conversation baton.TokenID
	Node
}

// Stats describes what a Recorder holds and what its limits made it drop.
type Stats struct {
	Conversations int   `json:"recorded"`
	Signals       int   `json:"signals"`
	InFlight      int   `json:"in_flight"` // pending, in flight or applied
	Parked        int   `json:"parked"`
	Duplicates    int   `json:"duplicates"`
	Bytes         int64 `json:"bytes"` // estimated memory of what is recorded
	// Evicted counts conversations dropped to stay within the limits,
	// finished ones (every signal done) first; EvictedUnfinished counts
	// those of them that still had signals in flight.
	Evicted           int64 `json:"evicted"`
	EvictedUnfinished int64 `json:"evicted_unfinished"`
	// Dropped counts events about signals that were not recorded because
	// their conversation was full.
	Dropped int64 `json:"dropped"`
}

// Default limits of a Recorder.
const (
	// DefaultLimit is how many conversations a Recorder keeps by default.
	DefaultLimit = 1000
	// DefaultSignalsPerConversation is how many signals of one
	// conversation a Recorder keeps by default: as many as the dashboard
	// draws.
	DefaultSignalsPerConversation = 2000
	// DefaultBytes bounds a Recorder's estimated memory by default.
	DefaultBytes = 32 << 20
)

// Estimated costs, for Limits.Bytes. signalBytes is a recorded signal: the
// Node in its conversation's slice (with the slice's spare capacity) and
// its entry in the index of signals; conversationBytes is the rest of a
// conversation. TestRecorderMemoryStaysWithinItsBudget checks them against
// the heap.
const (
	signalBytes       = 400
	conversationBytes = 400
	maxReasonBytes    = 1000
	maxSignalBytes    = signalBytes + maxReasonBytes + 2*baton.MaxNameBytes
)

// Limits bound what a Recorder keeps. A zero field takes its default.
type Limits struct {
	// Conversations is how many conversations are kept. Default
	// DefaultLimit.
	Conversations int
	// SignalsPerConversation is how many signals of one conversation are
	// kept; events about further signals are counted (Stats.Dropped,
	// Conversation.Dropped) and otherwise ignored. Default
	// DefaultSignalsPerConversation.
	SignalsPerConversation int
	// Bytes bounds the estimated memory of everything recorded. Default
	// DefaultBytes; at least one full conversation always fits.
	Bytes int64
}

func (l Limits) withDefaults() Limits {
	if l.Conversations <= 0 {
		l.Conversations = DefaultLimit
	}
	if l.SignalsPerConversation <= 0 {
		l.SignalsPerConversation = DefaultSignalsPerConversation
	}
	if l.Bytes <= 0 {
		l.Bytes = DefaultBytes
	}
	l.Bytes = max(l.Bytes, conversationBytes+int64(l.SignalsPerConversation)*maxSignalBytes)
	return l
}

// Recorder builds conversations from engine events. It is safe for
// concurrent use; Observe can be passed as engine.Config.OnEvent.
//
// It keeps at most Limits of them. To stay within them it evicts the least
// recently updated finished conversation (every signal done), and only
// when none is finished the least recently updated unfinished one. Readers
// copy what they return under the lock and sort it after releasing it, so
// a dashboard polling a large conversation delays writers by one bounded
// copy at most.
type Recorder struct {
	mu     sync.Mutex
	limits Limits
	convs  map[baton.TokenID]*record
	// signals finds a recorded signal by id, for events that carry only
	// the id (a transition seen by a token service).
	signals map[baton.TokenID]signalRef
	// finished and unfinished hold the conversations, least recently
	// updated first.
	finished, unfinished list.List
	bytes                int64
	destinations         map[string]int // recorded signals per destination
	evicted              int64
	evictedUnfinished    int64
	dropped              int64
}

type signalRef struct {
	rec *record
	i   int32
}

type record struct {
	id               baton.TokenID
	started, updated time.Time
	nodes            []Node
	root             int // index of the first known signal without a cause, or -1
	live, parked     int // signals pending, in flight, applied or parked; parked ones
	duplicates       int
	parkedAt         map[int32]struct{}
	dropped          int
	bytes            int64
	elem             *list.Element // in finished if inFinished, else in unfinished
	inFinished       bool
}

func (rec *record) finished() bool { return rec.live == 0 }

// NewRecorder keeps the limit most recently updated conversations (0 means
// DefaultLimit), with the other limits at their defaults.
func NewRecorder(limit int) *Recorder {
	return NewRecorderWithLimits(Limits{Conversations: limit})
}

// NewRecorderWithLimits returns a recorder that keeps within limits.
func NewRecorderWithLimits(limits Limits) *Recorder {
	return &Recorder{limits: limits.withDefaults(), convs: make(map[baton.TokenID]*record),
		signals: make(map[baton.TokenID]signalRef), destinations: make(map[string]int)}
}

// Limits returns the recorder's limits, defaults filled in.
func (r *Recorder) Limits() Limits { return r.limits }

// Observe records one engine event.
func (r *Recorder) Observe(ev engine.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	conv := ev.Signal.Conversation
	if conv.IsZero() && len(ev.Children) > 0 {
		conv = ev.Children[0].Conversation
	}
	if conv.IsZero() {
		if ref, ok := r.signals[ev.Signal.ID]; ok {
			conv = ref.rec.id
		}
	}
	if conv.IsZero() {
		return
	}
	rec := r.conversation(conv, ev.Time)
	rec.updated = ev.Time
	switch ev.Kind {
	case engine.EventRootIssued:
		if i := r.node(rec, ev.Signal, ev.Time); i >= 0 {
			r.set(rec, i, InFlight, ev.Time)
		}
	case engine.EventApplied:
		if i := r.node(rec, ev.Signal, ev.Time); i >= 0 {
			r.set(rec, i, Applied, ev.Time)
		}
		for _, child := range ev.Children {
			if i := r.node(rec, child, ev.Time); i >= 0 && rec.nodes[i].State == "" {
				r.set(rec, i, Pending, ev.Time)
			}
		}
	case engine.EventTransitioned:
		if i := r.node(rec, ev.Signal, ev.Time); i >= 0 {
			r.set(rec, i, Done, ev.Time)
		}
		for _, child := range ev.Children {
			if i := r.node(rec, child, ev.Time); i >= 0 && (rec.nodes[i].State == "" || rec.nodes[i].State == Pending) {
				r.set(rec, i, InFlight, ev.Time)
			}
		}
	case engine.EventDuplicate:
		if i := r.node(rec, ev.Signal, ev.Time); i >= 0 {
			rec.nodes[i].Duplicates++
			rec.duplicates++
			if rec.nodes[i].State == "" {
				r.set(rec, i, Done, ev.Time) // a duplicate means the token was consumed
			}
		}
	case engine.EventParked:
		if i := r.node(rec, ev.Signal, ev.Time); i >= 0 {
			r.set(rec, i, Parked, ev.Time)
			reason := clipReason(ev.Reason)
			r.grow(rec, int64(len(reason)-len(rec.nodes[i].Reason)))
			rec.nodes[i].Reason = reason
		}
	}
	r.touch(rec)
	r.evict(rec)
}

// conversation returns the record of id, creating it.
func (r *Recorder) conversation(id baton.TokenID, at time.Time) *record {
	rec, ok := r.convs[id]
	if !ok {
		rec = &record{id: id, started: at, root: -1}
		r.convs[id] = rec
		r.grow(rec, conversationBytes)
	}
	return rec
}

// node returns the index of sig's node in rec, adding it, or -1 when rec
// is full and the signal is dropped.
func (r *Recorder) node(rec *record, sig baton.Signal, at time.Time) int {
	i := -1
	if ref, ok := r.signals[sig.ID]; ok && ref.rec == rec {
		i = int(ref.i)
	} else {
		if len(rec.nodes) >= r.limits.SignalsPerConversation {
			rec.dropped++
			r.dropped++
			return -1
		}
		rec.nodes = append(rec.nodes, Node{ID: sig.ID, Created: at})
		i = len(rec.nodes) - 1
		r.signals[sig.ID] = signalRef{rec: rec, i: int32(i)}
		r.grow(rec, signalBytes)
	}
	// Events that know only the id must not erase what others told.
	if n := &rec.nodes[i]; sig.Type != "" {
		if n.Destination != sig.Destination {
			r.countDestination(n.Destination, -1)
			r.countDestination(sig.Destination, +1)
		}
		// Counted as if not shared, so that the estimate stays an upper bound.
		r.grow(rec, int64(len(sig.Type)+len(sig.Destination)-len(n.Type)-len(n.Destination)))
		// Interned: a thousand children of one type share one string.
		n.Type, n.Destination, n.Causation = intern(sig.Type), intern(sig.Destination), sig.Causation
		if rec.root < 0 && n.Causation.IsZero() {
			rec.root = i
		}
	}
	return i
}

// set moves node i of rec to state s, keeping the counts.
func (r *Recorder) set(rec *record, i int, s State, at time.Time) {
	n := &rec.nodes[i]
	if live(n.State) {
		rec.live--
	}
	if n.State == Parked {
		rec.parked--
		delete(rec.parkedAt, int32(i))
	}
	n.State, n.Updated = s, at
	if live(s) {
		rec.live++
	}
	if s == Parked {
		rec.parked++
		if rec.parkedAt == nil {
			rec.parkedAt = make(map[int32]struct{})
		}
		rec.parkedAt[int32(i)] = struct{}{}
	}
}

func live(s State) bool { return s == Pending || s == InFlight || s == Applied || s == Parked }

func (r *Recorder) grow(rec *record, by int64) {
	rec.bytes += by
	r.bytes += by
}

func (r *Recorder) countDestination(d string, by int) {
	if d == "" {
		return
	}
	if r.destinations[d] += by; r.destinations[d] <= 0 {
		delete(r.destinations, d)
	}
}

// touch moves rec to the most recent end of the list its state puts it in.
func (r *Recorder) touch(rec *record) {
	if rec.elem != nil {
		r.listOf(rec).Remove(rec.elem)
	}
	rec.inFinished = rec.finished()
	rec.elem = r.listOf(rec).PushBack(rec)
}

// listOf returns the list that holds rec (or will).
func (r *Recorder) listOf(rec *record) *list.List {
	if rec.inFinished {
		return &r.finished
	}
	return &r.unfinished
}

// evict drops conversations, least recently updated finished ones first,
// until the recorder is within its limits. It never drops keep, the
// conversation just updated.
func (r *Recorder) evict(keep *record) {
	for len(r.convs) > r.limits.Conversations || r.bytes > r.limits.Bytes {
		var victim *record
		for _, l := range []*list.List{&r.finished, &r.unfinished} {
			for e := l.Front(); e != nil && victim == nil; e = e.Next() {
				if rec := e.Value.(*record); rec != keep {
					victim = rec
				}
			}
			if victim != nil {
				break
			}
		}
		if victim == nil {
			return
		}
		r.drop(victim)
	}
}

func (r *Recorder) drop(rec *record) {
	r.listOf(rec).Remove(rec.elem)
	delete(r.convs, rec.id)
	for i := range rec.nodes {
		id := rec.nodes[i].ID
		if ref, ok := r.signals[id]; ok && ref.rec == rec {
			delete(r.signals, id)
		}
		r.countDestination(rec.nodes[i].Destination, -1)
	}
	r.bytes -= rec.bytes
	r.evicted++
	if !rec.finished() {
		r.evictedUnfinished++
	}
}

// List returns up to limit conversations, most recently updated first.
func (r *Recorder) List(limit int) []Summary {
	r.mu.Lock()
	out := make([]Summary, 0, len(r.convs))
	for _, rec := range r.convs {
		out = append(out, rec.summary())
	}
	r.mu.Unlock()
	slices.SortFunc(out, func(a, b Summary) int {
		if c := b.Updated.Compare(a.Updated); c != 0 {
			return c
		}
		return slices.Compare(a.ID[:], b.ID[:])
	})
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out
}

func (rec *record) summary() Summary {
	return Summary{ID: rec.id, Started: rec.started, Updated: rec.updated, Signals: len(rec.nodes),
		InFlight: rec.live - rec.parked, Parked: rec.parked, Duplicates: rec.duplicates}
}

// Get returns a snapshot of one conversation.
func (r *Recorder) Get(id baton.TokenID) (Conversation, bool) {
	r.mu.Lock()
	rec, ok := r.convs[id]
	if !ok {
		r.mu.Unlock()
		return Conversation{}, false
	}
	c := Conversation{ID: rec.id, Started: rec.started, Updated: rec.updated, Dropped: rec.dropped,
		Nodes: slices.Clone(rec.nodes)}
	r.mu.Unlock()
	// Recorded in the order first seen; events of one instant keep it.
	slices.SortStableFunc(c.Nodes, func(a, b Node) int { return a.Created.Compare(b.Created) })
	return c, true
}

// Root returns the signal that started conversation id: the first recorded
// signal without a cause.
func (r *Recorder) Root(id baton.TokenID) (Node, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rec, ok := r.convs[id]
	if !ok || rec.root < 0 {
		return Node{}, false
	}
	return rec.nodes[rec.root], true
}

// ParkedSignals returns up to limit parked signals (0: all), most recently
// parked first.
func (r *Recorder) ParkedSignals(limit int) []ParkedSignal {
	r.mu.Lock()
	var out []ParkedSignal
	for _, rec := range r.convs {
		for i := range rec.parkedAt {
			out = append(out, ParkedSignal{Conversation: rec.id, Node: rec.nodes[i]})
		}
	}
	r.mu.Unlock()
	slices.SortFunc(out, func(a, b ParkedSignal) int {
		if c := b.Updated.Compare(a.Updated); c != 0 {
			return c
		}
		return slices.Compare(a.ID[:], b.ID[:])
	})
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out
}

// Destinations returns the destinations of the recorded signals, sorted.
func (r *Recorder) Destinations() []string {
	r.mu.Lock()
	out := make([]string, 0, len(r.destinations))
	for d := range r.destinations {
		out = append(out, d)
	}
	r.mu.Unlock()
	slices.Sort(out)
	return out
}

// Stats returns the recorder's totals and what its limits dropped.
func (r *Recorder) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := Stats{Conversations: len(r.convs), Bytes: r.bytes, Evicted: r.evicted,
		EvictedUnfinished: r.evictedUnfinished, Dropped: r.dropped}
	for _, rec := range r.convs {
		s.Signals += len(rec.nodes)
		s.InFlight += rec.live - rec.parked
		s.Parked += rec.parked
		s.Duplicates += rec.duplicates
	}
	return s
}

func intern(s string) string { return unique.Make(s).Value() }

func clipReason(s string) string {
	if len(s) <= maxReasonBytes {
		return s
	}
	return strings.ToValidUTF8(s[:maxReasonBytes], "")
}
