package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/transport"
)

// Run receives signals for the engine's destination from Config.Source and
// processes them with Config.Workers workers, and sweeps every
// SweepInterval, until ctx ends. Then it stops taking signals, waits up to
// ShutdownTimeout for those in progress, and returns nil. Unacknowledged
// signals are redelivered by the transport; nothing is lost by stopping.
//
// Without a Source (a destination fed only by HTTP), Run only sweeps.
func (e *Engine) Run(ctx context.Context) error {
	var sub transport.Subscription
	if e.cfg.Source != nil {
		var err error
		sub, err = e.cfg.Source.Subscribe(ctx, e.cfg.Destination)
		if err != nil {
			return fmt.Errorf("engine: subscribe to %q: %w", e.cfg.Destination, err)
		}
		defer sub.Close()
	}

	// Work in progress gets its own context, cancelled only when the
	// shutdown timeout runs out after ctx ends.
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	stop := context.AfterFunc(ctx, func() {
		time.AfterFunc(e.cfg.ShutdownTimeout, cancelWork)
	})
	defer stop()

	var wg sync.WaitGroup
	if sub != nil {
		wg.Go(func() { e.workByEntity(ctx, work, sub) })
	}
	wg.Go(func() { e.sweepLoop(ctx, work) })
	workersDone := make(chan struct{})
	removing := make(chan struct{})
	if e.cfg.DeferRemovals {
		go func() {
			defer close(removing)
			e.removeLoop(work, workersDone)
		}()
	} else {
		close(removing)
	}
	wg.Wait()
	close(workersDone)
	<-removing
	return nil
}

// receive returns the next delivery, retrying failures to receive, until
// ctx ends or sub is closed (false).
func (e *Engine) receive(ctx context.Context, sub transport.Subscription) (transport.Delivery, bool) {
	for {
		if !e.waitForStores(ctx) {
			return nil, false
		}
		d, err := sub.Next(ctx)
		if err == nil {
			return d, true
		}
		if ctx.Err() != nil || errors.Is(err, transport.ErrClosed) {
			return nil, false
		}
		e.log.Warn("receive failed", "err", err)
		if e.cfg.Sleep(ctx, e.backoff(4)) != nil {
			return nil, false
		}
	}
}

// workByEntity receives with Workers receivers into a buffer that Workers
// workers drain. A worker takes an entity before it processes a delivery
// for it (entityGate): a delivery whose entity another worker holds waits
// for that worker, which processes it next. So two workers of this process
// never race for an entity's version (a conflict costs a reload and a
// rerun of the activity), and a slow entity holds back only its own
// deliveries. With Config.Batch above 1 and stores that work in batches a
// worker takes what the buffer holds and the deliveries waiting for the
// entities it holds, up to Batch, never waiting for more, and processes
// them together, those for one entity as a chain (ProcessBatch). Deliveries wait against
// the transport's redelivery timeout (NATS AckWait); how many wait is
// bounded by how many the transport hands out unacknowledged. After ctx
// ends the receivers stop and the workers finish what the buffer holds,
// with the work context that ShutdownTimeout ends.
func (e *Engine) workByEntity(ctx, work context.Context, sub transport.Subscription) {
	batch := 1
	if e.batcher != nil || e.plain != nil {
		batch = e.cfg.Batch
	}
	received := make(chan transport.Delivery, e.cfg.Workers*batch)
	gate := entityGate{held: map[string][]transport.Delivery{}}
	var receivers, workers sync.WaitGroup
	for range e.cfg.Workers {
		receivers.Go(func() {
			for {
				d, ok := e.receive(ctx, sub)
				if !ok {
					return
				}
				received <- d
			}
		})
		workers.Go(func() { e.workHolding(work, received, &gate, batch) })
	}
	receivers.Wait()
	close(received)
	workers.Wait()
}

// workHolding is one worker of workByEntity. Each round it takes the
// deliveries waiting for the entities it holds, fills up to batch with
// deliveries from received (never waiting for more, unless it has nothing
// at all), taking their entities, and processes the round: deliveries for
// one entity in one round make a chain (ProcessBatch). A delivery for an
// entity another worker holds is left to that worker.
func (e *Engine) workHolding(work context.Context, received <-chan transport.Delivery, gate *entityGate, batch int) {
	held := map[string]bool{}
	var round []transport.Delivery
	for {
		round = round[:0]
		for key := range held {
			waiting, still := gate.next(key, batch-len(round))
			if !still {
				delete(held, key)
				continue
			}
			round = append(round, waiting...)
		}
		for len(round) < batch {
			var d transport.Delivery
			more := true
			if len(round) == 0 {
				d, more = <-received // nothing to do: wait
			} else {
				select {
				case d, more = <-received:
				default:
					more = false // nothing ready: go with what there is
				}
			}
			if !more {
				break
			}
			key := e.entityOf(d.Signal())
			if held[key] || gate.take(key, d) {
				round, held[key] = append(round, d), true
			}
		}
		switch len(round) {
		case 0:
			return // received is closed and nothing is held
		case 1:
			e.HandleDelivery(work, round[0])
		default:
			e.HandleDeliveries(work, round)
		}
	}
}

// entityOf is the key under which a delivery of sig takes its entity: the
// entity's key, or for a signal that routes nowhere (refused when
// processed) its token id.
func (e *Engine) entityOf(sig baton.Signal) string {
	if _, key, err := e.route(sig); err == nil {
		return "entity:" + key
	}
	return "token:" + sig.ID.String()
}

// entityGate lets one worker at a time hold an entity. A delivery for an
// entity that is held waits in the holder's list, which the holder works
// through before it lets the entity go.
type entityGate struct {
	mu   sync.Mutex
	held map[string][]transport.Delivery // present: held; the value: waiting deliveries
}

// take holds key for the caller and reports true, or queues d for the
// worker that holds key and reports false.
func (g *entityGate) take(key string, d transport.Delivery) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if waiting, held := g.held[key]; held {
		g.held[key] = append(waiting, d)
		return false
	}
	g.held[key] = nil
	return true
}

// next returns up to n of the deliveries waiting for key, which stays
// held (still), or lets key go when none waits.
func (g *entityGate) next(key string, n int) (waiting []transport.Delivery, still bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	queued := g.held[key]
	if len(queued) == 0 {
		delete(g.held, key)
		return nil, false
	}
	n = min(n, len(queued))
	waiting = slices.Clone(queued[:n])
	clear(queued[:n])
	g.held[key] = queued[n:]
	return waiting, true
}

// HandleDelivery processes one delivery and acknowledges, retries or parks
// it according to the outcome.
func (e *Engine) HandleDelivery(ctx context.Context, d transport.Delivery) {
	if e.ordering == orderingAckFirst {
		_ = d.Ack(ctx)
		_, _ = e.Process(ctx, d.Signal())
		return
	}
	_, err := e.Process(ctx, d.Signal())
	e.settle(ctx, d, err)
}

// HandleDeliveries processes deliveries of Config.Source together, as
// ProcessBatch does, and acknowledges, retries or parks each according to
// its outcome: those the batch finished at once (the acknowledgements in
// one exchange where the Source is a transport.BatchAcker), then each of
// the others as HandleDelivery does, so that a slow one (conflict retries
// on a hot entity) holds back only itself.
func (e *Engine) HandleDeliveries(ctx context.Context, ds []transport.Delivery) {
	sigs := make([]baton.Signal, len(ds))
	for i, d := range ds {
		sigs[i] = d.Signal()
	}
	results, errs := make([]Result, len(ds)), make([]error, len(ds))
	alone := e.processTogether(ctx, sigs, results, errs)
	left := make(map[int]bool, len(alone))
	for _, i := range alone {
		left[i] = true
	}
	var done []transport.Delivery
	for i, d := range ds {
		switch {
		case left[i]:
		case errs[i] == nil:
			done = append(done, d)
		default:
			e.settle(ctx, d, errs[i])
		}
	}
	e.ack(ctx, done...)
	for _, i := range alone {
		e.HandleDelivery(ctx, ds[i])
	}
}

// ack acknowledges deliveries that were processed (or were duplicates). A
// failed acknowledgement costs a redelivery, which finds the token gone.
func (e *Engine) ack(ctx context.Context, ds ...transport.Delivery) {
	for i, err := range transport.AckAll(ctx, e.cfg.Source, ds) {
		if err != nil {
			sig := ds[i].Signal()
			e.log.Warn("ack failed; the signal will be redelivered and dropped as a duplicate",
				"conversation", sig.Conversation, "token", sig.ID, "type", sig.Type, "attempt", ds[i].Attempt(), "err", err)
		}
	}
}

// settle acknowledges, retries or parks a delivery whose processing ended
// with err.
func (e *Engine) settle(ctx context.Context, d transport.Delivery, err error) {
	sig := d.Signal()
	log := e.log.With("conversation", sig.Conversation, "token", sig.ID, "type", sig.Type, "attempt", d.Attempt())
	// Ended by the work context (the shutdown timeout), the stores'
	// "not applied" says so, not that they are down: checkStores skips it.
	e.checkStores(ctx, err)
	switch {
	case err == nil:
		e.ack(ctx, d)
	case IsPermanent(err) || d.Attempt() >= e.cfg.MaxAttempts:
		e.stats.add(ctx, statParked, 1)
		e.emitEvent(Event{Kind: EventParked, Signal: sig, Reason: err.Error()})
		log.Error("signal parked; its token stays live", "err", err)
		if perr := d.Park(ctx, err.Error()); perr != nil {
			log.Warn("park failed", "err", perr)
		}
	case e.ordering == orderingAckOnRetry:
		_ = d.Ack(ctx)
	default:
		log.Info("processing failed; will retry", "err", err)
		if err := d.Nack(ctx, e.redeliveryDelay(d.Attempt())); err != nil {
			log.Warn("nack failed", "err", err)
		}
	}
}

func (e *Engine) sweepLoop(ctx, work context.Context) {
	for e.cfg.Sleep(ctx, e.cfg.SweepInterval) == nil {
		if e.pause.isPaused() && !e.resumeIfStoresAnswer(work) {
			continue // the outage was logged once, when it began
		}
		if n, err := e.Sweep(work); err != nil {
			e.stats.add(work, statSweepFailures, 1)
			if e.checkStores(work, err); e.pause.isPaused() {
				continue // the outage was logged once, when it began
			}
			e.log.Warn("sweep failed", "err", err, "finished", n)
		}
	}
}

// redeliveryDelay grows exponentially with the attempt, from RedeliveryDelay
// up to 64 times it, with jitter so that retries of many signals spread out.
func (e *Engine) redeliveryDelay(attempt int) time.Duration {
	limit := e.cfg.RedeliveryDelay << min(max(attempt-1, 0), 6)
	return limit/2 + e.jitter(limit/2)
}
