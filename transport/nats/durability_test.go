package nats

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/internal/testenv"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The machine's NATS (BATON_TEST_NATS) runs JetStream without
// sync_interval: always and without a monitoring port. New must refuse it
// without creating anything, and take it only when durability is waived
// explicitly, with a warning.
func TestRefusesExternalServerThatCannotShowSyncAlways(t *testing.T) {
	t.Parallel()
	url := testenv.Addr(t, testenv.NATS)
	cfg := testConfig(t)
	cfg.URL = url
	_, err := New(t.Context(), cfg)
	if !errors.Is(err, ErrUnsafeDurability) {
		t.Fatalf("New(%s) without MonitorURL = %v, want ErrUnsafeDurability", redactURL(url), err)
	}
	for _, hint := range []string{"sync_interval: always", "MonitorURL", "AllowUnsafeDurability"} {
		if !strings.Contains(err.Error(), hint) {
			t.Errorf("the refusal does not mention %s: %v", hint, err)
		}
	}
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Stream(t.Context(), cfg.Stream); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Errorf("after the refusal, stream %s: %v, want ErrStreamNotFound", cfg.Stream, err)
	}

	var logged strings.Builder
	cfg.Logger = slog.New(slog.NewTextHandler(&logged, nil))
	tr := newExternalTransport(t, url, cfg)
	if err := tr.Publish(t.Context(), newSignal("waived")); err != nil {
		t.Fatalf("Publish with AllowUnsafeDurability: %v", err)
	}
	if got := strings.Count(logged.String(), "level=WARN msg=\"nats transport: durability is not guaranteed"); got != 1 {
		t.Errorf("New with AllowUnsafeDurability logged %d durability warnings, want 1:\n%s", got, logged.String())
	}
}

// An external server is taken only when /varz of every server named in
// MonitorURL shows sync_always; a server without it, or monitoring that
// does not answer, is refused unless durability is waived.
func TestRefusesServerThatDoesNotSyncAlways(t *testing.T) {
	t.Parallel()
	syncs, lazy := startServer(t, true), startServer(t, false)
	monitor := func(s *server.Server) string { return "http://" + s.MonitorAddr().String() }
	cases := []struct {
		name       string
		srv        *server.Server
		monitorURL string
		refusal    string // "" if accepted
	}{
		{"SyncAlways", syncs, monitor(syncs), ""},
		{"NoMonitorURL", syncs, "", "MonitorURL is not set"},
		{"NoSyncAlways", lazy, monitor(lazy), "does not sync every write"},
		{"MonitoringUnreachable", syncs, "http://" + closedAddr(t), "cannot read the sync setting"},
		{"OneServerOfTheClusterWithout", syncs, monitor(syncs) + ", " + monitor(lazy), lazy.MonitorAddr().String()},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			cfg := testConfig(t)
			cfg.URL, cfg.MonitorURL = c.srv.ClientURL(), c.monitorURL
			tr, err := New(t.Context(), cfg)
			if c.refusal == "" {
				if err != nil {
					t.Fatalf("New = %v, want success", err)
				}
				tr.Close()
				return
			}
			if !errors.Is(err, ErrUnsafeDurability) || !strings.Contains(err.Error(), c.refusal) {
				t.Fatalf("New = %v, want ErrUnsafeDurability saying %q", err, c.refusal)
			}
			cfg.AllowUnsafeDurability = true
			tr, err = New(t.Context(), cfg)
			if err != nil {
				t.Fatalf("New with AllowUnsafeDurability = %v", err)
			}
			tr.Close()
		})
	}
}

// Embedded.NewTransport reads the server's own JetStream config: a server
// without SyncAlways is refused like an external one.
func TestEmbeddedTransportChecksSyncAlways(t *testing.T) {
	t.Parallel()
	lazy := &Embedded{srv: startServer(t, false)}
	if _, err := lazy.NewTransport(t.Context(), testConfig(t)); !errors.Is(err, ErrUnsafeDurability) || !strings.Contains(err.Error(), "embedded server") {
		t.Fatalf("NewTransport over a server without SyncAlways = %v, want ErrUnsafeDurability naming the embedded server", err)
	}
	cfg := testConfig(t)
	cfg.AllowUnsafeDurability = true
	tr, err := lazy.NewTransport(t.Context(), cfg)
	if err != nil {
		t.Fatalf("NewTransport with AllowUnsafeDurability = %v", err)
	}
	tr.Close()
	newEmbeddedTransport(t, startEmbedded(t, EmbeddedConfig{}), testConfig(t)) // StartEmbedded syncs always
}

// startServer starts a JetStream server on free ports for clients and
// monitoring, syncing every write or not.
func startServer(t *testing.T, syncAlways bool) *server.Server {
	t.Helper()
	srv, err := server.NewServer(&server.Options{
		JetStream: true, StoreDir: t.TempDir(), SyncAlways: syncAlways, MaxPayload: maxMsgSize,
		Host: "127.0.0.1", Port: server.RANDOM_PORT,
		HTTPHost: "127.0.0.1", HTTPPort: server.RANDOM_PORT, NoLog: true, NoSigs: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	return srv
}

// closedAddr returns a local address where nothing listens.
func closedAddr(t *testing.T) string {
	t.Helper()
	var lc net.ListenConfig
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
