package nats

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Defaults for the zero values of Config.
const (
	DefaultStream          = "BATON"
	DefaultPrefix          = "baton"
	DefaultAckWait         = 30 * time.Second
	DefaultMaxDeliver      = 20
	DefaultDuplicateWindow = 2 * time.Minute
)

// ErrConfig wraps every configuration error returned by New.
var ErrConfig = errors.New("nats transport: invalid config")

// Config configures a Transport. Every zero value has a documented default.
type Config struct {
	// URL of the NATS server or cluster (for example nats://127.0.0.1:4222;
	// several comma separated). Used only when Conn is nil. The transport
	// connects with ConnectOptions, reconnects forever, and closes the
	// connection on Close. Either URL or Conn is required.
	URL string
	// ConnectOptions are extra options (credentials, TLS, name) for
	// connecting to URL.
	ConnectOptions []nats.Option
	// Conn is an existing connection to use instead of URL. The transport
	// does not close it.
	Conn *nats.Conn

	// Stream is the JetStream stream that holds the signals. Default
	// "BATON". Tests use a unique name each.
	Stream string
	// Prefix starts every subject: signals go to <Prefix>.sig.<destination>
	// and parked signals to <Prefix>.parked.<destination>. Default "baton".
	// Two transports on one server need distinct prefixes as well as
	// distinct streams, because a subject belongs to one stream only.
	Prefix string
	// Replicas is the stream's replication factor on a JetStream cluster.
	// Default 1.
	Replicas int

	// AckWait is how long a delivery may stay unacknowledged before
	// JetStream redelivers it. Default 30s. It is a property of the
	// destination's durable consumer: the last transport to subscribe sets
	// it for everyone.
	AckWait time.Duration
	// MaxDeliver is how many deliveries a signal gets. A message delivered
	// more often is parked by the transport instead of being handed out.
	// Default 20; the engine usually parks sooner (engine.Config.MaxAttempts).
	MaxDeliver int
	// Prefetch is how many messages a subscription pulls before Next asks
	// for them. Default 1: a subscriber holds no message that ages against
	// AckWait while another subscriber waits. An engine that takes
	// deliveries in batches (engine.Config.Batch) wants about Batch here,
	// so that a batch's deliveries are already in the process. Messages
	// pulled but not yet handed out when a subscription closes (or a
	// process dies) come back only after AckWait.
	Prefetch int
	// DuplicateWindow is how long JetStream remembers published token ids
	// to drop quick republishes (Nats-Msg-Id). Default 2m. It only saves
	// work: receivers drop duplicates with the token store in any case.
	DuplicateWindow time.Duration

	// MonitorURL is the external server's HTTP monitoring address (its
	// http_port, for example http://127.0.0.1:8222), or the addresses of
	// every server of a cluster that may hold the stream, comma separated.
	// New reads /varz of each and refuses with ErrUnsafeDurability unless
	// every one syncs every write (jetstream { sync_interval: always }):
	// a client connection cannot see the setting. Empty, or an address
	// that does not answer, is refused the same way, unless
	// AllowUnsafeDurability. Not used by Embedded.NewTransport, which
	// reads its server's config directly.
	MonitorURL string

	// AllowUnsafeDurability lets New use a server that it cannot show
	// syncs every write before acknowledging it: one without
	// sync_interval: always, or one whose setting it cannot read (no
	// MonitorURL, monitoring unreachable). A server crash may then lose
	// acknowledged signals; each lost signal's token stays live for ever
	// (see "When a server loses a signal" in the package doc). New logs a
	// warning. Zero value: New refuses with ErrUnsafeDurability.
	AllowUnsafeDurability bool

	// Logger receives warnings and parked or malformed messages. Nil
	// discards.
	Logger *slog.Logger

	// embedded is the in-process server that Embedded.NewTransport
	// connects to: New reads its JetStream config instead of /varz.
	embedded *server.Server
}

func (c *Config) setDefaults() {
	if c.Stream == "" {
		c.Stream = DefaultStream
	}
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.AckWait == 0 {
		c.AckWait = DefaultAckWait
	}
	if c.MaxDeliver == 0 {
		c.MaxDeliver = DefaultMaxDeliver
	}
	if c.Prefetch == 0 {
		c.Prefetch = 1
	}
	if c.DuplicateWindow == 0 {
		c.DuplicateWindow = DefaultDuplicateWindow
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// maxPrefetch bounds Config.Prefetch.
const maxPrefetch = 1000

func (c *Config) validate() error {
	if c.URL == "" && c.Conn == nil {
		return fmt.Errorf("%w: set URL or Conn", ErrConfig)
	}
	if c.URL != "" && c.Conn != nil {
		return fmt.Errorf("%w: set only one of URL and Conn", ErrConfig)
	}
	if err := validStreamName(c.Stream); err != nil {
		return fmt.Errorf("%w: %v", ErrConfig, err)
	}
	if err := validSubjectPrefix(c.Prefix); err != nil {
		return fmt.Errorf("%w: %v", ErrConfig, err)
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		return fmt.Errorf("%w: Replicas must be 1 to 5, got %d", ErrConfig, c.Replicas)
	}
	if c.AckWait < time.Millisecond {
		return fmt.Errorf("%w: AckWait %v is too short", ErrConfig, c.AckWait)
	}
	if c.MaxDeliver < 1 {
		return fmt.Errorf("%w: MaxDeliver must be positive, got %d", ErrConfig, c.MaxDeliver)
	}
	if c.Prefetch < 1 || c.Prefetch > maxPrefetch {
		return fmt.Errorf("%w: Prefetch must be 1 to %d, got %d", ErrConfig, maxPrefetch, c.Prefetch)
	}
	if c.DuplicateWindow < 0 {
		return fmt.Errorf("%w: negative DuplicateWindow", ErrConfig)
	}
	return nil
}
