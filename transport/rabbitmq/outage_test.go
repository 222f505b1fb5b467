package rabbitmq

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/internal/testenv"
	"github.com/batonhq/baton/internal/testlog"
)

// An outage of the broker is a line when the connection is lost, not
// also a line for every failed attempt to reconnect (one every 5s for as
// long as the outage lasts).
func TestOutageIsNotALinePerReconnectAttempt(t *testing.T) {
	t.Parallel()
	url := testenv.Addr(t, testenv.RabbitMQ)
	p := startProxy(t, url)
	cfg := testConfig(t, p.url(url))
	logs := &testlog.Recorder{}
	cfg.Logger = slog.New(logs)
	newTestTransport(t, cfg)

	p.setRefuse(true)
	p.cut()
	time.Sleep(8 * time.Second) // attempts after 50ms, 100ms, ... 3.2s, 5s
	p.setRefuse(false)
	got := logs.Messages(slog.LevelWarn)
	failed := 0
	for _, m := range got {
		if strings.HasPrefix(m, "reconnecting to the broker failed") {
			failed++
		}
	}
	if failed > 1 {
		t.Errorf("%d lines for failed reconnect attempts in 8s, want at most one: %q", failed, got)
	}
}

// A broker too slow to finish the connection handshake within the dial
// timeout is reported as that, not as refused credentials: amqp091 turns
// any failure after the credentials were sent into ErrCredentials
// ("username or password not allowed"), which sent an operator after the
// password of a broker that was only overloaded.
func TestSlowHandshakeIsNotReportedAsBadCredentials(t *testing.T) {
	t.Parallel()
	url := testenv.Addr(t, testenv.RabbitMQ)
	p := startProxy(t, url)
	p.mu.Lock()
	p.stall = true
	p.mu.Unlock()
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	_, err := New(ctx, testConfig(t, p.url(url)))
	if err == nil {
		t.Fatal("New over a stalled handshake returned no error")
	}
	if strings.Contains(err.Error(), "username or password") || !strings.Contains(err.Error(), "handshake") {
		t.Fatalf("New over a stalled handshake: %v; want an error that says the handshake did not finish", err)
	}
}
