package tokenservice

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
)

const (
	// healthTimeout bounds each of healthz's calls to the store.
	healthTimeout = 2 * time.Second
	// writeProofAge is how long a write that succeeded vouches for the
	// store's writes: a busy service never writes to check, an idle one
	// at most once in this time.
	writeProofAge = 30 * time.Second
	// probeReuse is how long a failed probe write answers healthz.
	probeReuse = time.Second
	// probeTTL is the expiry of a probe's token, in case the write that
	// removes it fails: ExpireRoots then takes it.
	probeTTL = time.Minute
)

// healthProbe is a token id that no store holds; healthz reads it to check
// that the store answers reads.
var healthProbe = baton.TokenID{0xba, 0x70, 0x4e, 0x48, 0xea, 0x17, 0x42}

// probeDestination addresses the tokens that healthz writes; no system
// registers it, so no caller can read or consume them.
const probeDestination = "baton.healthz"

// healthz answers 200 if the token store answers a read, and takes writes,
// each within healthTimeout. Writes are proven by the service's own
// traffic; when none succeeded lately, or the last one failed, healthz
// writes a token and removes it: a store that refuses writes (a full disk,
// a read-only replica, Redis at maxmemory) still answers reads, and a
// service that cannot write can do nothing for its callers.
func (s *server) healthz(w http.ResponseWriter, r *http.Request, _ *registered) {
	ctx, cancel := context.WithTimeout(r.Context(), healthTimeout)
	defer cancel()
	if _, err := s.tokens.Get(ctx, healthProbe); err != nil && !errors.Is(err, store.ErrNotFound) {
		// The store's health logs the outage, once.
		writeProblem(w, problem(ProblemNotApplied, "the token store does not answer reads"))
		return
	}
	if !s.health.writesProven(writeProofAge) {
		if err := s.probe.write(ctx, s); err != nil {
			writeProblem(w, problem(ProblemNotApplied, "the token store does not take writes"))
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// writeProbe writes one token at a time for healthz. A failed write
// answers the calls of the next probeReuse too: a store that refuses
// writes gets at most one probe a second, however often healthz is asked.
type writeProbe struct {
	mu     sync.Mutex
	failed time.Time
	err    error
}

// write issues a probe token and consumes it, both through the watched
// store, so that a success ends the store's outage of writes and a
// failure is counted as one.
func (p *writeProbe) write(ctx context.Context, s *server) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if s.health.writesProven(writeProofAge) {
		return nil // a probe that this call waited for, or a request, wrote
	}
	now := s.cfg.Now()
	if p.err != nil && now.Sub(p.failed) < probeReuse {
		return p.err
	}
	// The probe answers every caller waiting for it: its own time, not
	// the time left to the one that runs it.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), healthTimeout)
	defer cancel()
	at := s.now()
	probe := baton.Token{Destination: probeDestination, Type: "probe", Digest: baton.DigestOf(nil),
		CreatedAt: at, ExpiresAt: at.Add(probeTTL)}
	tok, err := s.probeTokens.Issue(ctx, probe)
	if err == nil {
		// A token that stays expires: its removal is not the check.
		_, _ = s.probeTokens.Transition(store.WithConversation(ctx, tok.Conversation), tok.ID, nil)
	}
	// From the probe's end: calls that waited for a slow one take its
	// outcome instead of waiting as long again.
	p.failed, p.err = s.cfg.Now(), err
	return err
}
