package conformance

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"time"

	"github.com/batonhq/baton"
)

// Defaults of Config.
const (
	DefaultTokenServiceAddr = "127.0.0.1:7461"
	DefaultType             = "conformance.count"
	DefaultTimeout          = 10 * time.Second
)

// kitDestination is the destination of the roots whose children the kit
// sends: the kit itself, as the sender of every signal.
const kitDestination = "conformance-kit"

// otherDestination addresses the tokens of signals meant for someone else.
const otherDestination = "conformance-elsewhere"

// ErrInvalidConfig wraps every error of a Config that Run refuses.
var ErrInvalidConfig = errors.New("conformance: invalid config")

// Config configures the kit.
type Config struct {
	// Destination is the participant's destination: the system name it
	// uses at the kit's token service. Required.
	Destination string
	// ParticipantKey is the API key with which the participant calls the
	// kit's token service. Required.
	ParticipantKey string
	// TokenServiceAddr is where the kit's token service listens. The
	// participant must be configured with it. Default
	// DefaultTokenServiceAddr.
	TokenServiceAddr string
	// Type is the type of the participant's counting activity. Default
	// DefaultType.
	Type string
	// Timeout bounds each request to the participant, and how long a check
	// waits for the participant to settle a signal. Default DefaultTimeout.
	Timeout time.Duration
	// Progress, if set, receives a line per check as it runs.
	Progress io.Writer
}

func (c *Config) validate() error {
	if c.Destination == "" {
		return fmt.Errorf("%w: the participant's destination is required", ErrInvalidConfig)
	}
	if c.ParticipantKey == "" {
		return fmt.Errorf("%w: the participant's API key at the kit's token service is required", ErrInvalidConfig)
	}
	if c.TokenServiceAddr == "" {
		c.TokenServiceAddr = DefaultTokenServiceAddr
	}
	if c.Type == "" {
		c.Type = DefaultType
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if err := (baton.Emit{Destination: c.Destination, Type: c.Type}).Validate(); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidConfig, err)
	}
	if c.Destination == kitDestination || c.Destination == otherDestination {
		return fmt.Errorf("%w: destination %q is the kit's own", ErrInvalidConfig, c.Destination)
	}
	return nil
}

// validParticipant checks the URL at which a participant serves signals.
func validParticipant(participant string) error {
	u, err := url.Parse(participant)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%w: participant %q is not an http or https URL", ErrInvalidConfig, participant)
	}
	return nil
}
