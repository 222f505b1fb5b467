package conversation

import (
	"slices"
	"sync"
	"time"

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

// Recorder builds conversations from engine events. It is safe for
// concurrent use; Observe can be passed as engine.Config.OnEvent.
type Recorder struct {
	mu    sync.Mutex
	limit int
	convs map[baton.TokenID]*record
}

type record struct {
	id      baton.TokenID
	started time.Time
	updated time.Time
	nodes   map[baton.TokenID]*Node
}

// DefaultLimit is how many conversations a Recorder keeps by default.
const DefaultLimit = 1000

// NewRecorder keeps the limit most recently updated conversations (0 means
// DefaultLimit).
func NewRecorder(limit int) *Recorder {
	if limit <= 0 {
		limit = DefaultLimit
	}
	return &Recorder{limit: limit, convs: make(map[baton.TokenID]*record)}
}

// Observe records one engine event.
func (r *Recorder) Observe(ev engine.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	conv := ev.Signal.Conversation
	if conv.IsZero() && len(ev.Children) > 0 {
		conv = ev.Children[0].Conversation
	}
	if conv.IsZero() {
		conv = r.conversationOf(ev.Signal.ID)
	}
	if conv.IsZero() {
		return
	}
	rec := r.conversation(conv, ev.Time)
	rec.updated = ev.Time
	switch ev.Kind {
	case engine.EventRootIssued:
		rec.node(ev.Signal, ev.Time).set(InFlight, ev.Time)
	case engine.EventApplied:
		rec.node(ev.Signal, ev.Time).set(Applied, ev.Time)
		for _, child := range ev.Children {
			if n := rec.node(child, ev.Time); n.State == "" {
				n.set(Pending, ev.Time)
			}
		}
	case engine.EventTransitioned:
		rec.node(ev.Signal, ev.Time).set(Done, ev.Time)
		for _, child := range ev.Children {
			if n := rec.node(child, ev.Time); n.State == "" || n.State == Pending {
				n.set(InFlight, ev.Time)
			}
		}
	case engine.EventDuplicate:
		n := rec.node(ev.Signal, ev.Time)
		n.Duplicates++
		if n.State == "" {
			n.set(Done, ev.Time) // a duplicate means the token was consumed
		}
	case engine.EventParked:
		n := rec.node(ev.Signal, ev.Time)
		n.set(Parked, ev.Time)
		n.Reason = ev.Reason
	}
	r.evict()
}

// conversationOf finds the conversation of a signal seen before, for
// events that carry only its id.
func (r *Recorder) conversationOf(id baton.TokenID) baton.TokenID {
	for _, rec := range r.convs {
		if _, ok := rec.nodes[id]; ok {
			return rec.id
		}
	}
	return baton.TokenID{}
}

func (r *Recorder) conversation(id baton.TokenID, at time.Time) *record {
	rec, ok := r.convs[id]
	if !ok {
		rec = &record{id: id, started: at, nodes: make(map[baton.TokenID]*Node)}
		r.convs[id] = rec
	}
	return rec
}

func (rec *record) node(sig baton.Signal, at time.Time) *Node {
	n, ok := rec.nodes[sig.ID]
	if !ok {
		n = &Node{ID: sig.ID, Created: at}
		rec.nodes[sig.ID] = n
	}
	// Events that know only the id must not erase what others told.
	if sig.Type != "" {
		n.Type, n.Destination, n.Causation = sig.Type, sig.Destination, sig.Causation
	}
	return n
}

func (n *Node) set(s State, at time.Time) {
	n.State = s
	n.Updated = at
}

// evict drops the least recently updated conversations over the limit.
func (r *Recorder) evict() {
	if len(r.convs) <= r.limit {
		return
	}
	all := make([]*record, 0, len(r.convs))
	for _, rec := range r.convs {
		all = append(all, rec)
	}
	slices.SortFunc(all, func(a, b *record) int { return a.updated.Compare(b.updated) })
	for _, rec := range all[:len(all)-r.limit] {
		delete(r.convs, rec.id)
	}
}

// List returns up to limit conversations, most recently updated first.
func (r *Recorder) List(limit int) []Summary {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Summary, 0, len(r.convs))
	for _, rec := range r.convs {
		s := Summary{ID: rec.id, Started: rec.started, Updated: rec.updated, Signals: len(rec.nodes)}
		for _, n := range rec.nodes {
			switch n.State {
			case InFlight, Pending, Applied:
				s.InFlight++
			case Parked:
				s.Parked++
			}
			s.Duplicates += n.Duplicates
		}
		out = append(out, s)
	}
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

// Get returns a snapshot of one conversation.
func (r *Recorder) Get(id baton.TokenID) (Conversation, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rec, ok := r.convs[id]
	if !ok {
		return Conversation{}, false
	}
	c := Conversation{ID: rec.id, Started: rec.started, Updated: rec.updated}
	for _, n := range rec.nodes {
		c.Nodes = append(c.Nodes, *n)
	}
	slices.SortFunc(c.Nodes, func(a, b Node) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return slices.Compare(a.ID[:], b.ID[:])
	})
	return c, true
}
