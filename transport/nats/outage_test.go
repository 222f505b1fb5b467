package nats

import (
	"context"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batonhq/baton/internal/testenv"
)

// messages keeps every log message.
type messages struct {
	mu  sync.Mutex
	all []string
}

func (m *messages) Enabled(context.Context, slog.Level) bool { return true }
func (m *messages) Handle(_ context.Context, r slog.Record) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.all = append(m.all, r.Message)
	return nil
}
func (m *messages) WithAttrs([]slog.Attr) slog.Handler { return m }
func (m *messages) WithGroup(string) slog.Handler      { return m }

func (m *messages) count(prefix string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, s := range m.all {
		if strings.HasPrefix(s, prefix) {
			n++
		}
	}
	return n
}

func (m *messages) waitFor(t *testing.T, prefix string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for m.count(prefix) == 0 {
		if time.Now().After(deadline) {
			m.mu.Lock()
			defer m.mu.Unlock()
			t.Fatalf("no log line %q; got %q", prefix, m.all)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// When the connection to the server is lost the transport says so once,
// and once again when it is back: the client reconnects by itself and in
// silence, so an operator saw nothing while signals could not be received
// or published (found running examples/orders through a proxy to NATS).
func TestConnectionLossIsLoggedOnceEachWay(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var e *Embedded
	var port int
	for range 20 {
		_, p, _ := net.SplitHostPort(testenv.StableAddr())
		port, _ = strconv.Atoi(p)
		var err error
		if e, err = StartEmbedded(EmbeddedConfig{DataDir: dir, Listen: true, Port: port}); err == nil {
			break
		}
	}
	if e == nil {
		t.Fatal("no embedded server")
	}
	url, monitor := e.ClientURL(), e.MonitorURL()
	logs := &messages{}
	tr, err := New(t.Context(), Config{URL: url, MonitorURL: monitor, Stream: "OUTAGE", Prefix: "outage", Logger: slog.New(logs)})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()

	e.Shutdown()
	logs.waitFor(t, "nats transport: lost the connection")
	time.Sleep(3 * time.Second) // reconnect attempts
	if n := logs.count("nats transport: lost the connection"); n != 1 {
		t.Errorf("%d lines say the connection was lost, want 1", n)
	}
	if e, err = StartEmbedded(EmbeddedConfig{DataDir: dir, Listen: true, Port: port}); err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown()
	logs.waitFor(t, "nats transport: connected again")
}

// Closing the transport is not a lost connection.
func TestCloseIsNotLoggedAsLostConnection(t *testing.T) {
	t.Parallel()
	e, err := StartEmbedded(EmbeddedConfig{DataDir: t.TempDir(), Listen: true})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown()
	logs := &messages{}
	tr, err := New(t.Context(), Config{URL: e.ClientURL(), MonitorURL: e.MonitorURL(), Stream: "CLOSE", Prefix: "close", Logger: slog.New(logs)})
	if err != nil {
		t.Fatal(err)
	}
	tr.Close()
	time.Sleep(200 * time.Millisecond)
	if n := logs.count("nats transport: lost the connection"); n != 0 {
		t.Errorf("Close logged a lost connection")
	}
}
