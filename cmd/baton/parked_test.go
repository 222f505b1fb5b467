package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/backend/memory"
	"github.com/batonhq/baton/engine"
	"github.com/batonhq/baton/internal/testenv"
	"github.com/batonhq/baton/store"
	"github.com/batonhq/baton/tokenservice"
	"github.com/batonhq/baton/tokenservice/client"
	"github.com/batonhq/baton/transport"
	natstransport "github.com/batonhq/baton/transport/nats"
	"github.com/batonhq/baton/transport/rabbitmq"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestParkedSession is an operator's session against the real NATS: a
// billing engine parks two signals (a handler bug); the operator lists
// them, shows one, fixes the handler and replays it (applied once), and
// discards the other through the token service (its token retired, the
// discard recorded).
func TestParkedSession(t *testing.T) {
	t.Parallel()
	onRealBrokers(t, parkedSession)
}

// onRealBrokers runs session against the real NATS and RabbitMQ, each on a
// stream or queues of its own, with the flags that name them to baton.
func onRealBrokers(t *testing.T, session func(t *testing.T, tr parkingTransport, broker []string)) {
	t.Run("nats", func(t *testing.T) {
		t.Parallel()
		url := testenv.Addr(t, testenv.NATS)
		b := make([]byte, 5)
		_, _ = rand.Read(b)
		stream, prefix := "OPS_"+hex.EncodeToString(b), "ops_"+hex.EncodeToString(b)
		tr, err := natstransport.New(t.Context(), natstransport.Config{URL: url, Stream: stream, Prefix: prefix, AllowUnsafeDurability: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			tr.Close()
			if nc, err := natsgo.Connect(url); err == nil {
				if js, err := jetstream.New(nc); err == nil {
					_ = js.DeleteStream(context.Background(), stream)
				}
				nc.Close()
			}
		})
		session(t, tr, []string{"--nats", url, "--stream", stream, "--prefix", prefix, "--allow-unsafe-durability"})
	})
	t.Run("rabbitmq", func(t *testing.T) {
		t.Parallel()
		url := testenv.Addr(t, testenv.RabbitMQ)
		b := make([]byte, 5)
		_, _ = rand.Read(b)
		prefix := "ops-" + hex.EncodeToString(b)
		tr, err := rabbitmq.New(t.Context(), rabbitmq.Config{URL: url, Prefix: prefix, AckWait: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			tr.Close()
			for _, q := range []string{prefix + ".sig.billing", prefix + ".parked.billing"} {
				_, _ = exec.Command("rabbitmqctl", "delete_queue", q).CombinedOutput()
			}
		})
		session(t, tr, []string{"--rabbitmq", url, "--rabbitmq-prefix", prefix})
	})
}

// parkingTransport is a transport whose parked signals an operator acts on.
type parkingTransport interface {
	transport.Transport
	transport.ParkedStore
}

func parkedSession(t *testing.T, tr parkingTransport, broker []string) {
	var err error
	tokens := memory.NewTokenStore()
	opsKey, opsHash := tokenservice.NewAPIKey()
	api, err := tokenservice.New(tokenservice.Config{Tokens: tokens, Systems: []tokenservice.System{
		{Name: "ops", KeySHA256: opsHash, Destinations: []string{tokenservice.AnyDestination}, Observe: true}}})
	if err != nil {
		t.Fatal(err)
	}
	service := httptest.NewServer(api)
	t.Cleanup(service.Close)
	billing := startBuggyBilling(t, tokens, tr)
	fixed, applied, sigs := &billing.fixed, &billing.applied, billing.sigs
	var list string
	deadline := time.Now().Add(20 * time.Second)
	for strings.Count(list, "charge") < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the signals were not parked:\n%s", list)
		}
		time.Sleep(50 * time.Millisecond)
		list, err = runBaton(t, append([]string{"parked", "list", "--destination", "billing"}, broker...)...)
		must(t, err)
	}
	t.Logf("$ baton parked list --destination billing\n%s", list)
	ids := parkedIDs(t, list)

	show, err := runBaton(t, append([]string{"parked", "show", ids[0]}, broker...)...)
	must(t, err)
	t.Logf("$ baton parked show %s\n%s", ids[0], show)
	if !strings.Contains(show, "bug #42") || !strings.Contains(show, `{"amount":12}`) {
		t.Errorf("show lacks the reason or the payload:\n%s", show)
	}

	fixed.Store(true)
	out, err := runBaton(t, append([]string{"parked", "replay", ids[0]}, broker...)...)
	must(t, err)
	t.Logf("$ baton parked replay %s\n%s", ids[0], out)
	for deadline := time.Now().Add(20 * time.Second); applied.Load() < 1; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the replayed signal was not applied")
		}
	}

	auditLog := filepath.Join(t.TempDir(), "discards.jsonl")
	_, err = runBaton(t, append([]string{"parked", "discard", ids[1], "--server", service.URL, "--key", opsKey, "--audit-log", auditLog}, broker...)...)
	if err == nil || !strings.Contains(err.Error(), "reason") {
		t.Errorf("discard without --why: %v, want a refusal", err)
	}
	out, err = runBaton(t, append([]string{"parked", "discard", ids[1], "--server", service.URL, "--key", opsKey, "--audit-log", auditLog,
		"--operator", "ada", "--why", "customer cancelled; refunded by hand (ticket 7)"}, broker...)...)
	must(t, err)
	t.Logf("$ baton parked discard %s --operator ada --why ...\n%s", ids[1], out)
	record, err := os.ReadFile(auditLog)
	must(t, err)
	if !strings.Contains(string(record), `"operator":"ada"`) || !strings.Contains(string(record), `"token_retired":true`) {
		t.Errorf("audit log %q", record)
	}
	remaining, err := runBaton(t, append([]string{"parked", "list", "--destination", "billing"}, broker...)...)
	must(t, err)
	if !strings.Contains(remaining, "no parked signals") {
		t.Errorf("parked after replay and discard:\n%s", remaining)
	}
	time.Sleep(300 * time.Millisecond)
	if n := applied.Load(); n != 1 {
		t.Errorf("applied %d times, want 1 (the replayed signal only)", n)
	}
	for _, sig := range sigs {
		if _, err := tokens.Get(context.Background(), sig.ID); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("token %s after replay and discard: %v, want it consumed", sig.ID, err)
		}
	}
}

// buggyBilling is a billing engine whose charge handler has a bug until
// fixed is set, with two charges sent to it; both get parked.
type buggyBilling struct {
	fixed   atomic.Bool
	applied atomic.Int64
	sigs    []baton.Signal
}

func startBuggyBilling(t *testing.T, tokens store.TokenStore, tr parkingTransport) *buggyBilling {
	t.Helper()
	b := &buggyBilling{}
	e, err := engine.New(engine.Config{Destination: "billing", Tokens: tokens, Entities: memory.NewEntityStore(), Dispatch: tr, Source: tr,
		RedeliveryDelay: 10 * time.Millisecond, MaxAttempts: 2})
	if err != nil {
		t.Fatal(err)
	}
	must(t, engine.Register(e, engine.Activity[struct{}]{Type: "charge",
		Entity: func(sig baton.Signal) (string, error) { return "account-" + sig.ID.String(), nil },
		Handle: func(context.Context, baton.Signal, *struct{}) (engine.Effects, error) {
			if !b.fixed.Load() {
				return engine.Effects{}, engine.Permanent(errors.New("nil map in charge (bug #42)"))
			}
			b.applied.Add(1)
			return engine.Effects{}, nil
		}}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = e.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	for range 2 {
		sig, err := e.IssueRoot(ctx, baton.Emit{Destination: "billing", Type: "charge", Payload: []byte(`{"amount":12}`)}, 0)
		must(t, err)
		must(t, tr.Publish(ctx, sig))
		b.sigs = append(b.sigs, sig)
	}
	return b
}

// On baton serve, a stuck token's conversation is drawn from the graph its
// dashboard recorded.
func TestTokensStuckDrawsConversations(t *testing.T) {
	t.Parallel()
	systems, k := systemsFile(t, false)
	s := start(t, options(t, systems))
	edge, err := client.New(s.url, k.edge, client.Options{})
	must(t, err)
	defer edge.Close()
	root, err := edge.Issue(t.Context(), baton.Token{Destination: "billing", Type: "charge", Digest: baton.DigestOf(nil)})
	must(t, err)
	time.Sleep(20 * time.Millisecond)
	out, err := runBaton(t, "tokens", "stuck", "--server", s.url, "--key", k.ops, "--destination", "billing", "--older-than", "1ms")
	must(t, err)
	if !strings.Contains(out, "conversation "+root.Conversation.String()+" (1 signals)") || !strings.Contains(out, "charge @billing") {
		t.Errorf("baton tokens stuck on baton serve does not draw the conversation:\n%s", out)
	}
	if out, err = runBaton(t, "tokens", "stuck", "--server", s.url, "--key", k.ops, "--destination", "billing", "--older-than", "1ms", "--graphs", "0"); err != nil || strings.Contains(out, "conversation "+root.Conversation.String()) {
		t.Errorf("--graphs 0 drew a conversation (%v):\n%s", err, out)
	}
}

// A NATS server whose durability the command cannot check is refused with
// the flags that fix it, --nats-monitor and --allow-unsafe-durability, not
// the Go config fields (found in review); with --nats-monitor it is used.
func TestBrokerRefusalNamesTheFlags(t *testing.T) {
	t.Parallel()
	srv, err := natstransport.StartEmbedded(natstransport.EmbeddedConfig{DataDir: t.TempDir(), Listen: true})
	must(t, err)
	t.Cleanup(srv.Shutdown)
	_, err = runBaton(t, "parked", "list", "--nats", srv.ClientURL(), "--destination", "billing")
	if err == nil {
		t.Fatal("parked list on a NATS server without --nats-monitor: no error")
	}
	for _, want := range []string{"--nats-monitor", "--allow-unsafe-durability"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %s: %v", want, err)
		}
	}
	if strings.Contains(err.Error(), "Config.") {
		t.Errorf("error names a Go config field: %v", err)
	}
	if !errors.Is(err, natstransport.ErrUnsafeDurability) {
		t.Errorf("error %v does not match natstransport.ErrUnsafeDurability", err)
	}
	out, err := runBaton(t, "parked", "list", "--nats", srv.ClientURL(), "--nats-monitor", srv.MonitorURL(), "--destination", "billing")
	if err != nil || !strings.Contains(out, "no parked signals") {
		t.Errorf("parked list with --nats-monitor: %v\n%s", err, out)
	}
}

// baton parked discard checks --why and --operator before it opens or
// creates anything, naming the flag; without a key it says how to create
// one that may discard: one that consumes the destination's tokens, not an
// observe key (found in review).
func TestDiscardChecksItsFlagsFirst(t *testing.T) {
	t.Setenv("USER", "")
	t.Setenv("BATON_API_KEY", "")
	srv, err := natstransport.StartEmbedded(natstransport.EmbeddedConfig{DataDir: t.TempDir(), Listen: true})
	must(t, err)
	t.Cleanup(srv.Shutdown)
	auditLog := filepath.Join(t.TempDir(), "discards.jsonl")
	discard := []string{"parked", "discard", "some-id", "--nats", srv.ClientURL(), "--allow-unsafe-durability",
		"--server", "http://127.0.0.1:1", "--audit-log", auditLog}
	for _, c := range []struct {
		args      []string
		want, not string
	}{
		{[]string{"--key", "k", "--operator", "ada"}, "--why", ""},
		{[]string{"--key", "k", "--why", "customer cancelled"}, "--operator", ""},
		{[]string{"--operator", "ada", "--why", "customer cancelled"}, "--destination '*'", "--observe"},
	} {
		_, err := runBaton(t, append(discard, c.args...)...)
		if err == nil || !strings.Contains(err.Error(), c.want) || (c.not != "" && strings.Contains(err.Error(), c.not)) {
			t.Errorf("parked discard %v: %v; want an error that says %q", c.args, err, c.want)
		}
		if _, err := os.Stat(auditLog); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("parked discard %v created the audit log (%v)", c.args, err)
		}
	}
}

// parkedIDs reads the ID column of baton parked list.
func parkedIDs(t *testing.T, list string) []string {
	t.Helper()
	var ids []string
	for _, line := range strings.Split(strings.TrimSpace(list), "\n")[1:] {
		ids = append(ids, strings.Fields(line)[0])
	}
	return ids
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// observedService is a token service over a memory store with one system,
// ops, that observes every token; it returns ops's key.
func observedService(t *testing.T) (*memory.TokenStore, *httptest.Server, string) {
	t.Helper()
	tokens := memory.NewTokenStore()
	key, hash := tokenservice.NewAPIKey()
	api, err := tokenservice.New(tokenservice.Config{Tokens: tokens, Systems: []tokenservice.System{{Name: "ops", KeySHA256: hash, Observe: true}}})
	must(t, err)
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	return tokens, srv, key
}

// TestTokensStuck lists the live tokens older than a threshold.
func TestTokensStuck(t *testing.T) {
	t.Parallel()
	tokens, srv, key := observedService(t)
	old, err := tokens.Issue(t.Context(), baton.Token{Destination: "billing", Type: "charge", Digest: baton.DigestOf(nil), CreatedAt: time.Now().Add(-time.Hour)})
	must(t, err)
	fresh, err := tokens.Issue(t.Context(), baton.Token{Destination: "billing", Type: "charge", Digest: baton.DigestOf(nil), CreatedAt: time.Now()})
	must(t, err)
	out, err := runBaton(t, "tokens", "stuck", "--server", srv.URL, "--key", key, "--destination", "billing", "--destination", "shipping", "--older-than", "10m")
	must(t, err)
	if !strings.Contains(out, old.ID.String()) || strings.Contains(out, fresh.ID.String()) || !strings.Contains(out, "1 live tokens") {
		t.Errorf("baton tokens stuck:\n%s", out)
	}
	// A bare token service records no graphs: the conversation's live tokens stand in.
	if !strings.Contains(out, "conversation "+old.Conversation.String()+" (no graph recorded") || !strings.Contains(out, "charge @billing  token "+old.ID.String()) {
		t.Errorf("baton tokens stuck does not show the stuck token's conversation:\n%s", out)
	}
	shipment, err := tokens.Issue(t.Context(), baton.Token{Destination: "shipping", Type: "ship", Digest: baton.DigestOf(nil), CreatedAt: time.Now().Add(-time.Hour)})
	must(t, err)
	out, err = runBaton(t, "tokens", "stuck", "--server", srv.URL, "--key", key, "--destination", "billing", "--destination", "shipping",
		"--older-than", "10m", "--older-than-for", "shipping=24h")
	must(t, err)
	if !strings.Contains(out, old.ID.String()) || strings.Contains(out, shipment.ID.String()) || !strings.Contains(out, "24h0m0s for shipping") {
		t.Errorf("baton tokens stuck --older-than-for shipping=24h lists the hour-old shipment or not the charge:\n%s", out)
	}
	// --older-than 0 is every live token, not the default's 10m (it said
	// "no live token older than 0s" over a fresh one).
	out, err = runBaton(t, "tokens", "stuck", "--server", srv.URL, "--key", key, "--destination", "billing", "--older-than", "0")
	must(t, err)
	if !strings.Contains(out, fresh.ID.String()) || !strings.Contains(out, old.ID.String()) {
		t.Errorf("baton tokens stuck --older-than 0 does not list every live token:\n%s", out)
	}
	if _, err := runBaton(t, "tokens", "stuck", "--server", srv.URL, "--key", key, "--destination", "billing", "--older-than-for", "shipping=soon"); err == nil ||
		!strings.Contains(err.Error(), "DESTINATION=DURATION") {
		t.Errorf("a malformed threshold: %v", err)
	}
	if _, err := runBaton(t, "tokens", "stuck", "--server", srv.URL, "--key", key); err == nil || !strings.Contains(err.Error(), "--destination") {
		t.Errorf("without --destination: %v", err)
	}
}

// baton tokens get prints a token as the API writes it: a root token has
// no causation field, rather than "causation": "" (found in review).
func TestTokensGetPrintsTheAPIsForm(t *testing.T) {
	t.Parallel()
	tokens, srv, key := observedService(t)
	root, err := tokens.Issue(t.Context(), baton.Token{Destination: "billing", Type: "charge", Digest: baton.DigestOf(nil), CreatedAt: time.Now()})
	must(t, err)
	out, err := runBaton(t, "tokens", "get", root.ID.String(), "--server", srv.URL, "--key", key)
	must(t, err)
	var printed map[string]any
	must(t, json.Unmarshal([]byte(out), &printed))
	if _, ok := printed["causation"]; ok {
		t.Errorf("baton tokens get prints a causation for a root token:\n%s", out)
	}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+"/v1/tokens/"+root.ID.String(), nil)
	must(t, err)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	defer resp.Body.Close()
	var served map[string]any
	must(t, json.NewDecoder(resp.Body).Decode(&served))
	if !reflect.DeepEqual(printed, served) {
		t.Errorf("baton tokens get prints\n%s\nwhere the API serves\n%v", out, served)
	}
}
