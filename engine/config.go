package engine

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
	"github.com/batonhq/baton/transport"
)

// Publisher sends a signal on its way: a transport, an HTTP client, or
// Routes choosing between them. Publish returns nil once the medium accepted
// the signal or the receiver answered that its token is already consumed.
// An error wrapping ErrRejected means the receiver refused the signal for
// good; any other error is retried.
type Publisher interface {
	Publish(ctx context.Context, sig baton.Signal) error
}

// Config configures an Engine. Zero values are replaced by the documented
// defaults; New rejects a Config that lacks a required field.
type Config struct {
	// Destination is the name of the system this engine processes signals
	// for. Required.
	Destination string
	// Tokens is the shared token store. Required.
	Tokens store.TokenStore
	// Entities is this destination's entity store. Required.
	Entities store.EntityStore
	// Dispatch sends emitted signals. Required.
	Dispatch Publisher
	// NoFastPath turns off the fast path, which is otherwise used when
	// Tokens and Entities are the same store value and it implements
	// store.CommitTransitioner (one transaction for steps 4 and 5).
	NoFastPath bool
	// DeferRemovals lets Process return, and Run acknowledge the signal,
	// once the emitted signals are dispatched, before the outbox entry is
	// removed (step 7, which protocol.md 3.2 lets happen later). The removal is
	// queued; Run removes queued entries in the background, in batches (one
	// operation for many when the entity store is a store.BatchCommitter),
	// and RemovePending does it on demand. A removal lost to a crash leaves
	// its entry to the sweeper, which finishes it as any entry. The zero
	// value removes the entry inside Process.
	DeferRemovals bool
	// Source is the transport that Run receives signals from. Optional: an
	// engine fed only by HTTP calls Process directly.
	Source transport.Transport
	// Subscriptions maps a topic to the destinations that receive signals
	// published to it (one signal and one token per destination).
	Subscriptions map[string][]string

	// Workers is the number of signals (or batches, with Batch) Run
	// processes at once. A worker holds an entity while it processes a
	// delivery for it; deliveries for a held entity wait for the worker
	// that holds it, so the workers never conflict on an entity's version,
	// and a slow entity holds back only its own deliveries. Default 4.
	Workers int
	// Batch is the most deliveries one worker of Run takes together, of
	// those already received, when the stores work in batches
	// (ProcessBatch): on the fast path a store.TransitionBatcher reads
	// their entities and tokens in one call and commits them in one; on
	// the plain path the entity store (store.BatchLoader,
	// store.BatchCommitter) and the token store (store.TokenBatcher) each
	// take the batch's reads, and its commits, in one call. Deliveries for
	// one entity make a chain, committed once with all their outbox
	// entries; the deliveries waiting for an entity the worker holds join
	// its next batch. A worker never waits for a batch to fill, so a quiet
	// engine processes signals one by one as before. Run keeps up to
	// Workers*Batch received deliveries waiting for a worker (they age
	// against the transport's redelivery timeout). 0 or 1: one signal at a
	// time. With stores that cannot work in batches, Run takes one
	// delivery at a time, and New logs why.
	Batch int
	// MaxAttempts is how many deliveries of a signal fail before it is
	// parked. Default 10.
	MaxAttempts int
	// MaxConflictRetries bounds how often one Process call retries after
	// version conflicts before it gives up (and the delivery is retried).
	// Default 100.
	MaxConflictRetries int
	// DispatchAttempts is how often Process tries to publish one emitted
	// signal before it leaves the rest to redelivery or the sweeper.
	// Default 5.
	DispatchAttempts int
	// RetryDelay is the first delay of the exponential backoffs (conflicts,
	// dispatch, redelivery). Default 5ms; the backoff is capped at 200 times
	// this.
	RetryDelay time.Duration
	// RedeliveryDelay is the first delay before a signal whose processing
	// failed is delivered again; it doubles per attempt up to 64 times
	// this. Default 200ms.
	RedeliveryDelay time.Duration
	// SweepAfter is how old an outbox entry must be before the sweeper
	// finishes it. Default 30s.
	SweepAfter time.Duration
	// SweepInterval is how often Run sweeps. Default 10s.
	SweepInterval time.Duration
	// RootExpiryGrace is how long after its expiry an unused root token is
	// deleted. It must exceed the longest processing of one signal, because
	// a root admitted just before its expiry is consumed after it. Default
	// 10m. A token store that does not let this system delete them
	// (store.ErrForbidden: the token service, to a system without
	// expire_roots) leaves it to one that may, and the sweep carries on.
	RootExpiryGrace time.Duration
	// CallTimeout bounds each call to a store or to Dispatch; a call that
	// runs out is an error whose outcome is unknown, and is retried.
	// Default 30s.
	CallTimeout time.Duration
	// ShutdownTimeout bounds how long Run waits for signals in progress
	// after its context ends. Default 30s.
	ShutdownTimeout time.Duration

	// TracerProvider and MeterProvider receive spans and metrics. Nil means
	// the OpenTelemetry globals (no-ops unless the program installs SDKs).
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider

	// OnEvent, if set, is called synchronously for every Event; it must be
	// quick and must not block. Dashboards use it to draw conversations.
	OnEvent func(Event)

	// Logger receives structured logs. Nil discards them.
	Logger *slog.Logger
	// Now is the clock. Nil means time.Now.
	Now func() time.Time
	// Sleep waits for d or until ctx ends. Nil means a timer.
	Sleep func(ctx context.Context, d time.Duration) error
	// Random is the source of token ids and jitter. Nil means crypto/rand.
	// Only a deterministic simulation sets it.
	Random io.Reader
}

func (c *Config) setDefaults() {
	defaultInt(&c.Workers, 4)
	defaultInt(&c.MaxAttempts, 10)
	defaultInt(&c.MaxConflictRetries, 100)
	defaultInt(&c.DispatchAttempts, 5)
	defaultDuration(&c.RetryDelay, 5*time.Millisecond)
	defaultDuration(&c.RedeliveryDelay, 200*time.Millisecond)
	defaultDuration(&c.SweepAfter, 30*time.Second)
	defaultDuration(&c.SweepInterval, 10*time.Second)
	defaultDuration(&c.RootExpiryGrace, 10*time.Minute)
	defaultDuration(&c.CallTimeout, 30*time.Second)
	defaultDuration(&c.ShutdownTimeout, 30*time.Second)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Sleep == nil {
		c.Sleep = sleep
	}
	if c.Random == nil {
		c.Random = rand.Reader
	}
}

func (c *Config) validate() error {
	probe := baton.Emit{Destination: c.Destination, Type: "probe"}
	if err := probe.Validate(); err != nil {
		return fmt.Errorf("engine: config: destination: %w", err)
	}
	switch {
	case c.Tokens == nil:
		return fmt.Errorf("engine: config: Tokens is required")
	case c.Entities == nil:
		return fmt.Errorf("engine: config: Entities is required")
	case c.Dispatch == nil:
		return fmt.Errorf("engine: config: Dispatch is required")
	}
	for topic, destinations := range c.Subscriptions {
		for _, d := range destinations {
			if err := (baton.Emit{Topic: topic, Type: "probe"}).Validate(); err != nil {
				return fmt.Errorf("engine: config: subscription: %w", err)
			}
			if err := (baton.Emit{Destination: d, Type: "probe"}).Validate(); err != nil {
				return fmt.Errorf("engine: config: subscription to %q: %w", topic, err)
			}
		}
	}
	if c.Workers < 0 || c.Batch < 0 || c.MaxAttempts < 0 || c.MaxConflictRetries < 0 || c.DispatchAttempts < 0 {
		return fmt.Errorf("engine: config: counts must not be negative")
	}
	if c.Batch > MaxBatch {
		return fmt.Errorf("engine: config: Batch %d is above %d", c.Batch, MaxBatch)
	}
	return nil
}

// MaxBatch is the largest Config.Batch.
const MaxBatch = 256

func defaultInt(v *int, d int) {
	if *v == 0 {
		*v = d
	}
}

func defaultDuration(v *time.Duration, d time.Duration) {
	if *v <= 0 {
		*v = d
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Routes is a Publisher that picks a publisher by destination; the entry
// under "" is the default.
type Routes map[string]Publisher

// Publish implements Publisher.
func (r Routes) Publish(ctx context.Context, sig baton.Signal) error {
	p, ok := r[sig.Destination]
	if !ok {
		p, ok = r[""]
	}
	if !ok || p == nil {
		return fmt.Errorf("%w: no route to destination %q", ErrRejected, sig.Destination)
	}
	return p.Publish(ctx, sig)
}
