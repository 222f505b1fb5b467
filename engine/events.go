package engine

import (
	"time"

	"github.com/batonhq/baton"
)

// EventKind says what happened to a signal.
type EventKind string

// The events an engine reports. They are observations for dashboards and
// audits, never inputs to the protocol: a lost event loses nothing.
const (
	EventRootIssued   EventKind = "root_issued"  // a conversation started
	EventApplied      EventKind = "applied"      // an activity committed
	EventTransitioned EventKind = "transitioned" // a token consumed, its children created
	EventDuplicate    EventKind = "duplicate"    // a signal without a live token dropped
	EventParked       EventKind = "parked"       // a signal set aside, its token left live
)

// Event is one observation. Signal is the signal concerned (for
// EventTransitioned only its ID is known); Children are the signals an
// activity emitted.
type Event struct {
	Kind        EventKind
	Time        time.Time
	Destination string // the engine that saw it
	Signal      baton.Signal
	Children    []baton.Signal
	Reason      string // why a signal was parked
}

func (e *Engine) emitEvent(ev Event) {
	if e.cfg.OnEvent == nil {
		return
	}
	ev.Time = e.cfg.Now()
	ev.Destination = e.cfg.Destination
	e.cfg.OnEvent(ev)
}
