package sim

import (
	"context"
	"errors"
	"fmt"
)

// errCrash is what every call of a crashed process's actors returns: they
// do nothing more, as if the process died.
var errCrash = errors.New("sim: process crashed")

// actor is a goroutine the scheduler runs one at a time: a worker taking
// deliveries, a sweeper or a remover of one destination's process.
type actor struct {
	id      int
	name    string
	dest    string     // the destination whose process it runs in
	held    []*message // deliveries it was handed
	wake    chan struct{}
	pending string // the call it waits to make
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

// resume hands the turn to a and waits until it yields or finishes. A
// finished actor's deliveries that it left unsettled (it crashed, or its
// ack failed) are delivered again, as after a broker's ack timeout.
func (s *Sim) resume(a *actor) {
	a.wake <- struct{}{}
	<-s.yielded
	if !a.done {
		return
	}
	s.remove(a)
	for _, m := range a.held {
		if m.holder == a && s.queued(m) {
			m.inFlight, m.holder = false, nil
			s.count("recovery: unsettled delivery handed out again")
		}
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
		s.crash(a.dest)
		return errCrash
	}
	return nil
}

// respond is the moment between a write taking effect and its caller
// learning so: other actors run meanwhile, and the caller's process may
// crash, after which the write is done but its caller never knew. Then it
// decides whether the answer is lost anyway (failAfter).
func (s *Sim) respond(ctx context.Context, op string) error {
	if err := s.yield(ctx, op+" answered"); err != nil {
		return err
	}
	return s.failAfter(ctx, op)
}

// crash kills the process of destination d: every actor of it stops at its
// next call, and a fresh engine, which remembers nothing of the old one
// (its queued outbox removals are lost), takes over. Unsettled deliveries
// are handed out again when their actors end.
func (s *Sim) crash(d string) {
	s.count("fault: process crashed")
	s.trace("process of %s crashed", d)
	for _, a := range s.actors {
		if a.dest == d {
			a.crashed = true
		}
	}
	if err := s.restart(d); err != nil {
		s.violate("restart of %s failed: %v", d, err)
	}
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
