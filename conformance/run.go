package conformance

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// ErrUnreachable is returned by Check when the participant does not answer
// HTTP at its URL.
var ErrUnreachable = errors.New("conformance: participant unreachable")

// Kit is the conformance kit: its token service runs from Start to Close,
// and Check checks a participant that uses it.
type Kit struct {
	cfg    Config
	tokens *tokenService
}

// Start starts the kit's token service. The participant must be configured
// with TokenServiceURL and Config.ParticipantKey before Check.
func Start(cfg Config) (*Kit, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	ts, err := startTokenService(cfg.TokenServiceAddr, cfg.Destination, cfg.ParticipantKey)
	if err != nil {
		return nil, err
	}
	return &Kit{cfg: cfg, tokens: ts}, nil
}

// TokenServiceURL is the base URL of the kit's token service.
func (k *Kit) TokenServiceURL() string { return k.tokens.url }

// Close stops the kit's token service.
func (k *Kit) Close() error { return k.tokens.close() }

// Run starts the kit, checks the participant at the given URL and closes
// the kit: for a participant that is already running, configured with
// Config.TokenServiceAddr.
func Run(ctx context.Context, cfg Config, participant string) (Report, error) {
	k, err := Start(cfg)
	if err != nil {
		return Report{}, err
	}
	defer k.Close()
	return k.Check(ctx, participant)
}

// Check waits up to Config.Timeout for the participant at the given URL to
// answer, runs every check and reports. It returns an error only when it
// could not check at all (a bad URL, the participant unreachable); a
// participant that fails checks is a Report that did not pass.
func (k *Kit) Check(ctx context.Context, participant string) (Report, error) {
	if err := validParticipant(participant); err != nil {
		return Report{}, err
	}
	cfg := k.cfg
	runID := make([]byte, 4)
	_, _ = rand.Read(runID)
	r := &run{cfg: cfg, participant: participant, tokens: k.tokens, id: hex.EncodeToString(runID),
		client: &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	defer r.client.CloseIdleConnections()
	if err := r.reachable(ctx); err != nil {
		return Report{}, err
	}
	report := Report{Participant: participant}
	for _, c := range checks {
		if ctx.Err() != nil {
			return report, ctx.Err()
		}
		start := time.Now()
		err := c.run(ctx, r)
		k.tokens.inject(healthy)
		res := Result{Check: c.name, Section: c.section, Passed: err == nil, Took: time.Since(start)}
		if err != nil {
			res.Detail = err.Error()
		}
		report.Results = append(report.Results, res)
		if cfg.Progress != nil {
			verdict := "pass"
			if err != nil {
				verdict = "FAIL: " + err.Error()
			}
			fmt.Fprintf(cfg.Progress, "%-58s %s\n", c.name, verdict)
		}
	}
	return report, nil
}

// reachable waits until the participant answers any HTTP request.
func (r *run) reachable(ctx context.Context) error {
	deadline := time.Now().Add(r.cfg.Timeout)
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.participant, nil)
		if err != nil {
			return err
		}
		resp, err := r.client.Do(req)
		if err == nil {
			resp.Body.Close()
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%w at %s (%v): start it with the token service %s and its key first",
				ErrUnreachable, r.participant, err, r.tokens.url)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
