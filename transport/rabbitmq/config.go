package rabbitmq

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Defaults for the zero values of Config.
const (
	DefaultPrefix         = "baton"
	DefaultPrefetch       = 16
	DefaultAckWait        = 30 * time.Second
	DefaultPublishTimeout = 10 * time.Second
)

// ErrConfig wraps every configuration error returned by New.
var ErrConfig = errors.New("rabbitmq transport: invalid config")

// Config configures a Transport. Every zero value has a documented default.
type Config struct {
	// URL of the broker, amqp://user:password@host:5672/vhost (or amqps://).
	// Required. Logs and errors show it without the password.
	URL string

	// Prefix starts every queue and exchange name: signals wait in
	// <Prefix>.sig.<destination>, parked ones in
	// <Prefix>.parked.<destination>, delayed ones in <Prefix>.delay.<n>ms.
	// Letters, digits, '.', '_' and '-', at most 100 bytes, not starting
	// with "amq.". Default "baton". Tests use a unique prefix each.
	Prefix string

	// Prefetch is how many unacknowledged deliveries the broker sends a
	// subscription ahead of Next (AMQP basic.qos per consumer). Default 16.
	Prefetch int

	// AckWait is how long a delivery may stay unacknowledged before the
	// subscription hands it back to the queue for redelivery. The clock
	// starts when the delivery arrives and restarts when Next hands it out.
	// Default 30s. It must stay below the broker's consumer_timeout
	// (default 30 minutes), which closes the channel of a consumer that
	// holds a delivery longer.
	AckWait time.Duration

	// PublishTimeout bounds one Publish (and the copy that Nack and Park
	// publish, and the declarations of Subscribe): waiting for a connection
	// during an outage, for the broker to lift a resource alarm, and for
	// its confirm. Default 10s. One PublishBatch gets one PublishTimeout
	// for all its signals; no more are sent once it ran out, but a send
	// the broker stopped reading (it blocks publishers under a resource
	// alarm) ends only when the broker reads again or the connection
	// drops, and every signal of the batch is then ErrNoConfirm.
	PublishTimeout time.Duration

	// Logger receives connection events, warnings and parked or malformed
	// messages. Nil discards.
	Logger *slog.Logger

	// amqpConfig, when set by tests, replaces the connection settings.
	amqpConfig *amqp.Config
}

func (c *Config) setDefaults() {
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.Prefetch == 0 {
		c.Prefetch = DefaultPrefetch
	}
	if c.AckWait == 0 {
		c.AckWait = DefaultAckWait
	}
	if c.PublishTimeout == 0 {
		c.PublishTimeout = DefaultPublishTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

func (c *Config) validate() error {
	if c.URL == "" {
		return fmt.Errorf("%w: URL is required", ErrConfig)
	}
	if _, err := amqp.ParseURI(c.URL); err != nil {
		return fmt.Errorf("%w: URL %s: %v", ErrConfig, redactURL(c.URL), uriError(err))
	}
	if err := validPrefix(c.Prefix); err != nil {
		return fmt.Errorf("%w: %v", ErrConfig, err)
	}
	if c.Prefetch < 1 || c.Prefetch > 65535 {
		return fmt.Errorf("%w: Prefetch must be 1 to 65535, got %d", ErrConfig, c.Prefetch)
	}
	if c.AckWait < time.Millisecond {
		return fmt.Errorf("%w: AckWait %v is too short", ErrConfig, c.AckWait)
	}
	if c.PublishTimeout < time.Millisecond {
		return fmt.Errorf("%w: PublishTimeout %v is too short", ErrConfig, c.PublishTimeout)
	}
	return nil
}

// uriError drops the URL that net/url repeats in its errors, since it may
// hold a password.
func uriError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
