package sim

import (
	"context"
	"fmt"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/engine"
)

// message is one copy of a signal in the simulated broker.
type message struct {
	sig      baton.Signal
	attempt  int
	inFlight bool
}

// broker is the simulated at-least-once broker. Publishing is a yield point
// with faults; the scheduler decides when and in which order copies are
// delivered, and duplicates some.
type broker struct{ sim *Sim }

func (b broker) Publish(ctx context.Context, sig baton.Signal) error {
	s := b.sim
	if err := s.yield(ctx, fmt.Sprintf("broker.Publish(%s to %s)", short(sig.ID), sig.Destination)); err != nil {
		return err
	}
	if err := s.failBefore(ctx, "publish"); err != nil {
		return err
	}
	if !s.committedSignals[sig.ID] && sig.ID != sig.Conversation {
		s.violate("ghost message %s: published but no committed activity emitted it", short(sig.ID))
	}
	s.enqueue(sig)
	if s.chance(s.faults.Duplicate) {
		s.count("fault: broker duplicated a message")
		s.enqueue(sig)
	}
	return s.failAfter(ctx, "publish")
}

func (s *Sim) enqueue(sig baton.Signal) {
	s.messages = append(s.messages, &message{sig: sig})
}

func (s *Sim) ready() []*message {
	var out []*message
	for _, m := range s.messages {
		if !m.inFlight {
			out = append(out, m)
		}
	}
	return out
}

func (s *Sim) drop(m *message) {
	for i, x := range s.messages {
		if x == m {
			s.messages = append(s.messages[:i], s.messages[i+1:]...)
			return
		}
	}
}

// deliver starts a worker that processes one delivery of m and then acks
// it, or leaves it for redelivery if processing failed or the worker
// crashed.
func (s *Sim) deliver(m *message) {
	m.inFlight = true
	m.attempt++
	if m.attempt > 1 {
		s.count("recovery: redelivered after a failure or crash")
	}
	e := s.engines[m.sig.Destination]
	s.start(&actor{name: "worker@" + m.sig.Destination, run: func(ctx context.Context) {
		s.trace("deliver %s (%s) attempt %d", short(m.sig.ID), m.sig.Type, m.attempt)
		res, err := e.Process(ctx, m.sig)
		s.settle(ctx, m, res, err)
	}})
}

// settle acks m if its processing succeeded, else leaves it for
// redelivery.
func (s *Sim) settle(ctx context.Context, m *message, res engine.Result, err error) {
	m.inFlight = false
	switch {
	case err == nil:
		s.drop(m)
		s.outcomes[res.Outcome.String()]++
	case actorFrom(ctx).crashed:
		// Not acked: the broker redelivers it.
	default:
		s.count("recovery: processing failed, retried")
		if engine.IsPermanent(err) {
			s.violate("signal %s refused: %v", short(m.sig.ID), err)
			s.drop(m)
		}
	}
}

// simBatch is the most deliveries a simulated worker takes together.
const simBatch = 4

func batchSize(on bool) int {
	if on {
		return simBatch
	}
	return 0
}

// batchWith returns m and up to simBatch-1 other ready copies for its
// destination, in queue order: what a worker of Run takes at once.
func (s *Sim) batchWith(m *message, ready []*message) []*message {
	if !s.batches {
		return nil
	}
	batch := []*message{m}
	for _, r := range ready {
		if len(batch) == simBatch {
			break
		}
		if r != m && r.sig.Destination == m.sig.Destination {
			batch = append(batch, r)
		}
	}
	return batch
}

// deliverBatch starts a worker that processes deliveries of ms together
// (engine.ProcessBatch) and then acks each that succeeded.
func (s *Sim) deliverBatch(ms []*message) {
	sigs := make([]baton.Signal, len(ms))
	for i, m := range ms {
		m.inFlight = true
		m.attempt++
		if m.attempt > 1 {
			s.count("recovery: redelivered after a failure or crash")
		}
		sigs[i] = m.sig
	}
	e := s.engines[ms[0].sig.Destination]
	s.start(&actor{name: "batch worker@" + ms[0].sig.Destination, run: func(ctx context.Context) {
		s.trace("deliver a batch of %d to %s", len(ms), ms[0].sig.Destination)
		results, errs := e.ProcessBatch(ctx, sigs)
		for i, m := range ms {
			s.settle(ctx, m, results[i], errs[i])
		}
	}})
}
