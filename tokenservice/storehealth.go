package tokenservice

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/internal/outage"
	"github.com/batonhq/baton/store"
)

// storeReportInterval is how often, at most, the log says that the token
// store does not answer: a busy service meets an outage in every request,
// and a line for each would bury the one that says what happened.
const storeReportInterval = time.Minute

// storeDurationBuckets are the bounds, in seconds, of the histogram of
// store calls: from a fraction of a millisecond (a local Redis) to the
// seconds of a call that times out.
var storeDurationBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// storeHealth watches the outcome of every call to the token store: it
// times them and counts the failures (metrics), and logs when the store
// stops answering and when it answers again, instead of once per request.
// Reads and writes are watched apart: a store that refuses writes (a full
// disk, a read-only replica, too few replicas) still answers reads, and a
// read that works says nothing of writes.
type storeHealth struct {
	log      *slog.Logger
	now      func() time.Time
	duration metric.Float64Histogram
	errors   metric.Int64Counter

	mu            sync.Mutex
	reads, writes outage.Spell
	wrote         time.Time // when a write last succeeded
}

// writeOps are the operations that write; readOps those that read.
var (
	writeOps = map[string]bool{"issue": true, "claim": true, "transition": true, "transition_batch": true, "expire_roots": true}
	readOps  = []string{"get", "get_batch", "list_conversation", "list_destination"}
)

func newStoreHealth(log *slog.Logger, mp metric.MeterProvider) *storeHealth {
	meter := mp.Meter("github.com/batonhq/baton/tokenservice")
	h := &storeHealth{log: log, now: time.Now}
	// An instrument that fails to register only loses its export.
	h.duration, _ = meter.Float64Histogram("baton.token_store.duration", metric.WithUnit("s"),
		metric.WithDescription("Time a call to the token store took, by operation."),
		metric.WithExplicitBucketBoundaries(storeDurationBuckets...))
	h.errors, _ = meter.Int64Counter("baton.token_store.errors",
		metric.WithDescription("Calls to the token store that failed, by operation and outcome (not_applied: nothing was written; unknown: the outcome is unknown)."))
	// Exported at zero from the start: a series that appears at 1 shows
	// Prometheus no increase, so an alert on the first failure would not
	// fire.
	if h.errors != nil {
		ops := slices.Concat(slices.Collect(maps.Keys(writeOps)), readOps)
		for _, op := range ops {
			for _, outcome := range []string{"not_applied", "unknown"} {
				h.errors.Add(context.Background(), 0, metric.WithAttributes(attribute.String("op", op), attribute.String("outcome", outcome)))
			}
		}
	}
	return h
}

// storeFailure reports whether err means that the store did not answer,
// and how: an answer (a token not live, one that exists, an invalid
// request) is not a failure, nor is a request whose caller went away.
func storeFailure(ctx context.Context, err error) (outcome string, failed bool) {
	switch {
	case err == nil, store.Answered(err):
		return "", false
	case ctx.Err() != nil && errors.Is(err, context.Canceled):
		return "", false
	case errors.Is(err, store.ErrNotApplied), errors.Is(err, store.ErrClosed):
		return "not_applied", true
	}
	return "unknown", true
}

// observe records one call of op that started at started and ended with err.
func (h *storeHealth) observe(ctx context.Context, op string, started time.Time, err error) {
	opAttr := attribute.String("op", op)
	h.duration.Record(ctx, time.Since(started).Seconds(), metric.WithAttributes(opAttr))
	outcome, failed := storeFailure(ctx, err)
	if failed {
		h.errors.Add(ctx, 1, metric.WithAttributes(opAttr, attribute.String("outcome", outcome)))
	} else if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return // the caller went away: says nothing about the store
	}
	kind, o := "reads", &h.reads
	if writeOps[op] {
		kind, o = "writes", &h.writes
	}
	now := h.now()
	h.mu.Lock()
	defer h.mu.Unlock()
	if !failed {
		if writeOps[op] {
			h.wrote = now
		}
		if ended := o.End(); ended.Logged() {
			h.log.Info("token store answers "+kind+" again", "down_for", now.Sub(ended.Since()).Round(time.Millisecond).String(),
				"failed_calls", ended.Failures())
		}
		return
	}
	line, due := o.Failed(now, storeReportInterval)
	if !due {
		return
	}
	if line.First {
		h.log.Error("token store fails "+kind+": requests get 503 (nothing applied) or 500 (outcome unknown, retrying is safe) until it answers; check that the store runs, is reachable and accepts writes",
			"op", op, "err", err)
		return
	}
	h.log.Error("token store still fails "+kind, "since", line.Since.UTC().Format(time.RFC3339),
		"failed_calls", line.Failed, "op", op, "err", err)
}

// writesProven reports whether a write succeeded within fresh and none
// failed after it.
func (h *storeHealth) writesProven(fresh time.Duration) bool {
	now := h.now()
	h.mu.Lock()
	defer h.mu.Unlock()
	return !h.writes.Begun() && !h.wrote.IsZero() && now.Sub(h.wrote) < fresh
}

// watchedTokens is the token store as the service calls it: every call
// observed by health.
type watchedTokens struct {
	store.TokenStore
	health *storeHealth
}

func (w watchedTokens) Issue(ctx context.Context, root baton.Token) (baton.Token, error) {
	started := time.Now()
	tok, err := w.TokenStore.Issue(ctx, root)
	w.health.observe(ctx, "issue", started, err)
	return tok, err
}

func (w watchedTokens) ClaimRoot(ctx context.Context, id baton.TokenID, now time.Time) (baton.Token, error) {
	started := time.Now()
	tok, err := w.TokenStore.ClaimRoot(ctx, id, now)
	w.health.observe(ctx, "claim", started, err)
	return tok, err
}

func (w watchedTokens) Get(ctx context.Context, id baton.TokenID) (baton.Token, error) {
	started := time.Now()
	tok, err := w.TokenStore.Get(ctx, id)
	w.health.observe(ctx, "get", started, err)
	return tok, err
}

func (w watchedTokens) Transition(ctx context.Context, consume baton.TokenID, create []baton.Token) (bool, error) {
	started := time.Now()
	consumed, err := w.TokenStore.Transition(ctx, consume, create)
	w.health.observe(ctx, "transition", started, err)
	return consumed, err
}

func (w watchedTokens) ListByConversation(ctx context.Context, conversation baton.TokenID, page store.Page) ([]baton.Token, error) {
	started := time.Now()
	tokens, err := w.TokenStore.ListByConversation(ctx, conversation, page)
	w.health.observe(ctx, "list_conversation", started, err)
	return tokens, err
}

func (w watchedTokens) ListByDestination(ctx context.Context, destination string, page store.Page) ([]baton.Token, error) {
	started := time.Now()
	tokens, err := w.TokenStore.ListByDestination(ctx, destination, page)
	w.health.observe(ctx, "list_destination", started, err)
	return tokens, err
}

func (w watchedTokens) ExpireRoots(ctx context.Context, before time.Time, limit int) (int, error) {
	started := time.Now()
	n, err := w.TokenStore.ExpireRoots(ctx, before, limit)
	w.health.observe(ctx, "expire_roots", started, err)
	return n, err
}

// watchedBatch is the store's TokenBatcher, observed as watchedTokens is.
type watchedBatch struct {
	store.TokenBatcher
	health *storeHealth
}

func (w watchedBatch) GetTokens(ctx context.Context, ids []baton.TokenID) ([]baton.Token, []error, error) {
	started := time.Now()
	tokens, errs, err := w.TokenBatcher.GetTokens(ctx, ids)
	w.health.observe(ctx, "get_batch", started, batchOutcome(ctx, err, errs))
	return tokens, errs, err
}

func (w watchedBatch) TransitionTokens(ctx context.Context, transitions []store.TokenTransition) ([]bool, []error, error) {
	started := time.Now()
	consumed, errs, err := w.TokenBatcher.TransitionTokens(ctx, transitions)
	w.health.observe(ctx, "transition_batch", started, batchOutcome(ctx, err, errs))
	return consumed, errs, err
}

// GetTokensIn passes the conversations on (store.HintedTokenReader) where
// the store takes them: a store split by conversation then asks each
// token's part only.
func (w watchedBatch) GetTokensIn(ctx context.Context, lookups []store.TokenLookup) ([]baton.Token, []error, error) {
	started := time.Now()
	tokens, errs, err := store.GetTokensIn(ctx, w.TokenBatcher, lookups)
	w.health.observe(ctx, "get_batch", started, batchOutcome(ctx, err, errs))
	return tokens, errs, err
}

// batchOutcome is what a batch call says of the store: the call's own
// error, else its items' worst failure (an unknown outcome over a write
// not applied). A store split by conversation answers a batch whole while
// one of its parts is down and fails only that part's items; those are an
// outage too.
func batchOutcome(ctx context.Context, err error, errs []error) error {
	if err != nil {
		return err
	}
	var worst error
	for _, e := range errs {
		outcome, failed := storeFailure(ctx, e)
		switch {
		case !failed:
		case outcome == "unknown":
			return e
		case worst == nil:
			worst = e
		}
	}
	return worst
}
