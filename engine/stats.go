package engine

import "sync/atomic"

// Stats counts what an engine did since it was created.
type Stats struct {
	Applied         int64 // activities committed
	Duplicates      int64 // signals dropped because their token was not live
	Conflicts       int64 // entity version conflicts retried
	Transitions     int64 // transitions that consumed their token
	TransitionsDone int64 // transitions that found their token already consumed
	Dispatched      int64 // emitted signals accepted by the medium
	DispatchRetries int64
	EntriesRemoved  int64 // outbox entries removed
	Swept           int64 // outbox entries finished by the sweeper
	Parked          int64 // deliveries parked
	HandlerErrors   int64
	RootsIssued     int64
	RootsExpired    int64
}

type counters struct {
	applied, duplicates, conflicts, transitions, transitionsDone, dispatched,
	dispatchRetries, entriesRemoved, swept, parked, handlerErrors,
	rootsIssued, rootsExpired atomic.Int64
}

// Stats returns a snapshot of the engine's counters.
func (e *Engine) Stats() Stats {
	c := &e.stats
	return Stats{
		Applied:         c.applied.Load(),
		Duplicates:      c.duplicates.Load(),
		Conflicts:       c.conflicts.Load(),
		Transitions:     c.transitions.Load(),
		TransitionsDone: c.transitionsDone.Load(),
		Dispatched:      c.dispatched.Load(),
		DispatchRetries: c.dispatchRetries.Load(),
		EntriesRemoved:  c.entriesRemoved.Load(),
		Swept:           c.swept.Load(),
		Parked:          c.parked.Load(),
		HandlerErrors:   c.handlerErrors.Load(),
		RootsIssued:     c.rootsIssued.Load(),
		RootsExpired:    c.rootsExpired.Load(),
	}
}
