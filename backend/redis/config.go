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

// Config configures a TokenStore. Exactly one of URL, Options and
// ClusterOptions is set.
type Config struct {
	// URL locates the server, as goredis.ParseURL reads it:
	// redis://[user:password@]host:port/db, or rediss:// for TLS. A store
	// opened from a URL bounds every call by its context's deadline. If the
	// server runs in cluster mode, it is the seed node of a cluster client
	// with the same credentials and timeouts (the database must be 0).
	URL string

	// Options configures the client directly, for settings a URL cannot
	// express. The store copies it and always sets MaxRetries to -1: the
	// client's own retries would re-run a transition whose first attempt
	// may have applied and turn "outcome unknown" into a wrong answer.
	Options *goredis.Options

	// ClusterOptions configures a Redis Cluster client directly, for
	// several seed addresses or settings a URL cannot express. The store
	// copies it and always sets MaxRetries and MaxRedirects to -1, for the
	// reason given at Options: a redirect is refused (not applied) rather
	// than followed, and the next call uses the reloaded slot map. It also
	// always sets ReadOnly, RouteByLatency and RouteRandomly to false:
	// every command goes to the master of its slot, because a replica may
	// lag and a stale read would report a live token as absent.
	ClusterOptions *goredis.ClusterOptions

	// Prefix starts every key, so several stores (or tests) share one
	// server without seeing each other's tokens. Empty means DefaultPrefix.
	// It may hold at most 64 bytes and no braces (they would change the
	// cluster hash tags), whitespace, control characters, or the glob
	// characters * ? [ ] \ (so that SCAN prefix:* finds exactly its keys).
	Prefix string

	// AllowUnsafeDurability opens the store even if the server does not
	// fsync every write before acknowledging it (appendonly yes,
	// appendfsync always and no-appendfsync-on-rewrite no), or does not
	// let the store check (CONFIG disabled). Acknowledged tokens can then
	// be lost in a crash: a lost token drops its signal as a duplicate, a
	// consumed one that comes back lets a duplicate through. The store
	// logs a warning. Zero value: refuse with ErrUnsafeDurability.
	AllowUnsafeDurability bool

	// AllowAsyncReplication opens the store even though the server (or a
	// master of the cluster) has replicas. Redis replicates
	// asynchronously, and WAIT does not change that: a master acknowledges
	// a transition before its replicas have it, so a failover that
	// promotes a lagging replica brings consumed tokens back (a duplicate
	// is applied) and loses created ones (their signals are dropped as
	// duplicates). Set it only if no replica is ever promoted, for
	// example replicas kept for reading or for copies that are never
	// restored over a running system. Zero value: refuse with
	// ErrAsyncReplication. The check runs when the store opens: a replica
	// attached later is not seen.
	AllowAsyncReplication bool

	// Logger receives the warnings about unsafe durability and
	// replication. Nil discards.
	Logger *slog.Logger
}

// clientConfig is a validated Config: exactly one of opts and cluster is set.
type clientConfig struct {
	prefix  string
	opts    *goredis.Options
	cluster *goredis.ClusterOptions
	logger  *slog.Logger
}

// resolve validates c and returns the client options the store uses.
func (c Config) resolve() (clientConfig, error) {
	cc := clientConfig{prefix: c.Prefix}
	if cc.prefix == "" {
		cc.prefix = DefaultPrefix
	}
	if err := validatePrefix(cc.prefix); err != nil {
		return clientConfig{}, err
	}
	set := 0
	for _, ok := range []bool{c.URL != "", c.Options != nil, c.ClusterOptions != nil} {
		if ok {
			set++
		}
	}
	switch {
	case set > 1:
		return clientConfig{}, fmt.Errorf("redis: config sets more than one of URL, Options and ClusterOptions; set one")
	case c.URL != "":
		opts, err := goredis.ParseURL(c.URL)
		if err != nil {
			// ParseURL's message may quote the URL, password included.
			return clientConfig{}, fmt.Errorf("redis: config URL is not a valid redis:// or rediss:// URL")
		}
		opts.ContextTimeoutEnabled = true
		cc.opts = opts
	case c.Options != nil:
		copied := *c.Options
		cc.opts = &copied
	case c.ClusterOptions != nil:
		copied := *c.ClusterOptions
		copied.MaxRetries, copied.MaxRedirects = -1, -1
		// Reads from replicas could miss a live token (Get reporting
		// ErrNotFound, a transition seeing its parent absent).
		copied.ReadOnly, copied.RouteByLatency, copied.RouteRandomly = false, false, false
		cc.cluster = &copied
	default:
		return clientConfig{}, fmt.Errorf("redis: config sets neither URL nor Options nor ClusterOptions")
	}
	if cc.opts != nil {
		cc.opts.MaxRetries = -1
	}
	cc.logger = c.Logger
	if cc.logger == nil {
		cc.logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return cc, nil
}

// clusterOptions turns the options of one node (from a URL or Options)
// into those of a cluster client seeded with that node, when Open finds
// that the node runs in cluster mode.
func clusterOptions(o *goredis.Options) (*goredis.ClusterOptions, error) {
	if o.DB != 0 {
		return nil, fmt.Errorf("%w: the server runs in cluster mode, which has only database 0, but the config selects database %d", ErrUnsupportedServer, o.DB)
	}
	return &goredis.ClusterOptions{
		Addrs:                 []string{o.Addr},
		ClientName:            o.ClientName,
		Dialer:                o.Dialer,
		OnConnect:             o.OnConnect,
		Protocol:              o.Protocol,
		Username:              o.Username,
		Password:              o.Password,
		CredentialsProvider:   o.CredentialsProvider,
		MaxRetries:            -1,
		MaxRedirects:          -1,
		DialTimeout:           o.DialTimeout,
		ReadTimeout:           o.ReadTimeout,
		WriteTimeout:          o.WriteTimeout,
		ContextTimeoutEnabled: o.ContextTimeoutEnabled,
		PoolFIFO:              o.PoolFIFO,
		PoolSize:              o.PoolSize,
		PoolTimeout:           o.PoolTimeout,
		MinIdleConns:          o.MinIdleConns,
		MaxIdleConns:          o.MaxIdleConns,
		MaxActiveConns:        o.MaxActiveConns,
		ConnMaxIdleTime:       o.ConnMaxIdleTime,
		ConnMaxLifetime:       o.ConnMaxLifetime,
		TLSConfig:             o.TLSConfig,
		DisableIdentity:       o.DisableIdentity,
		IdentitySuffix:        o.IdentitySuffix,
	}, nil
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
