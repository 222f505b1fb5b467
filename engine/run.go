package engine

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
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

// workByEntity receives with Workers receivers and hands each delivery to
// the worker of its entity, so that the deliveries for one entity are
// processed one after the other by one worker: two workers of this process
// never race for an entity's version (a conflict costs a reload and a
// rerun of the activity). With Config.Batch above 1 on the fast path a
// worker takes what its queue holds, up to Batch deliveries, never waiting
// for more, and processes them together. Deliveries wait in the queues
// against the transport's redelivery timeout (NATS AckWait). After ctx ends
// the receivers stop and the workers finish what the queues hold, with the
// work context that ShutdownTimeout ends.
func (e *Engine) workByEntity(ctx, work context.Context, sub transport.Subscription) {
	batch := 1
	if e.batcher != nil {
		batch = e.cfg.Batch
	}
	queues := make([]chan transport.Delivery, e.cfg.Workers)
	for i := range queues {
		queues[i] = make(chan transport.Delivery, 2*batch)
	}
	var receivers, workers sync.WaitGroup
	for range e.cfg.Workers {
		receivers.Go(func() {
			for {
				d, ok := e.receive(ctx, sub)
				if !ok {
					return
				}
				queues[e.workerOf(d.Signal())] <- d
			}
		})
	}
	for _, queue := range queues {
		workers.Go(func() {
			for d := range queue {
				if batch == 1 {
					e.HandleDelivery(work, d)
					continue
				}
				ds := []transport.Delivery{d}
			gather:
				for len(ds) < batch {
					select {
					case d, ok := <-queue:
						if !ok {
							break gather
						}
						ds = append(ds, d)
					default:
						break gather
					}
				}
				e.HandleDeliveries(work, ds)
			}
		})
	}
	receivers.Wait()
	for _, queue := range queues {
		close(queue)
	}
	workers.Wait()
}

// workerOf is the worker that processes sig: one per entity key. A signal
// that routes nowhere (refused when processed) goes by its token id.
func (e *Engine) workerOf(sig baton.Signal) int {
	h := fnv.New32a()
	if _, key, err := e.route(sig); err == nil {
		h.Write([]byte(key))
	} else {
		h.Write(sig.ID[:])
	}
	return int(h.Sum32() % uint32(e.cfg.Workers))
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

// HandleDeliveries processes deliveries together, as ProcessBatch does,
// and acknowledges, retries or parks each according to its outcome: those
// each round finished at once, then each of the others as HandleDelivery
// does, so that a slow one (conflict retries on a hot entity) holds back
// only itself.
func (e *Engine) HandleDeliveries(ctx context.Context, ds []transport.Delivery) {
	sigs := make([]baton.Signal, len(ds))
	for i, d := range ds {
		sigs[i] = d.Signal()
	}
	results, errs := make([]Result, len(ds)), make([]error, len(ds))
	var alone []int
	for pending := allIndexes(len(ds)); len(pending) > 0; {
		a, later := e.processTogether(ctx, sigs, pending, results, errs)
		left := make(map[int]bool, len(a)+len(later))
		for _, i := range slices.Concat(a, later) {
			left[i] = true
		}
		for _, i := range pending {
			if !left[i] {
				e.settle(ctx, ds[i], errs[i])
			}
		}
		alone = append(alone, a...)
		pending = later
	}
	for _, i := range alone {
		e.HandleDelivery(ctx, ds[i])
	}
}

// settle acknowledges, retries or parks a delivery whose processing ended
// with err.
func (e *Engine) settle(ctx context.Context, d transport.Delivery, err error) {
	sig := d.Signal()
	log := e.log.With("conversation", sig.Conversation, "token", sig.ID, "type", sig.Type, "attempt", d.Attempt())
	switch {
	case err == nil:
		if err := d.Ack(ctx); err != nil {
			log.Warn("ack failed; the signal will be redelivered and dropped as a duplicate", "err", err)
		}
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
		if n, err := e.Sweep(work); err != nil {
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
