package engine

import (
	"context"
	"sync/atomic"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Stats counts what an engine did since it was created.
type Stats struct {
	Applied         int64 // activities committed
	Duplicates      int64 // signals dropped because their token was not live
	Completed       int64 // copies that found the activity committed and finished its steps
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
	Batched         int64 // activities committed by a batch commit (Config.Batch)
	Batches         int64 // batch commits that committed at least one
	StartsLaunched  int64 // starts of conversations whose signal was sent (Launch)
	SweepFailures   int64 // sweeps that left at least one entry or start unfinished
}

// stat names one counter; each is kept as an atomic for Stats and exported
// as an OpenTelemetry counter named baton.<name>.
type stat int

const (
	statApplied stat = iota
	statDuplicates
	statCompleted
	statConflicts
	statTransitions
	statTransitionsDone
	statDispatched
	statDispatchRetries
	statEntriesRemoved
	statSwept
	statParked
	statHandlerErrors
	statRootsIssued
	statRootsExpired
	statBatched
	statBatches
	statStartsLaunched
	statSweepFailures
	statCount
)

var statNames = [statCount]struct{ name, help string }{
	statApplied:         {"activities.applied", "Activities committed."},
	statDuplicates:      {"duplicates.dropped", "Signals dropped because their token was not live."},
	statCompleted:       {"signals.completed", "Copies of signals that found the activity committed and finished its pending steps."},
	statConflicts:       {"conflicts", "Entity version conflicts retried."},
	statTransitions:     {"transitions", "Transitions that consumed their token."},
	statTransitionsDone: {"transitions.already_done", "Transitions that found their token already consumed."},
	statDispatched:      {"signals.dispatched", "Emitted signals accepted by their medium."},
	statDispatchRetries: {"dispatch.retries", "Retried dispatches of emitted signals."},
	statEntriesRemoved:  {"outbox.removed", "Outbox entries removed."},
	statSwept:           {"sweeper.finished", "Outbox entries finished by the sweeper."},
	statParked:          {"signals.parked", "Deliveries parked."},
	statHandlerErrors:   {"activity.errors", "Activity runs that returned an error."},
	statRootsIssued:     {"roots.issued", "Root tokens issued."},
	statRootsExpired:    {"roots.expired", "Unused root tokens deleted after expiry."},
	statBatched:         {"activities.batched", "Activities committed by a batch commit (Config.Batch)."},
	statBatches:         {"batches", "Batch commits that committed at least one activity."},
	statStartsLaunched:  {"starts.launched", "Conversations started in a caller's transaction whose root signal was sent."},
	statSweepFailures:   {"sweeper.failures", "Sweeps that left at least one outbox entry or start unfinished (its receiver refused it, a store failed)."},
}

type counters struct {
	values      [statCount]atomic.Int64
	instruments [statCount]metric.Int64Counter
	attrs       metric.MeasurementOption
}

func (c *counters) init(meter metric.Meter, destination string) {
	c.attrs = metric.WithAttributeSet(attribute.NewSet(attribute.String("baton.destination", destination)))
	for i, s := range statNames {
		// An instrument that fails to register only loses its export;
		// the Stats counter still counts.
		c.instruments[i], _ = meter.Int64Counter("baton."+s.name, metric.WithDescription(s.help))
		// Exported at zero from the start: a series that appears at 1
		// shows no increase to Prometheus, so an alert on the first
		// parked signal (increase(...) > 0) would never fire.
		if inst := c.instruments[i]; inst != nil {
			inst.Add(context.Background(), 0, c.attrs)
		}
	}
}

func (c *counters) add(ctx context.Context, s stat, n int64) {
	if n == 0 {
		return
	}
	c.values[s].Add(n)
	if inst := c.instruments[s]; inst != nil {
		inst.Add(ctx, n, c.attrs)
	}
}

// Stats returns a snapshot of the engine's counters.
func (e *Engine) Stats() Stats {
	var v [statCount]int64
	for i := range v {
		v[i] = e.stats.values[i].Load()
	}
	return statsOf(v)
}

// fields lists the Stats field of each stat, so conversions stay in one place.
func (s *Stats) fields() [statCount]*int64 {
	return [statCount]*int64{
		statApplied: &s.Applied, statDuplicates: &s.Duplicates, statCompleted: &s.Completed,
		statConflicts: &s.Conflicts, statTransitions: &s.Transitions, statTransitionsDone: &s.TransitionsDone,
		statDispatched: &s.Dispatched, statDispatchRetries: &s.DispatchRetries, statEntriesRemoved: &s.EntriesRemoved,
		statSwept: &s.Swept, statParked: &s.Parked, statHandlerErrors: &s.HandlerErrors,
		statRootsIssued: &s.RootsIssued, statRootsExpired: &s.RootsExpired,
		statBatched: &s.Batched, statBatches: &s.Batches, statStartsLaunched: &s.StartsLaunched,
		statSweepFailures: &s.SweepFailures,
	}
}

func statsOf(v [statCount]int64) Stats {
	var s Stats
	for i, f := range s.fields() {
		*f = v[i]
	}
	return s
}

// Plus returns the sum of s and o, for totals over several engines.
func (s Stats) Plus(o Stats) Stats {
	of := o.fields()
	for i, f := range s.fields() {
		*f += *of[i]
	}
	return s
}

// Counters returns the counters by their metric names without the
// "baton." prefix (for example "duplicates.dropped").
func (s Stats) Counters() map[string]int64 {
	out := make(map[string]int64, statCount)
	for i, f := range s.fields() {
		out[statNames[i].name] = *f
	}
	return out
}
