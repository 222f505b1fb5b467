package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
)

// pause stops Run from receiving while the stores do not answer. Every
// delivery counts towards MaxAttempts (and the transport's own limit), so
// receiving on through an outage would park every signal in flight once
// the outage outlasts their redeliveries (about 25 to 50s with the
// defaults), for an operator to replay by hand. Paused, the engine
// receives nothing; the deliveries it holds are retried as usual, and the
// broker keeps the others. It logs the outage once and its end once.
type pause struct {
	mu     sync.Mutex
	paused bool
	since  time.Time
	// probing is set while a delivery's failure is being checked
	// (checkStores): one check at a time.
	probing atomic.Bool
}

func (p *pause) isPaused() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.paused
}

// pauseReceiving pauses receiving after a call failed with err and a
// probe of the stores did not get an answer (checkStores).
func (e *Engine) pauseReceiving(err error) {
	e.pause.mu.Lock()
	defer e.pause.mu.Unlock()
	if e.pause.paused {
		return
	}
	e.pause.paused, e.pause.since = true, e.cfg.Now()
	e.log.Warn("stores do not answer: receiving and sweeping paused until they do; the signals wait (in the broker, or in their senders' outboxes) and their tokens stay live",
		"err", err)
}

// activityError is an activity's own failure (runActivity): it says
// nothing of the engine's stores, whatever it wraps (an activity that
// calls a token service or a store of its own may fail with
// store.ErrNotApplied), so it neither pauses receiving nor probes them.
type activityError struct{ err error }

func (a activityError) Error() string { return a.err.Error() }
func (a activityError) Unwrap() error { return a.err }

func isActivityError(err error) bool {
	var a activityError
	return errors.As(err, &a)
}

// probeKey and probeToken are an entity key and a token id that
// probeStores reads; reading them changes nothing.
const probeKey = "baton.probe"

var probeToken = baton.TokenID{0xba, 0x70, 0x4e, 0x48, 0xea, 0x17, 0x42}

// probeStores reads a token and an entity that need not exist, each
// within CallTimeout, and returns an error unless both stores answer (the
// token absent or found, or refused to this system: the token service
// does not show another destination's token, and another system may hold
// one with this id; the entity loaded).
func (e *Engine) probeStores(ctx context.Context) error {
	ctx, cancel := e.bounded(ctx)
	defer cancel()
	if _, err := e.cfg.Tokens.Get(ctx, probeToken); err != nil && !store.Answered(err) {
		return err
	}
	if _, err := e.cfg.Entities.Load(ctx, probeKey); err != nil && !store.Answered(err) {
		return err
	}
	return nil
}

// checkStores probes the stores after a delivery or a sweep failed with
// err, a store's failure (not an answer such as a token not found, nor an
// activity's own error), and pauses receiving if they do not answer. The
// failed call alone does not say that they are down: one that timed out or
// whose connection was cut (as in a database's failover) has an unknown
// outcome, and a store answers "not applied" to calls that it refused or
// rolled back while it is up (a deadlock, a value too long for its column,
// a serialization failure), which an attacker's signal may provoke at will;
// pausing on those would stop the whole engine for one signal. One check
// at a time; a failure while one runs is not checked again.
func (e *Engine) checkStores(ctx context.Context, err error) {
	if err == nil || IsPermanent(err) || store.Answered(err) || isActivityError(err) ||
		ctx.Err() != nil || e.pause.isPaused() {
		return
	}
	if !e.pause.probing.CompareAndSwap(false, true) {
		return
	}
	defer e.pause.probing.Store(false)
	if perr := e.probeStores(ctx); perr != nil && ctx.Err() == nil {
		e.pauseReceiving(fmt.Errorf("%w (a call failed with: %w)", perr, err))
	}
}

// waitForStores returns at once while receiving is not paused; paused, it
// probes the stores with a growing delay (RedeliveryDelay up to 64 times
// it) until they answer, and resumes receiving. It reports false when ctx
// ended first.
func (e *Engine) waitForStores(ctx context.Context) bool {
	delay := e.cfg.RedeliveryDelay
	for e.pause.isPaused() {
		if e.cfg.Sleep(ctx, delay) != nil {
			return false
		}
		delay = min(2*delay, 64*e.cfg.RedeliveryDelay)
		e.resumeIfStoresAnswer(ctx)
	}
	return ctx.Err() == nil
}

// resumeIfStoresAnswer probes the stores and, if they answer, ends the
// pause (logging it once) and reports true.
func (e *Engine) resumeIfStoresAnswer(ctx context.Context) bool {
	if e.probeStores(ctx) != nil {
		return false
	}
	e.pause.mu.Lock()
	defer e.pause.mu.Unlock()
	if e.pause.paused {
		e.pause.paused = false
		e.log.Info("stores answer again: receiving resumed", "paused_for", e.cfg.Now().Sub(e.pause.since).Round(time.Millisecond).String())
	}
	return true
}
