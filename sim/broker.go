package sim

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/engine"
	"github.com/batonhq/baton/transport"
)

// message is one copy of a signal in the simulated broker.
type message struct {
	sig      baton.Signal
	attempt  int
	inFlight bool   // handed to a worker and not yet acked, nacked or parked
	holder   *actor // the worker it is handed to
}

// broker is the simulated at-least-once broker. Publishing, acking,
// nacking and parking are yield points with faults; the scheduler decides
// when and in which order copies are delivered, and duplicates some. A
// delivery that its worker leaves unsettled (a crash, a failed ack) is
// delivered again, as after a broker's ack timeout.
type broker struct{ sim *Sim }

var (
	_ transport.Transport  = broker{}
	_ transport.BatchAcker = broker{}
)

func (b broker) Publish(ctx context.Context, sig baton.Signal) error {
	s := b.sim
	if err := s.yield(ctx, fmt.Sprintf("broker.Publish(%s to %s)", short(sig.ID), sig.Destination)); err != nil {
		return err
	}
	if err := s.failBefore(ctx, "publish"); err != nil {
		return err
	}
	if s.refusesPublish(sig) {
		return fmt.Errorf("sim: publish of %s refused while the probe holds it back", short(sig.ID))
	}
	if !s.committedSignals[sig.ID] && !s.issuedRoots[sig.ID] {
		s.violate("ghost message %s: published but no committed activity emitted it", short(sig.ID))
	}
	s.enqueue(sig)
	if s.chance(s.faults.Duplicate) {
		s.count("fault: broker duplicated a message")
		s.enqueue(sig)
	}
	return s.respond(ctx, "publish")
}

// Subscribe is refused: the scheduler hands deliveries to workers itself
// (deliverBatch). The broker is still each engine's Source, as the
// transport its deliveries come from.
func (b broker) Subscribe(context.Context, string) (transport.Subscription, error) {
	return nil, errors.New("sim: the scheduler delivers; nothing subscribes")
}

// AckBatch acknowledges a batch's deliveries one after another, each a
// yield point with faults of its own, so that the engine's batch
// acknowledgement meets partial failure.
func (b broker) AckBatch(ctx context.Context, ds []transport.Delivery) []error {
	b.sim.count("path: deliveries acknowledged in a batch")
	errs := make([]error, len(ds))
	for i, d := range ds {
		errs[i] = d.Ack(ctx)
	}
	return errs
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

func (s *Sim) queued(m *message) bool {
	for _, x := range s.messages {
		if x == m {
			return true
		}
	}
	return false
}

// delivery is one delivery of a message to a worker: the transport's side
// of the engine's delivery and acknowledgement path (engine.HandleDelivery
// settles it).
type delivery struct {
	sim *Sim
	m   *message
}

var _ transport.Delivery = delivery{}

func (d delivery) Signal() baton.Signal { return d.m.sig }
func (d delivery) Attempt() int         { return d.m.attempt }

// Ack removes the message: it was processed or is a duplicate.
func (d delivery) Ack(ctx context.Context) error {
	return d.settle(ctx, "ack", func() {
		d.sim.drop(d.m)
		d.sim.acked[d.m.sig.ID] = true
	})
}

// Nack hands the message back for another delivery; the scheduler decides
// when, so the delay is the scheduler's.
func (d delivery) Nack(ctx context.Context, _ time.Duration) error {
	return d.settle(ctx, "nack", func() {
		d.m.inFlight = false
		d.sim.count("recovery: delivery nacked for a retry")
	})
}

// Park moves the message aside. The engine parks only signals that can
// never be processed; in this workload that is a root signal whose token
// expired before it was admitted, and anything else is a violation.
func (d delivery) Park(ctx context.Context, reason string) error {
	return d.settle(ctx, "park", func() {
		d.sim.drop(d.m)
		if !strings.Contains(reason, engine.ErrExpired.Error()) {
			d.sim.violate("signal %s (%s) parked: %s", short(d.m.sig.ID), d.m.sig.Type, reason)
			return
		}
		d.sim.count("outcome: expired root signal parked")
	})
}

// settle runs a settlement of the delivery as a yield point with faults. A
// settlement of a message that is no longer queued is a violation: the
// engine settles each delivery once.
func (d delivery) settle(ctx context.Context, what string, apply func()) error {
	s := d.sim
	if err := s.yield(ctx, fmt.Sprintf("broker.%s(%s)", what, short(d.m.sig.ID))); err != nil {
		return err
	}
	if err := s.failBefore(ctx, what); err != nil {
		return err
	}
	if d.m.holder != actorFrom(ctx) || !s.queued(d.m) {
		s.violate("delivery of %s settled twice (%s)", short(d.m.sig.ID), what)
		return nil
	}
	d.m.inFlight, d.m.holder = false, nil
	apply()
	return s.respond(ctx, what)
}

// deliver starts a worker that takes one delivery of m through the
// engine's delivery path: process, then ack, retry or park.
func (s *Sim) deliver(m *message) { s.deliverBatch([]*message{m}) }

// deliverBatch starts a worker that takes deliveries of ms together
// (engine.HandleDeliveries), as a worker of Run takes what it received.
func (s *Sim) deliverBatch(ms []*message) {
	dest := ms[0].sig.Destination
	ds := make([]transport.Delivery, len(ms))
	a := &actor{dest: dest, held: ms}
	for i, m := range ms {
		m.inFlight, m.holder = true, a
		m.attempt++
		if m.attempt > 1 {
			s.count("recovery: redelivered after a failure or crash")
		}
		ds[i] = delivery{s, m}
	}
	e := s.engines[dest]
	a.name = "worker@" + dest
	if len(ms) > 1 {
		a.name = "batch worker@" + dest
	}
	a.run = func(ctx context.Context) {
		if len(ds) == 1 {
			s.trace("deliver %s (%s) attempt %d", short(ms[0].sig.ID), ms[0].sig.Type, ms[0].attempt)
			e.HandleDelivery(ctx, ds[0])
			return
		}
		s.trace("deliver a batch of %d to %s", len(ds), dest)
		e.HandleDeliveries(ctx, ds)
	}
	s.start(a)
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
