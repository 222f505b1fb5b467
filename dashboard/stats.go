package dashboard

import "github.com/batonhq/baton/engine"

// EngineStats returns a Config.Stats function that sums the counters of the
// given engines, named as the engine's OpenTelemetry counters are (without
// the "baton." prefix): "transitions", "duplicates.dropped", and so on.
func EngineStats(engines ...*engine.Engine) func() map[string]int64 {
	return func() map[string]int64 {
		var sum engine.Stats
		for _, e := range engines {
			s := e.Stats()
			sum.Applied += s.Applied
			sum.Duplicates += s.Duplicates
			sum.Conflicts += s.Conflicts
			sum.Transitions += s.Transitions
			sum.TransitionsDone += s.TransitionsDone
			sum.Dispatched += s.Dispatched
			sum.DispatchRetries += s.DispatchRetries
			sum.EntriesRemoved += s.EntriesRemoved
			sum.Swept += s.Swept
			sum.Parked += s.Parked
			sum.HandlerErrors += s.HandlerErrors
			sum.RootsIssued += s.RootsIssued
			sum.RootsExpired += s.RootsExpired
		}
		return StatsCounters(sum)
	}
}

// StatsCounters names the counters of one engine.Stats.
func StatsCounters(s engine.Stats) map[string]int64 {
	return map[string]int64{
		"activities.applied":       s.Applied,
		CounterDuplicates:          s.Duplicates,
		"conflicts":                s.Conflicts,
		CounterTransitions:         s.Transitions,
		"transitions.already_done": s.TransitionsDone,
		"signals.dispatched":       s.Dispatched,
		"dispatch.retries":         s.DispatchRetries,
		"outbox.removed":           s.EntriesRemoved,
		"sweeper.finished":         s.Swept,
		CounterParked:              s.Parked,
		"activity.errors":          s.HandlerErrors,
		"roots.issued":             s.RootsIssued,
		"roots.expired":            s.RootsExpired,
	}
}
