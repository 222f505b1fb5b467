package baton

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"unicode/utf8"
)

// Limits on what a signal may carry. They bound memory per signal and keep
// every store's records small; transports and the HTTP API reject more.
const (
	MaxPayloadBytes = 1 << 20 // 1 MiB
	MaxNameBytes    = 200     // destination and type names
)

// ErrInvalidSignal wraps every validation failure of a signal or an emit.
var ErrInvalidSignal = errors.New("baton: invalid signal")

// Digest is the SHA-256 of a signal's payload. A token records the digest of
// the signal it authorises, so a signal whose payload was altered is refused.
type Digest [32]byte

// DigestOf returns the digest of payload.
func DigestOf(payload []byte) Digest { return sha256.Sum256(payload) }

// String returns the digest as lowercase hex.
func (d Digest) String() string { return hex.EncodeToString(d[:]) }

// MarshalText implements encoding.TextMarshaler.
func (d Digest) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Digest) UnmarshalText(b []byte) error {
	if len(b) != 2*len(d) {
		return fmt.Errorf("%w: digest must be %d hex digits", ErrInvalidSignal, 2*len(d))
	}
	_, err := hex.Decode(d[:], b)
	if err != nil {
		return fmt.Errorf("%w: digest: %v", ErrInvalidSignal, err)
	}
	return nil
}

// Signal asks one destination to do one activity. Its ID is also the id of
// the token that authorises processing it.
type Signal struct {
	ID           TokenID `json:"id"`
	Conversation TokenID `json:"conversation"`
	Causation    TokenID `json:"causation,omitempty"`
	Destination  string  `json:"destination"`
	Type         string  `json:"type"`
	Payload      []byte  `json:"payload,omitempty"`
	// Trace carries W3C trace context (traceparent, tracestate) across hops.
	Trace TraceContext `json:"trace,omitzero"`
}

// TraceContext is the W3C trace context of the span that emitted a signal.
type TraceContext struct {
	Parent string `json:"traceparent,omitempty"`
	State  string `json:"tracestate,omitempty"`
}

// Digest returns the digest of the signal's payload.
func (s Signal) Digest() Digest { return DigestOf(s.Payload) }

// Token returns the token that authorises s, created at the given time.
func (s Signal) Token() Token {
	return Token{
		ID:           s.ID,
		Conversation: s.Conversation,
		Causation:    s.Causation,
		Destination:  s.Destination,
		Type:         s.Type,
		Digest:       s.Digest(),
	}
}

// Validate reports whether s is well formed: ids set, names within limits,
// payload within MaxPayloadBytes.
func (s Signal) Validate() error {
	if s.ID.IsZero() {
		return fmt.Errorf("%w: missing token id", ErrInvalidSignal)
	}
	if s.Conversation.IsZero() {
		return fmt.Errorf("%w: missing conversation id", ErrInvalidSignal)
	}
	if err := ValidateName("destination", s.Destination); err != nil {
		return err
	}
	if err := ValidateName("type", s.Type); err != nil {
		return err
	}
	if len(s.Payload) > MaxPayloadBytes {
		return fmt.Errorf("%w: payload of %d bytes exceeds the limit of %d", ErrInvalidSignal, len(s.Payload), MaxPayloadBytes)
	}
	return nil
}

// Emit is a signal that an activity asks to send. The engine gives it a fresh
// token id, the conversation and the causation when it commits the activity.
type Emit struct {
	// Destination receives the signal. Leave it empty and set Topic to
	// publish to every destination that subscribes to the topic.
	Destination string
	Topic       string
	Type        string
	Payload     []byte
}

// Validate reports whether e names exactly one of Destination and Topic, a
// type, and a payload within limits.
func (e Emit) Validate() error {
	switch {
	case e.Destination == "" && e.Topic == "":
		return fmt.Errorf("%w: emit %q names neither a destination nor a topic", ErrInvalidSignal, e.Type)
	case e.Destination != "" && e.Topic != "":
		return fmt.Errorf("%w: emit %q names both a destination and a topic", ErrInvalidSignal, e.Type)
	case e.Destination != "":
		if err := ValidateName("destination", e.Destination); err != nil {
			return err
		}
	default:
		if err := ValidateName("topic", e.Topic); err != nil {
			return err
		}
	}
	if err := ValidateName("type", e.Type); err != nil {
		return err
	}
	if len(e.Payload) > MaxPayloadBytes {
		return fmt.Errorf("%w: payload of %d bytes exceeds the limit of %d", ErrInvalidSignal, len(e.Payload), MaxPayloadBytes)
	}
	return nil
}

// ValidateName checks a destination, topic, type or system name: 1 to
// MaxNameBytes bytes of UTF-8, without spaces, control characters or
// U+FFFD. what names it in the error (ErrInvalidSignal). Every component
// that takes a name checks it so, so that none accepts what another
// refuses.
func ValidateName(what, name string) error {
	if name == "" {
		return fmt.Errorf("%w: missing %s", ErrInvalidSignal, what)
	}
	if len(name) > MaxNameBytes {
		return fmt.Errorf("%w: %s longer than %d bytes", ErrInvalidSignal, what, MaxNameBytes)
	}
	if !utf8.ValidString(name) {
		// Text in every store and broker: one that took these bytes while
		// another refused them would split a batch's fate between them.
		return fmt.Errorf("%w: %s %q is not valid UTF-8", ErrInvalidSignal, what, name)
	}
	for _, r := range name {
		if r <= ' ' || r == 0x7f {
			return fmt.Errorf("%w: %s %q contains a space or control character", ErrInvalidSignal, what, name)
		}
		if r == utf8.RuneError {
			// What a decoder puts in place of bytes that were not UTF-8, or
			// of a lone surrogate escaped in JSON ("\ud800"): the sender
			// meant another name, which is lost.
			return fmt.Errorf("%w: %s %q contains U+FFFD, the replacement character", ErrInvalidSignal, what, name)
		}
	}
	return nil
}
