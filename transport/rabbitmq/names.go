package rabbitmq

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/batonhq/baton"
)

// nameToken turns a destination name into a part of a queue name. Every
// byte outside [A-Za-z0-9_-] becomes '~' and two uppercase hex digits, so
// queue names stay readable ASCII whatever the destination holds, and the
// encoding is injective: two destinations never share a queue. Names whose
// encoding is longer than maxNameToken are hashed; "~h" never occurs in the
// plain encoding ('~' is always followed by uppercase hex), so a hashed
// name never equals a plain one.
func nameToken(destination string) string {
	var b strings.Builder
	for i := 0; i < len(destination); i++ {
		c := destination[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-' {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "~%02X", c)
	}
	if b.Len() <= maxNameToken {
		return b.String()
	}
	sum := sha256.Sum256([]byte(destination))
	return "~h" + hex.EncodeToString(sum[:16])
}

// Queue and exchange names are AMQP short strings (at most 255 bytes): a
// prefix of at most maxPrefix bytes, ".parked." and a token of at most
// maxNameToken bytes stay well inside that.
const (
	maxNameToken = 128
	maxPrefix    = 100
)

// signalQueue is the quorum queue that holds destination's signals. It is
// also the routing key on the default exchange.
func (t *Transport) signalQueue(destination string) string {
	return t.cfg.Prefix + ".sig." + nameToken(destination)
}

// parkedQueue holds destination's parked signals.
func (t *Transport) parkedQueue(destination string) string {
	return t.cfg.Prefix + ".parked." + nameToken(destination)
}

// delayName names both the fanout exchange and the queue of one delay
// bucket; every destination shares the buckets of its transport's prefix.
func (t *Transport) delayName(bucket time.Duration) string {
	return t.cfg.Prefix + ".delay." + strconv.FormatInt(bucket.Milliseconds(), 10) + "ms"
}

// validPrefix accepts what makes a readable queue name prefix and refuses
// the "amq." names that RabbitMQ reserves for itself.
func validPrefix(prefix string) error {
	if prefix == "" {
		return fmt.Errorf("empty queue name prefix")
	}
	if len(prefix) > maxPrefix {
		return fmt.Errorf("queue name prefix longer than %d bytes", maxPrefix)
	}
	if strings.HasPrefix(prefix, "amq.") || prefix == "amq" {
		return fmt.Errorf("queue name prefix %q: names starting with amq. are reserved by RabbitMQ", prefix)
	}
	for i := 0; i < len(prefix); i++ {
		c := prefix[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-' || c == '.') {
			return fmt.Errorf("queue name prefix %q may hold only letters, digits, '.', '_' and '-'", prefix)
		}
	}
	return nil
}

// validDestination applies baton's rules for destination names (as
// baton.Signal.Validate does), so Subscribe refuses what Publish would.
func validDestination(destination string) error {
	return baton.ValidateName("destination", destination)
}

// redactURL returns the broker URL without its password, for logs and
// errors. A URL that does not parse is not shown at all.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}
