package dashboard

import (
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"time"

	"github.com/batonhq/baton/conversation"
	"github.com/batonhq/baton/internal/cached"
	"github.com/batonhq/baton/internal/syncio"
	"github.com/batonhq/baton/store"
	"github.com/batonhq/baton/transport"
)

// Config configures the dashboard. Only Recorder is required; every other
// zero value is documented on its field.
type Config struct {
	// Recorder supplies the conversations. Required.
	Recorder *conversation.Recorder
	// Tokens is the token store whose live tokens are shown by destination
	// and age. Nil hides that panel (the API reports "available": false).
	Tokens store.TokenStore
	// Destinations lists the destinations whose live tokens are shown. Nil
	// means every destination that appears in the recorded conversations.
	Destinations func() []string
	// Stats returns named counters, summed over the caller's engines (see
	// EngineStats) or taken from a token service. The well-known names
	// (CounterTransitions and the others) get a headline card; all are
	// listed. Nil shows no counters.
	Stats func() map[string]int64
	// Report returns a verification report, shown as JSON in its own panel.
	// Nil hides the panel (GET /api/report answers 404).
	Report func() any
	// Parked is the brokers' park place. With it GET /api/parked lists the
	// parked signals there (with their reasons and payloads), and with
	// Operate and Tokens too the page offers replay and discard. Nil hides
	// that panel.
	Parked transport.ParkedStore
	// Operate admits a replay or discard request and names the operator,
	// who is recorded. It must authenticate the request itself (credentials
	// on the request, not the page's): return an error wrapping
	// ErrNoCredentials for none (401), any other error for a caller that
	// may not operate (403). Nil: no actions, anonymously or otherwise.
	Operate func(*http.Request) (operator string, err error)
	// Audit receives one JSON line per discard: who discarded which signal
	// and why. Required with Operate.
	Audit io.Writer

	// Now is the clock. Nil means time.Now.
	Now func() time.Time
	// Logger receives store failures. Nil discards them.
	Logger *slog.Logger

	// MaxTokensPerDestination caps how many live tokens of one destination
	// are read per refresh; beyond it the count is reported as capped.
	// Default 10,000.
	MaxTokensPerDestination int
	// StuckAfter is the age from which a live token is flagged as stuck.
	// Default 10s.
	StuckAfter time.Duration
	// StuckAfterByDestination overrides StuckAfter for some destinations.
	StuckAfterByDestination map[string]time.Duration
	// TokenRefresh is how long one reading of the token store is reused, so
	// that many open pages cost one listing a second. One request at a time
	// reads the store; the others meanwhile get the last reading. Default
	// 1s; negative reads the store on every request.
	TokenRefresh time.Duration
}

// The counter names that get a headline card. EngineStats produces the
// first three; CounterOutboxAge is for callers that measure the age of
// their oldest outbox entry, in milliseconds.
const (
	CounterTransitions = "transitions"
	CounterDuplicates  = "duplicates.dropped"
	CounterParked      = "signals.parked"
	CounterOutboxAge   = "outbox.oldest_age_ms"
)

// Bounds on what one API response carries.
const (
	DefaultListLimit       = 50   // conversations per listing without ?limit=
	MaxListLimit           = 500  // the largest ?limit= honoured
	MaxNodes               = 2000 // signals of one conversation; more are truncated
	MaxDestinations        = 100  // destinations whose tokens are listed
	MaxOldest              = 10   // oldest live tokens listed
	MaxParked              = 50   // parked signals listed
	MaxCounters            = 200  // counters listed
	MaxReportBytes         = 1 << 20
	defaultTokensPerDest   = 10_000
	defaultStuckAfter      = 10 * time.Second
	defaultTokenRefresh    = time.Second
	tokenListingTimeout    = 5 * time.Second
	maxDestinationNameSize = 200
	maxTextBytes           = 500 // errors and reasons in responses
)

// ErrInvalidConfig is returned by New for a Config it cannot use.
var ErrInvalidConfig = errors.New("dashboard: invalid config")

//go:embed assets
var assets embed.FS

// New returns the dashboard: the page at / and its JSON API under /api/.
// All links are relative, so it can be mounted under a prefix with
// http.StripPrefix.
func New(cfg Config) (http.Handler, error) {
	if cfg.Recorder == nil {
		return nil, fmt.Errorf("%w: Recorder is required", ErrInvalidConfig)
	}
	if cfg.Operate != nil && cfg.Audit == nil {
		return nil, fmt.Errorf("%w: Operate needs Audit, where discards are recorded", ErrInvalidConfig)
	}
	if cfg.MaxTokensPerDestination < 0 || cfg.StuckAfter < 0 {
		return nil, fmt.Errorf("%w: MaxTokensPerDestination and StuckAfter must not be negative", ErrInvalidConfig)
	}
	if cfg.MaxTokensPerDestination == 0 {
		cfg.MaxTokensPerDestination = defaultTokensPerDest
	}
	if cfg.StuckAfter == 0 {
		cfg.StuckAfter = defaultStuckAfter
	}
	if cfg.TokenRefresh == 0 {
		cfg.TokenRefresh = defaultTokenRefresh
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	static, err := fs.Sub(assets, "assets")
	if err != nil {
		return nil, fmt.Errorf("dashboard: assets: %w", err)
	}
	if cfg.Audit != nil {
		cfg.Audit = &syncio.Writer{W: cfg.Audit} // concurrent discards append whole lines
	}
	d := &dashboard{cfg: cfg, tokenFailures: failures{what: "listing live tokens"}, parkedFailures: failures{what: "listing parked signals"}}
	d.liveTokens = cached.Value[*tokensResponse]{Read: d.listTokens, MaxAge: cfg.TokenRefresh, Now: cfg.Now}
	d.parkedSignals = cached.Value[brokerParkedReading]{Read: d.listParked, MaxAge: parkedRefresh, Now: cfg.Now}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/conversations", d.listConversations)
	mux.HandleFunc("GET /api/conversations/{id}", d.getConversation)
	mux.HandleFunc("GET /api/tokens", d.tokens)
	mux.HandleFunc("GET /api/stats", d.stats)
	mux.HandleFunc("GET /api/report", d.report)
	mux.HandleFunc("GET /api/parked", d.brokerParked)
	mux.HandleFunc("POST /api/parked/replay", d.replayParked)
	mux.HandleFunc("POST /api/parked/discard", d.discardParked)
	mux.HandleFunc("GET /api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such API endpoint")
	})
	mux.Handle("GET /", http.FileServerFS(static))
	return secureHeaders(mux), nil
}

type dashboard struct {
	cfg Config

	// liveTokens is the last listing of the token store, shared by every
	// viewer for TokenRefresh and refreshed by one request at a time.
	liveTokens cached.Value[*tokensResponse]
	// parkedSignals is the last listing of the park place, shared alike.
	parkedSignals cached.Value[brokerParkedReading]
	// tokenFailures and parkedFailures log failing listings once, not
	// per refresh.
	tokenFailures  failures
	parkedFailures failures
}

// secureHeaders keeps the page self-contained: the policy forbids loading
// anything from elsewhere, so a page that works here works offline.
func secureHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-store")
		next.ServeHTTP(w, r)
	})
}
