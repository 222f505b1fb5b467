package redis

import (
	"fmt"
	"io"
	"log/slog"
	"strings"

	goredis "github.com/redis/go-redis/v9"
)

// DefaultPrefix starts every key when Config.Prefix is empty.
const DefaultPrefix = "baton"

// maxPrefixBytes keeps key names short; a prefix is a namespace, not data.
const maxPrefixBytes = 64

// Config configures a TokenStore. Exactly one of URL and Options is set.
type Config struct {
	// URL locates the server, as goredis.ParseURL reads it:
	// redis://[user:password@]host:port/db, or rediss:// for TLS. A store
	// opened from a URL bounds every call by its context's deadline.
	URL string

	// Options configures the client directly, for settings a URL cannot
	// express. The store copies it and always sets MaxRetries to -1: the
	// client's own retries would re-run a transition whose first attempt
	// may have applied and turn "outcome unknown" into a wrong answer.
	Options *goredis.Options

	// Prefix starts every key, so several stores (or tests) share one
	// server without seeing each other's tokens. Empty means DefaultPrefix.
	// It may hold at most 64 bytes and no braces (they would change the
	// cluster hash tags), whitespace, control characters, or the glob
	// characters * ? [ ] \ (so that SCAN prefix:* finds exactly its keys).
	Prefix string

	// AllowUnsafeDurability opens the store even if the server does not
	// fsync every write before acknowledging it (appendonly yes and
	// appendfsync always), or does not let the store check (CONFIG
	// disabled). Acknowledged tokens can then be lost in a crash: a lost
	// token drops its signal as a duplicate. The store logs a warning.
	// Zero value: refuse with ErrUnsafeDurability.
	AllowUnsafeDurability bool

	// Logger receives the warning about unsafe durability. Nil discards.
	Logger *slog.Logger
}

// resolve validates c and returns the client options the store uses.
func (c Config) resolve() (prefix string, opts *goredis.Options, logger *slog.Logger, err error) {
	prefix = c.Prefix
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if err := validatePrefix(prefix); err != nil {
		return "", nil, nil, err
	}
	switch {
	case c.URL != "" && c.Options != nil:
		return "", nil, nil, fmt.Errorf("redis: config sets both URL and Options; set one")
	case c.URL != "":
		opts, err = goredis.ParseURL(c.URL)
		if err != nil {
			// ParseURL's message may quote the URL, password included.
			return "", nil, nil, fmt.Errorf("redis: config URL is not a valid redis:// or rediss:// URL")
		}
		opts.ContextTimeoutEnabled = true
	case c.Options != nil:
		copied := *c.Options
		opts = &copied
	default:
		return "", nil, nil, fmt.Errorf("redis: config sets neither URL nor Options")
	}
	opts.MaxRetries = -1
	logger = c.Logger
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return prefix, opts, logger, nil
}

func validatePrefix(p string) error {
	if len(p) > maxPrefixBytes {
		return fmt.Errorf("redis: key prefix longer than %d bytes", maxPrefixBytes)
	}
	for _, r := range p {
		if r <= ' ' || r == 0x7f || strings.ContainsRune("{}*?[]\\", r) {
			return fmt.Errorf("redis: key prefix %q contains %q; braces, glob characters, whitespace and control characters are not allowed", p, r)
		}
	}
	return nil
}
