package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/batonhq/baton/transport"
	amqp "github.com/rabbitmq/amqp091-go"
)

// ErrServerVersion is returned by New when the broker is older than
// RabbitMQ 3.10, the first version whose quorum queues have message TTL
// and at-least-once dead-lettering, which the delayed Nack relies on.
var ErrServerVersion = errors.New("rabbitmq transport: RabbitMQ 3.10 or newer is required")

// dialTimeout bounds one connection attempt (TCP, TLS and AMQP handshake).
const dialTimeout = 10 * time.Second

// dial opens one connection. The URL's password never appears in its
// errors: the library reports only the address.
func (t *Transport) dial(ctx context.Context) (*amqp.Connection, error) {
	timeout := dialTimeout
	if deadline, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(deadline))
	}
	if timeout <= 0 {
		return nil, context.DeadlineExceeded
	}
	var cfg amqp.Config
	if t.cfg.amqpConfig != nil {
		cfg = *t.cfg.amqpConfig
	}
	if cfg.Properties == nil {
		cfg.Properties = amqp.NewConnectionProperties()
		cfg.Properties.SetClientConnectionName("baton " + t.cfg.Prefix)
	}
	if cfg.Dial == nil {
		cfg.Dial = amqp.DefaultDial(timeout)
	}
	started := time.Now()
	conn, err := amqp.DialConfig(t.cfg.URL, cfg)
	if err != nil {
		// amqp091 reports any failure after the credentials were sent as
		// ErrCredentials; one that came with the dial's deadline is a
		// broker that did not answer in time, not a refused password.
		if errors.Is(err, amqp.ErrCredentials) && time.Since(started) >= timeout*9/10 {
			return nil, fmt.Errorf("the broker did not finish the connection handshake within %s: it is overloaded, or a proxy in between holds the connection", timeout.Round(time.Millisecond))
		}
		return nil, uriError(err)
	}
	return conn, nil
}

// checkServer refuses brokers that lack what the transport relies on.
func checkServer(conn *amqp.Connection) (version string, err error) {
	product, _ := conn.Properties["product"].(string)
	version, _ = conn.Properties["version"].(string)
	major, minor, ok := parseVersion(version)
	if !ok || !strings.EqualFold(product, "RabbitMQ") {
		// Another broker, or a version string we cannot read: let the
		// queue declarations decide.
		return product + " " + version, nil
	}
	if major < 3 || major == 3 && minor < 10 {
		return version, fmt.Errorf("%w: the broker runs %s", ErrServerVersion, version)
	}
	return version, nil
}

func parseVersion(v string) (major, minor int, ok bool) {
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return 0, 0, false
	}
	major, err1 := strconv.Atoi(parts[0])
	minor, err2 := strconv.Atoi(parts[1])
	return major, minor, err1 == nil && err2 == nil
}

// setConn makes conn the connection that publishes and subscriptions use.
func (t *Transport) setConn(conn *amqp.Connection) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.conn = conn
	close(t.connReady)
	return true
}

// lose forgets conn once it is closed, so that waiters block until the
// keeper has connected again. Anyone who notices the loss may call it.
func (t *Transport) lose(conn *amqp.Connection) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.conn != conn || conn == nil {
		return
	}
	t.conn = nil
	t.connReady = make(chan struct{})
	t.idle = nil // their channels died with the connection
	if t.blocked {
		t.blocked = false
		close(t.unblocked)
	}
}

// setBlocked records the broker's connection.blocked and unblocked
// notifications (resource alarms), during which publishes wait.
func (t *Transport) setBlocked(conn *amqp.Connection, blocked bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.conn != conn || t.blocked == blocked {
		return
	}
	t.blocked = blocked
	if blocked {
		t.unblocked = make(chan struct{})
	} else {
		close(t.unblocked)
	}
}

// connection returns the current connection, waiting while the transport
// reconnects and, for publishing, while the broker blocks publishers.
func (t *Transport) connection(ctx context.Context, forPublish bool) (*amqp.Connection, error) {
	for {
		t.mu.Lock()
		closed, conn, ready, unblocked := t.closed, t.conn, t.connReady, t.unblocked
		t.mu.Unlock()
		if closed {
			return nil, transport.ErrClosed
		}
		if conn != nil && conn.IsClosed() {
			t.lose(conn)
			continue
		}
		if conn != nil {
			if !forPublish {
				return conn, nil
			}
			select {
			case <-unblocked:
				return conn, nil
			default:
			}
			select {
			case <-unblocked:
				continue
			case <-ctx.Done():
				return nil, fmt.Errorf("rabbitmq transport: the broker blocks publishing (a memory or disk alarm): %w", ctx.Err())
			case <-t.done:
				return nil, transport.ErrClosed
			}
		}
		select {
		case <-ready:
		case <-ctx.Done():
			return nil, fmt.Errorf("rabbitmq transport: no connection to the broker: %w", ctx.Err())
		case <-t.done:
			return nil, transport.ErrClosed
		}
	}
}

// keepConnected watches conn and, when it closes, connects again with
// backoff until it succeeds or the transport closes. Subscriptions and
// publishes pick up the new connection through connection.
func (t *Transport) keepConnected(conn *amqp.Connection) {
	defer t.wg.Done()
	for {
		closed := conn.NotifyClose(make(chan *amqp.Error, 1))
		blocked := conn.NotifyBlocked(make(chan amqp.Blocking, 1))
		var reason *amqp.Error
	watch:
		for {
			select {
			case b, ok := <-blocked:
				if !ok {
					blocked = nil
					continue
				}
				if b.Active {
					t.log.Warn("the broker blocks publishing (resource alarm); publishes wait", "reason", b.Reason)
				} else {
					t.log.Info("the broker accepts publishing again")
				}
				t.setBlocked(conn, b.Active)
			case reason = <-closed:
				break watch
			case <-t.done:
				return
			}
		}
		t.lose(conn)
		if t.isClosed() {
			return
		}
		t.log.Warn("connection to the broker lost; reconnecting", "url", redactURL(t.cfg.URL), "err", reason)
		if conn = t.redial(); conn == nil {
			return
		}
	}
}

// reconnectReportInterval is how often, at most, redial logs that the
// broker is still unreachable.
const reconnectReportInterval = time.Minute

// redial connects with backoff; nil means the transport closed.
func (t *Transport) redial() *amqp.Connection {
	backoff := backoff{max: 5 * time.Second}
	started, lastReport, attempts := time.Now(), time.Now(), 0
	for {
		timer := time.NewTimer(backoff.next())
		select {
		case <-timer.C:
		case <-t.done:
			timer.Stop()
			return nil
		}
		ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
		conn, err := t.dial(ctx)
		cancel()
		attempts++
		if err != nil {
			// The loss was logged; a line per attempt (every 5s) would
			// flood the log for as long as the outage lasts.
			if time.Since(lastReport) < reconnectReportInterval {
				t.log.Debug("reconnecting to the broker failed; retrying", "url", redactURL(t.cfg.URL), "err", err)
				continue
			}
			lastReport = time.Now()
			t.log.Warn("the broker is still unreachable; retrying", "url", redactURL(t.cfg.URL),
				"since", started.UTC().Format(time.RFC3339), "attempts", attempts, "err", err)
			continue
		}
		if version, err := checkServer(conn); err != nil {
			// A node of a cluster being upgraded? Use it, but say so.
			t.log.Error("reconnected to a broker that baton does not support", "version", version, "err", err)
		}
		if !t.setConn(conn) {
			conn.Close()
			return nil
		}
		t.log.Info("reconnected to the broker", "url", redactURL(t.cfg.URL),
			"after", time.Since(started).Round(time.Millisecond).String(), "attempts", attempts)
		return conn
	}
}

// backoff doubles from 50ms to max.
type backoff struct{ d, max time.Duration }

func (b *backoff) next() time.Duration {
	switch {
	case b.d == 0:
		b.d = 50 * time.Millisecond
	case b.d < b.max:
		b.d = min(2*b.d, b.max)
	}
	return b.d
}

func (b *backoff) reset() { b.d = 0 }
