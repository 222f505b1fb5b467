package sim

import (
	"context"
	"errors"
	"fmt"
)

// errCrash is what every store call of a crashed worker returns: the worker
// does nothing more, as if its process died.
var errCrash = errors.New("sim: worker crashed")

// actor is a goroutine the scheduler runs one at a time: a worker processing
// one delivery, or a sweeper.
type actor struct {
	id      int
	name    string
	wake    chan struct{}
	pending string // the store call it waits to make
	crashed bool
	done    bool
	run     func(ctx context.Context)
}

type actorKey struct{}

func actorFrom(ctx context.Context) *actor {
	a, _ := ctx.Value(actorKey{}).(*actor)
	return a
}

// start runs a's function up to its first yield point.
func (s *Sim) start(a *actor) {
	s.nextActor++
	a.id = s.nextActor
	a.wake = make(chan struct{})
	s.actors = append(s.actors, a)
	ctx := context.WithValue(context.Background(), actorKey{}, a)
	go func() {
		<-a.wake
		a.run(ctx)
		a.done = true
		s.yielded <- a
	}()
	s.resume(a)
}

// resume hands the turn to a and waits until it yields or finishes.
func (s *Sim) resume(a *actor) {
	a.wake <- struct{}{}
	<-s.yielded
	if a.done {
		s.remove(a)
	}
}

func (s *Sim) remove(a *actor) {
	for i, b := range s.actors {
		if b == a {
			s.actors = append(s.actors[:i], s.actors[i+1:]...)
			return
		}
	}
}

// yield is called by the running actor at every store or broker call: it
// gives the turn back to the scheduler and returns when the scheduler picks
// this actor again. Then it decides the faults of the call.
func (s *Sim) yield(ctx context.Context, op string) error {
	a := actorFrom(ctx)
	if a == nil {
		return nil // set-up code outside the scheduler
	}
	if a.crashed {
		return errCrash
	}
	a.pending = op
	s.yielded <- a
	<-a.wake
	a.pending = ""
	s.trace("%s#%d %s", a.name, a.id, op)
	if s.chance(s.faults.Crash) {
		a.crashed = true
		s.count("fault: worker crashed")
		s.trace("%s#%d crashed", a.name, a.id)
		return errCrash
	}
	return nil
}

// failBefore decides whether a write fails without applying.
func (s *Sim) failBefore(ctx context.Context, op string) error {
	if actorFrom(ctx) == nil || !s.chance(s.faults.FailBefore) {
		return nil
	}
	s.count("fault: " + op + " failed before applying")
	return fmt.Errorf("sim: %s failed before applying", op)
}

// failAfter decides whether a write that applied reports an error anyway
// (its outcome is then unknown to the caller).
func (s *Sim) failAfter(ctx context.Context, op string) error {
	if actorFrom(ctx) == nil || !s.chance(s.faults.FailAfter) {
		return nil
	}
	s.count("fault: " + op + " failed after applying")
	return fmt.Errorf("sim: %s applied, then failed", op)
}

func (s *Sim) chance(p float64) bool {
	return s.faultsOn && p > 0 && s.rng.Float64() < p
}

func (s *Sim) count(what string) { s.counters[what]++ }

func (s *Sim) trace(format string, args ...any) {
	line := fmt.Sprintf("t=%d ", s.step) + fmt.Sprintf(format, args...)
	if len(s.traceLog) == traceKeep {
		copy(s.traceLog, s.traceLog[1:])
		s.traceLog = s.traceLog[:traceKeep-1]
	}
	s.traceLog = append(s.traceLog, line)
}

const traceKeep = 60
