// Package parked lets an operator act on parked signals: list them with
// filters, replay one once its handler is fixed, or discard one for good.
//
// A signal is parked when it can never be processed as it is (a poison
// payload, a handler bug, a refused token); its token stays live, which is
// what makes a later replay safe: the receiver consumes the token once,
// and a replay of a signal whose token is gone is dropped as the
// duplicate it is. Discarding retires the token through a transition
// without children, so the conversation visibly ends there instead of
// holding a live token for ever, and records who discarded what and why.
// The park places are the transports' (transport.ParkedStore): NATS
// JetStream, RabbitMQ and the in-memory transport.
package parked

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/batonhq/baton/store"
	"github.com/batonhq/baton/transport"
)

// Filter selects parked signals. Zero fields select everything.
type Filter struct {
	Destination string
	Type        string
	// Reason selects signals whose park reason contains it.
	Reason string
	// OlderThan selects signals parked at least this long ago.
	OlderThan time.Duration
	// Limit bounds how many are returned. Default 100.
	Limit int
}

// maxScan bounds how many parked signals List reads to apply a filter.
const maxScan = 100_000

// List returns the parked signals that f selects, oldest first.
func List(ctx context.Context, ps transport.ParkedStore, f Filter, now time.Time) ([]transport.ParkedSignal, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	all, err := ps.ListParked(ctx, f.Destination, maxScan)
	if err != nil {
		return nil, err
	}
	var out []transport.ParkedSignal
	for _, p := range all {
		switch {
		case f.Type != "" && p.Signal.Type != f.Type:
		case f.Reason != "" && !strings.Contains(p.Reason, f.Reason):
		case f.OlderThan > 0 && now.Sub(p.ParkedAt) < f.OlderThan:
		default:
			out = append(out, p)
		}
		if len(out) == limit {
			break
		}
	}
	return out, nil
}

// Replay sends the parked signal id to its destination again and removes
// it from the park place. The receiver applies it once if its token is
// still live, and drops it as a duplicate if not.
func Replay(ctx context.Context, ps transport.ParkedStore, id string) (transport.ParkedSignal, error) {
	p, err := ps.GetParked(ctx, id)
	if err != nil {
		return p, err
	}
	if p.Signal.ID.IsZero() {
		return p, fmt.Errorf("parked: %s is not a readable signal and cannot be replayed; discard it", id)
	}
	return p, ps.Replay(ctx, id)
}

// Discarded records a discard.
type Discarded struct {
	ID           string    `json:"parked_id"`
	Token        string    `json:"token"`
	Conversation string    `json:"conversation"`
	Destination  string    `json:"destination"`
	Type         string    `json:"type"`
	ParkReason   string    `json:"park_reason"`
	Operator     string    `json:"operator"`
	Why          string    `json:"why"`
	At           time.Time `json:"at"`
	// TokenRetired is false when the token was gone already (the signal
	// had been processed, or discarded before).
	TokenRetired bool `json:"token_retired"`
}

// ErrNoReason is returned by Discard without an operator or a reason.
var ErrNoReason = errors.New("parked: a discard needs the operator's name and a reason")

// Discard retires the parked signal's token (a transition that consumes it
// and creates nothing), removes the signal from the park place, and
// writes the record to audit as one JSON line. The token goes first: if
// the removal fails, a later replay of the signal is dropped as a
// duplicate, and discarding again finishes it.
func Discard(ctx context.Context, ps transport.ParkedStore, tokens store.TokenStore, id, operator, why string, audit io.Writer, now time.Time) (Discarded, error) {
	if strings.TrimSpace(operator) == "" || strings.TrimSpace(why) == "" {
		return Discarded{}, ErrNoReason
	}
	p, err := ps.GetParked(ctx, id)
	if err != nil {
		return Discarded{}, err
	}
	d := Discarded{ID: id, Token: p.Signal.ID.String(), Conversation: p.Signal.Conversation.String(), Destination: p.Signal.Destination,
		Type: p.Signal.Type, ParkReason: p.Reason, Operator: operator, Why: why, At: now.UTC()}
	if !p.Signal.ID.IsZero() {
		if d.TokenRetired, err = tokens.Transition(ctx, p.Signal.ID, nil); err != nil {
			return d, fmt.Errorf("parked: retire token %s: %w", p.Signal.ID, err)
		}
	}
	if err := ps.RemoveParked(ctx, id); err != nil {
		return d, err
	}
	if audit != nil {
		line, _ := json.Marshal(d)
		if _, err := audit.Write(append(line, '\n')); err != nil {
			return d, fmt.Errorf("parked: discarded %s, but the record was not written: %w", id, err)
		}
	}
	return d, nil
}
