package nats

import (
	"log/slog"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/batonhq/baton/internal/testenv"
	"github.com/batonhq/baton/internal/testlog"
)

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
	logs := &testlog.Recorder{}
	tr, err := New(t.Context(), Config{URL: url, MonitorURL: monitor, Stream: "OUTAGE", Prefix: "outage", Logger: slog.New(logs)})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()

	e.Shutdown()
	logs.WaitFor(t, "nats transport: lost the connection", 20*time.Second)
	time.Sleep(3 * time.Second) // reconnect attempts
	if n := logs.Count("nats transport: lost the connection"); n != 1 {
		t.Errorf("%d lines say the connection was lost, want 1", n)
	}
	if e, err = StartEmbedded(EmbeddedConfig{DataDir: dir, Listen: true, Port: port}); err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown()
	logs.WaitFor(t, "nats transport: connected again", 20*time.Second)
}

// Closing the transport is not a lost connection.
func TestCloseIsNotLoggedAsLostConnection(t *testing.T) {
	t.Parallel()
	e, err := StartEmbedded(EmbeddedConfig{DataDir: t.TempDir(), Listen: true})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown()
	logs := &testlog.Recorder{}
	tr, err := New(t.Context(), Config{URL: e.ClientURL(), MonitorURL: e.MonitorURL(), Stream: "CLOSE", Prefix: "close", Logger: slog.New(logs)})
	if err != nil {
		t.Fatal(err)
	}
	tr.Close()
	time.Sleep(200 * time.Millisecond)
	if n := logs.Count("nats transport: lost the connection"); n != 0 {
		t.Errorf("Close logged a lost connection")
	}
}
