package baton

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"
)

// TokenID identifies a token and the signal it authorises. It is 128 bits
// from a cryptographic source, so ids cannot be guessed or forged.
type TokenID [16]byte

// ErrMalformedTokenID is returned by ParseTokenID for text that is not a
// token id.
var ErrMalformedTokenID = errors.New("baton: malformed token id")

// NewTokenID returns a fresh random token id from crypto/rand.
func NewTokenID() TokenID {
	id, err := ReadTokenID(rand.Reader)
	if err != nil {
		// crypto/rand.Read never fails on supported platforms (Go 1.24+).
		panic(err)
	}
	return id
}

// ReadTokenID reads a token id from r. Production code uses NewTokenID;
// deterministic simulations pass a seeded source.
func ReadTokenID(r io.Reader) (TokenID, error) {
	var id TokenID
	if _, err := io.ReadFull(r, id[:]); err != nil {
		return TokenID{}, fmt.Errorf("baton: read token id: %w", err)
	}
	return id, nil
}

// ParseTokenID parses the 32 lowercase hex digits that String produces.
func ParseTokenID(s string) (TokenID, error) {
	var id TokenID
	if len(s) != 2*len(id) {
		return TokenID{}, fmt.Errorf("%w: want %d hex digits, got %d characters", ErrMalformedTokenID, 2*len(id), len(s))
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return TokenID{}, fmt.Errorf("%w: %q is not lowercase hex", ErrMalformedTokenID, s)
		}
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return TokenID{}, fmt.Errorf("%w: %v", ErrMalformedTokenID, err)
	}
	return id, nil
}

// String returns the id as 32 lowercase hex digits.
func (id TokenID) String() string { return hex.EncodeToString(id[:]) }

// IsZero reports whether id is the zero id, which no token has.
func (id TokenID) IsZero() bool { return id == TokenID{} }

// MarshalText implements encoding.TextMarshaler.
func (id TokenID) MarshalText() ([]byte, error) {
	if id.IsZero() {
		return []byte{}, nil
	}
	return []byte(id.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler. Empty text is the zero id.
func (id *TokenID) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*id = TokenID{}
		return nil
	}
	parsed, err := ParseTokenID(string(b))
	if err != nil {
		return err
	}
	*id = parsed
	return nil
}

// Token says "this signal may still be processed". It lives in a token store
// from the transition that created it until the transition that consumes it.
type Token struct {
	ID           TokenID   `json:"id"`
	Conversation TokenID   `json:"conversation"`
	Causation    TokenID   `json:"causation,omitempty"` // zero for root tokens
	Destination  string    `json:"destination"`
	Type         string    `json:"type"`
	Digest       Digest    `json:"digest"`
	CreatedAt    time.Time `json:"created_at"`
	// ExpiresAt is set only on root tokens that may expire unused. Expiry
	// only ever rejects a signal; it never admits a duplicate.
	ExpiresAt time.Time `json:"expires_at,omitzero"`
}

// Root reports whether t starts a conversation (it has no causing signal).
func (t Token) Root() bool { return t.Causation.IsZero() }

// Expired reports whether t is a root token whose expiry is at or before now.
func (t Token) Expired(now time.Time) bool {
	return !t.ExpiresAt.IsZero() && !now.Before(t.ExpiresAt)
}
