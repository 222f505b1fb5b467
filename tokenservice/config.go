package tokenservice

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
)

// DefaultMaxBodyBytes bounds request bodies when Config.MaxBodyBytes is
// zero. A transition with store.MaxTokensPerTransition children needs
// about 400 KiB.
const DefaultMaxBodyBytes = 2 << 20

// AnyDestination in System.Destinations lets a system consume tokens of
// every destination: for trusted infrastructure (a sweeper, an operator's
// tool), never for an ordinary participant.
const AnyDestination = "*"

// ErrInvalidConfig wraps every error of a Config or systems file that New
// or LoadSystems refuses.
var ErrInvalidConfig = errors.New("tokenservice: invalid config")

// System is one calling system in the registry: who it is, how it proves
// it, and what it may do.
type System struct {
	// Name identifies the system. A client certificate whose subject common
	// name equals Name authenticates as this system.
	Name string `json:"name"`
	// KeySHA256 is the SHA-256 of the system's API key, as 64 lowercase hex
	// digits (HashAPIKey). Empty: the system authenticates only with a
	// client certificate.
	KeySHA256 string `json:"key_sha256,omitempty"`
	// Destinations are the destinations whose tokens the system may
	// consume and read. Empty means just its own name; AnyDestination
	// means all.
	Destinations []string `json:"destinations,omitempty"`
	// IssueRoots lets the system issue root tokens (the edge of a process).
	IssueRoots bool `json:"issue_roots,omitempty"`
	// RootDestinations, with IssueRoots, are the destinations of the roots
	// the system may issue: a root admits its signal at its destination,
	// so an edge's key could otherwise start any system's work. Empty
	// means any; AnyDestination, explicitly, too.
	RootDestinations []string `json:"root_destinations,omitempty"`
	// Observe lets the system read any token and list any conversation or
	// destination (a dashboard).
	Observe bool `json:"observe,omitempty"`
	// Operate lets the system replay and discard parked signals from the
	// dashboard of `baton serve` (an operator). A discard retires the
	// signal's token, so grant it only to people who may end conversations.
	Operate bool `json:"operate,omitempty"`
	// ExpireRoots lets the system delete expired root tokens (a sweeper).
	// The request names the cutoff, so only a trusted system may send it.
	ExpireRoots bool `json:"expire_roots,omitempty"`
}

// mayIssueRootFor reports whether s may issue a root addressed to
// destination.
func (s *System) mayIssueRootFor(destination string) bool {
	return s.IssueRoots && (len(s.RootDestinations) == 0 || slices.ContainsFunc(s.RootDestinations, func(d string) bool {
		return d == destination || d == AnyDestination
	}))
}

// mayConsume reports whether s may consume tokens addressed to destination.
func (s *System) mayConsume(destination string) bool {
	for _, d := range s.Destinations {
		if d == destination || d == AnyDestination {
			return true
		}
	}
	return false
}

// Config configures the handler that New returns.
type Config struct {
	// Tokens is the token store the service serves. Required.
	Tokens store.TokenStore
	// ProbeTokens is the store that /healthz writes its probe tokens to,
	// where Tokens wraps it in something that must not see them (the
	// dashboard's recorder would list every probe as a conversation).
	// Nil means Tokens.
	ProbeTokens store.TokenStore
	// Systems is the registry of calling systems. At least one is
	// required; names and keys must be distinct.
	Systems []System
	// MaxBodyBytes bounds request bodies; larger ones are refused with
	// 413. Zero selects DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// Logger receives one debug line per request, and a line when the
	// token store stops answering and one when it answers again (not one
	// per request that meets it; those are debug lines). Nil discards.
	// Keys and Authorization headers are never logged.
	Logger *slog.Logger
	// MeterProvider receives the metrics of the token store's calls:
	// baton.token_store.duration (seconds, by operation) and
	// baton.token_store.errors (calls that failed, by operation and
	// outcome: not_applied or unknown). Nil means otel.GetMeterProvider().
	MeterProvider metric.MeterProvider
	// Now is the clock that stamps created_at when a request leaves it
	// out. Nil means time.Now.
	Now func() time.Time
}

// registered is a validated system with its decoded key hash.
type registered struct {
	System
	hash   [sha256.Size]byte
	hasKey bool
}

func (c *Config) validate() ([]*registered, error) {
	if c.Tokens == nil {
		return nil, fmt.Errorf("%w: Tokens is required", ErrInvalidConfig)
	}
	if len(c.Systems) == 0 {
		return nil, fmt.Errorf("%w: no systems registered: nobody could call the service", ErrInvalidConfig)
	}
	if c.MaxBodyBytes < 0 {
		return nil, fmt.Errorf("%w: MaxBodyBytes %d is negative", ErrInvalidConfig, c.MaxBodyBytes)
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.MeterProvider == nil {
		c.MeterProvider = otel.GetMeterProvider()
	}
	return registerAll(c.Systems)
}

// registerAll validates systems: each on its own, and their names and keys
// distinct.
func registerAll(systems []System) ([]*registered, error) {
	names := make(map[string]bool)
	hashes := make(map[[sha256.Size]byte]string)
	var out []*registered
	for _, s := range systems {
		r, err := register(s)
		if err != nil {
			return nil, err
		}
		if names[r.Name] {
			return nil, fmt.Errorf("%w: system %q registered twice", ErrInvalidConfig, r.Name)
		}
		names[r.Name] = true
		if r.hasKey {
			if other, dup := hashes[r.hash]; dup {
				return nil, fmt.Errorf("%w: systems %q and %q have the same key", ErrInvalidConfig, other, r.Name)
			}
			hashes[r.hash] = r.Name
		}
		out = append(out, r)
	}
	return out, nil
}

// register validates one system and fills in its defaults.
func register(s System) (*registered, error) {
	if err := (baton.Emit{Destination: s.Name, Type: "system"}).Validate(); err != nil {
		return nil, fmt.Errorf("%w: system name %q: %w", ErrInvalidConfig, s.Name, err)
	}
	if s.Name == AnyDestination {
		// Its default destination, its own name, would be every one.
		return nil, fmt.Errorf("%w: system name %q is the wildcard of destinations: name the system, and give it \"destinations\": [%q] if it is trusted infrastructure", ErrInvalidConfig, s.Name, AnyDestination)
	}
	r := &registered{System: s}
	r.Destinations = append([]string(nil), s.Destinations...)
	if len(r.Destinations) == 0 {
		r.Destinations = []string{s.Name}
	}
	for _, d := range r.Destinations {
		if d == AnyDestination {
			continue
		}
		if err := (baton.Emit{Destination: d, Type: "system"}).Validate(); err != nil {
			return nil, fmt.Errorf("%w: system %q: destination %q: %w", ErrInvalidConfig, s.Name, d, err)
		}
	}
	if len(s.RootDestinations) > 0 && !s.IssueRoots {
		return nil, fmt.Errorf("%w: system %q: root_destinations without issue_roots: it may issue no roots", ErrInvalidConfig, s.Name)
	}
	for _, d := range s.RootDestinations {
		if d == AnyDestination {
			continue
		}
		if err := baton.ValidateName("destination", d); err != nil {
			return nil, fmt.Errorf("%w: system %q: root destination %q: %w", ErrInvalidConfig, s.Name, d, err)
		}
	}
	if s.KeySHA256 != "" {
		if len(s.KeySHA256) != 2*sha256.Size || !lowerHex(s.KeySHA256) {
			return nil, fmt.Errorf("%w: system %q: key_sha256 must be %d lowercase hex digits (the hash, never the key)", ErrInvalidConfig, s.Name, 2*sha256.Size)
		}
		hex.Decode(r.hash[:], []byte(s.KeySHA256))
		r.hasKey = true
	}
	return r, nil
}

// SystemsFile is the JSON document that LoadSystems reads:
//
//	{"systems": [{"name": "billing", "key_sha256": "…", "destinations": ["billing"]}]}
type SystemsFile struct {
	Systems []System `json:"systems"`
}

// LoadSystems reads a systems file. Unknown fields are refused, so that a
// misspelt permission is an error rather than silently absent.
func LoadSystems(path string) ([]System, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: systems file: %w", ErrInvalidConfig, err)
	}
	var f SystemsFile
	if err := decodeJSON(data, &f); err != nil {
		return nil, fmt.Errorf("%w: systems file %s: %w", ErrInvalidConfig, path, err)
	}
	for _, s := range f.Systems {
		if _, err := register(s); err != nil {
			return nil, fmt.Errorf("systems file %s: %w", path, err)
		}
	}
	return f.Systems, nil
}

// ParseSystem reads one system as a JSON object, in the form of an entry
// of a systems file (the bootstrap system that BATON_SYSTEM holds).
func ParseSystem(data []byte) (System, error) {
	var s System
	if err := decodeJSON(bytes.TrimSpace(data), &s); err != nil {
		return System{}, fmt.Errorf("%w: system: %w", ErrInvalidConfig, err)
	}
	if _, err := register(s); err != nil {
		return System{}, err
	}
	return s, nil
}

// apiKeyPrefix marks baton API keys, so that secret scanners and people
// recognise one.
const apiKeyPrefix = "bk_"

// NewAPIKey returns a fresh API key, 256 bits from crypto/rand, and its
// hash for a systems file. Show the key once to the system's operator and
// store only the hash.
func NewAPIKey() (key, hash string) {
	var b [32]byte
	_, _ = rand.Read(b[:]) // never fails on supported platforms (Go 1.24+)
	key = apiKeyPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	return key, HashAPIKey(key)
}

// HashAPIKey returns the SHA-256 of key as lowercase hex. A plain hash is
// enough, and bcrypt or argon2 would only cost time on every request,
// because keys are 256 random bits, not passwords: no dictionary helps
// invert their hash.
func HashAPIKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}
