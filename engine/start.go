package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
)

// startRootTTL is how long the root of a start may stay unclaimed on the
// plain path. Launch claims it right after issuing it; the expiry only
// cleans up a root whose launch crashed before it was recorded.
const startRootTTL = 15 * time.Minute

// ErrNoStarts is returned by StartTx and Launch when the entity store does
// not record starts in the caller's transactions (store.Starter).
var ErrNoStarts = errors.New("engine: the entity store does not record starts")

// StartTx starts a conversation inside the caller's transaction tx of the
// entity store's database: it records the root signal to send, so that the
// caller's own writes and the start are committed both or neither. A
// rolled-back transaction starts nothing and, where the token store is the
// same database, leaves no token either.
//
// After tx commits, call Launch with the start to send its signal; if the
// caller dies first, the sweeper launches it. The start's ID is the
// conversation's id, known at once.
//
// When the token store is the same database (the fast path), the root
// token is created in tx too. Otherwise Launch issues the root after the
// commit (see Launch), and a rolled-back transaction leaves nothing at all.
func StartTx[Tx any](ctx context.Context, e *Engine, tx Tx, emit baton.Emit) (store.Start, error) {
	starter, ok := e.cfg.Entities.(store.Starter[Tx])
	if !ok {
		return store.Start{}, fmt.Errorf("%w: %T in transactions of type %T", ErrNoStarts, e.cfg.Entities, tx)
	}
	if emit.Topic != "" {
		return store.Start{}, fmt.Errorf("%w: a root signal goes to one destination, not a topic", baton.ErrInvalidSignal)
	}
	if err := emit.Validate(); err != nil {
		return store.Start{}, err
	}
	id, err := e.newTokenID()
	if err != nil {
		return store.Start{}, err
	}
	now := e.cfg.Now()
	start := store.Start{ID: id, Destination: emit.Destination, Type: emit.Type, Payload: emit.Payload,
		Trace: e.traceContext(ctx), CreatedAt: now}
	var root *baton.Token
	if e.fast != nil {
		tok := start.RootToken(now, time.Time{})
		root = &tok
	}
	recorded, err := starter.RecordStart(ctx, tx, start, root)
	if err != nil {
		return store.Start{}, fmt.Errorf("engine: record start: %w", err)
	}
	return recorded, nil
}

// Launch sends the root signal of a start whose transaction committed,
// and then forgets the start. It is safe to call any number of times, from
// any process, for the same start, and the sweeper calls it for starts
// nobody launched. It reads the start first, and returns the signal sent,
// or the zero signal, having sent nothing, for a start that was launched
// before or whose transaction rolled back (it is not recorded). Launches
// that run at the same time may each send the signal; its receiver drops
// the copies.
//
// On the plain path it first issues the root token, records its id,
// claims it (it then no longer expires) and records that, each step a
// compare-and-set of the start: the signal is sent only once its root is
// claimed, so a root issued by a launch that crashed before recording it
// is never sent and expires, and a root whose claim failed is replaced by
// a new one. The root is thus issued at most a few times, and only one of
// them is ever sent.
func (e *Engine) Launch(ctx context.Context, start store.Start) (baton.Signal, error) {
	starts, ok := e.cfg.Entities.(store.Starts)
	if !ok {
		return baton.Signal{}, ErrNoStarts
	}
	for attempt := 0; ; attempt++ {
		// Read it first, also when the caller's copy is claimed (the fast
		// path): a start launched already, or whose transaction rolled
		// back, is not recorded, and must neither get a root that would
		// never be sent nor send its signal (again), count as launched
		// or show on a dashboard as a conversation that never began.
		current, err := e.loadStart(ctx, starts, start.ID)
		if errors.Is(err, store.ErrNotFound) {
			return baton.Signal{}, nil
		}
		if err != nil {
			return baton.Signal{}, fmt.Errorf("engine: launch start %s: %w", start.ID, err)
		}
		start = current
		ready, err := e.prepareStart(ctx, starts, start)
		if errors.Is(err, store.ErrConflict) && attempt < e.cfg.MaxConflictRetries {
			continue // another launch moved it on: carry on from what it did
		}
		if errors.Is(err, store.ErrNotFound) {
			return baton.Signal{}, nil // another launch finished it
		}
		if err != nil {
			return baton.Signal{}, fmt.Errorf("engine: launch start %s: %w", start.ID, err)
		}
		sig := ready.Signal()
		if err := e.dispatch(ctx, sig); err != nil {
			return sig, fmt.Errorf("engine: launch start %s: %w", start.ID, err)
		}
		if err := e.deleteStart(ctx, starts, start.ID); err != nil {
			return sig, fmt.Errorf("engine: forget launched start %s: %w", start.ID, err)
		}
		e.stats.add(ctx, statStartsLaunched, 1)
		e.emitEvent(Event{Kind: EventRootIssued, Signal: sig})
		return sig, nil
	}
}

// prepareStart returns start with a claimed root, issuing and claiming one
// as needed and recording each step; ErrConflict means another launch
// changed the start meanwhile.
func (e *Engine) prepareStart(ctx context.Context, starts store.Starts, start store.Start) (store.Start, error) {
	for !start.Claimed {
		if start.Root.IsZero() {
			now := e.cfg.Now()
			root, err := e.issue(ctx, start.RootToken(now, now.Add(startRootTTL)))
			if err != nil {
				return start, fmt.Errorf("issue root: %w", err)
			}
			e.stats.add(ctx, statRootsIssued, 1)
			start.Root = root.ID
			if start, err = e.updateStart(ctx, starts, start); err != nil {
				return start, err
			}
		}
		_, err := e.claimRoot(ctx, start.ID, start.Root)
		switch {
		case err == nil:
			start.Claimed = true
		case errors.Is(err, store.ErrExpired), errors.Is(err, store.ErrNotFound):
			// Never sent (the signal goes only after the claim is
			// recorded), so a new root replaces it safely.
			start.Root = baton.TokenID{}
		default:
			return start, fmt.Errorf("claim root: %w", err)
		}
		var uerr error
		if start, uerr = e.updateStart(ctx, starts, start); uerr != nil {
			return start, uerr
		}
	}
	return start, nil
}

// sweepStarts launches the starts recorded before cutoff that nobody
// launched: their caller died after its commit, or its launch failed.
func (e *Engine) sweepStarts(ctx context.Context, cutoff time.Time) (int, error) {
	starts, ok := e.cfg.Entities.(store.Starts)
	if !ok {
		return 0, nil
	}
	pending, err := e.pendingStarts(ctx, starts, cutoff)
	if err != nil {
		return 0, fmt.Errorf("engine: sweep starts: %w", err)
	}
	launched := 0
	var errs []error
	for _, start := range pending {
		if ctx.Err() != nil {
			errs = append(errs, ctx.Err())
			break
		}
		if _, err := e.Launch(ctx, start); err != nil {
			errs = append(errs, err)
			continue
		}
		launched++
		e.log.Info("sweeper launched a start", "start", start.ID)
	}
	return launched, errors.Join(errs...)
}
