package parked_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/backend/memory"
	"github.com/batonhq/baton/engine"
	"github.com/batonhq/baton/internal/testenv"
	"github.com/batonhq/baton/parked"
	"github.com/batonhq/baton/store"
	"github.com/batonhq/baton/transport"
	memtransport "github.com/batonhq/baton/transport/memory"
	natstransport "github.com/batonhq/baton/transport/nats"
	"github.com/batonhq/baton/transport/rabbitmq"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	amqp "github.com/rabbitmq/amqp091-go"
)

// parkingTransport is a transport whose parked signals can be acted on.
type parkingTransport interface {
	transport.Transport
	transport.ParkedStore
}

// ledger counts applications per signal.
type ledger struct {
	Applied map[string]int `json:"applied"`
}

// setup runs a billing engine over tr whose activity parks every signal
// while broken is set, and returns the token store and the count of
// applications of each signal.
func setup(t *testing.T, tr parkingTransport) (*memory.TokenStore, *engine.Engine, *atomic.Bool, func(sig baton.Signal) int) {
	t.Helper()
	tokens, entities := memory.NewTokenStore(), memory.NewEntityStore()
	e, err := engine.New(engine.Config{Destination: "billing", Tokens: tokens, Entities: entities, Dispatch: tr, Source: tr,
		RedeliveryDelay: 10 * time.Millisecond, MaxAttempts: 2})
	if err != nil {
		t.Fatal(err)
	}
	var broken atomic.Bool
	broken.Store(true)
	err = engine.Register(e, engine.Activity[ledger]{Type: "charge",
		Entity: func(baton.Signal) (string, error) { return "account", nil },
		Handle: func(_ context.Context, sig baton.Signal, l *ledger) (engine.Effects, error) {
			if broken.Load() {
				return engine.Effects{}, engine.Permanent(errors.New("card declined: handler bug #42"))
			}
			if l.Applied == nil {
				l.Applied = map[string]int{}
			}
			l.Applied[sig.ID.String()]++
			return engine.Effects{}, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { _ = e.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	applied := func(sig baton.Signal) int {
		ent, err := entities.Load(context.Background(), "account")
		if err != nil {
			t.Fatal(err)
		}
		var l ledger
		if len(ent.State) > 0 {
			if err := json.Unmarshal(ent.State, &l); err != nil {
				t.Fatal(err)
			}
		}
		return l.Applied[sig.ID.String()]
	}
	return tokens, e, &broken, applied
}

func eventually(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// parkOne issues a signal and publishes it, and waits until it is parked.
func parkOne(t *testing.T, e *engine.Engine, tr parkingTransport) (baton.Signal, transport.ParkedSignal) {
	t.Helper()
	sig, err := e.IssueRoot(t.Context(), baton.Emit{Destination: "billing", Type: "charge", Payload: []byte(`{"amount":12}`)}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Publish(t.Context(), sig); err != nil {
		t.Fatal(err)
	}
	var found transport.ParkedSignal
	eventually(t, "the signal is parked", func() bool {
		list, err := parked.List(t.Context(), tr, parked.Filter{Destination: "billing"}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range list {
			if p.Signal.ID == sig.ID {
				found = p
				return true
			}
		}
		return false
	})
	return sig, found
}

// runParkedChecks: list with filters, replay (twice, and beside a
// redelivery of the original), discard (the token retired, a later copy
// dropped), on one transport.
func runParkedChecks(t *testing.T, tr parkingTransport) {
	ctx := t.Context()
	tokens, e, broken, applied := setup(t, tr)

	sig, p := parkOne(t, e, tr)
	if p.Reason == "" || !bytes.Contains([]byte(p.Reason), []byte("card declined")) || p.Signal.Type != "charge" {
		t.Errorf("parked signal %+v: want the handler's reason and the signal", p)
	}
	for name, f := range map[string]parked.Filter{
		"other type":   {Destination: "billing", Type: "refund"},
		"other reason": {Destination: "billing", Reason: "timeout"},
		"too young":    {Destination: "billing", OlderThan: time.Hour},
		"other dest":   {Destination: "shipping"},
	} {
		if list, err := parked.List(ctx, tr, f, time.Now()); err != nil || len(list) != 0 {
			t.Errorf("filter %s: %d parked, %v; want none", name, len(list), err)
		}
	}
	if list, err := parked.List(ctx, tr, parked.Filter{Destination: "billing", Type: "charge", Reason: "declined"}, time.Now()); err != nil || len(list) != 1 {
		t.Errorf("filter type and reason: %d parked, %v; want 1", len(list), err)
	}
	if _, err := tokens.Get(ctx, sig.ID); err != nil {
		t.Fatalf("a parked signal's token must stay live: %v", err)
	}

	// The handler is fixed; the signal is replayed twice, while a copy of
	// the original arrives too.
	broken.Store(false)
	if err := tr.Publish(ctx, sig); err != nil {
		t.Fatal(err)
	}
	if _, err := parked.Replay(ctx, tr, p.ID); err != nil {
		t.Fatalf("replay: %v", err)
	}
	if _, err := parked.Replay(ctx, tr, p.ID); !errors.Is(err, transport.ErrNotParked) {
		t.Errorf("a second replay: %v, want ErrNotParked", err)
	}
	eventually(t, "the replayed signal is applied", func() bool { return applied(sig) == 1 })
	time.Sleep(200 * time.Millisecond)
	if n := applied(sig); n != 1 {
		t.Errorf("applied %d times after replay and redelivery, want 1", n)
	}

	// Another signal parked, and discarded.
	broken.Store(true)
	poison, q := parkOne(t, e, tr)
	var audit bytes.Buffer
	if _, err := parked.Discard(ctx, tr, tokens, q.ID, "", "", &audit, time.Now()); !errors.Is(err, parked.ErrNoReason) {
		t.Errorf("discard without operator and reason: %v", err)
	}
	d, err := parked.Discard(ctx, tr, tokens, q.ID, "ada", "duplicate order, refunded by hand (ticket 7)", &audit, time.Now())
	if err != nil || !d.TokenRetired {
		t.Fatalf("discard = %+v, %v", d, err)
	}
	if _, err := tokens.Get(ctx, poison.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the discarded signal's token: %v, want it retired", err)
	}
	var record parked.Discarded
	if err := json.Unmarshal(audit.Bytes(), &record); err != nil || record.Operator != "ada" || record.Token != poison.ID.String() {
		t.Errorf("audit record %q: %v", audit.String(), err)
	}
	if _, err := tr.GetParked(ctx, q.ID); !errors.Is(err, transport.ErrNotParked) {
		t.Errorf("the discarded signal is still parked: %v", err)
	}
	broken.Store(false)
	if err := tr.Publish(ctx, poison); err != nil { // a late copy of it
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if n := applied(poison); n != 0 {
		t.Errorf("a discarded signal was applied %d times", n)
	}
}

func TestParkedInMemory(t *testing.T) {
	t.Parallel()
	runParkedChecks(t, memtransport.New(memtransport.Config{}))
}

func TestParkedOnNATS(t *testing.T) {
	t.Parallel()
	url := testenv.Addr(t, testenv.NATS)
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	id := hex.EncodeToString(b)
	tr, err := natstransport.New(t.Context(), natstransport.Config{URL: url, Stream: "PARKED_" + id, Prefix: "parked_" + id,
		AllowUnsafeDurability: true, AckWait: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		tr.Close()
		if nc, err := natsgo.Connect(url); err == nil {
			if js, err := jetstream.New(nc); err == nil {
				_ = js.DeleteStream(context.Background(), "PARKED_"+id)
			}
			nc.Close()
		}
	})
	runParkedChecks(t, tr)
}

func TestParkedOnRabbitMQ(t *testing.T) {
	t.Parallel()
	url := testenv.Addr(t, testenv.RabbitMQ)
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	prefix := "parked-" + hex.EncodeToString(b)
	tr, err := rabbitmq.New(t.Context(), rabbitmq.Config{URL: url, Prefix: prefix, AckWait: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		tr.Close()
		deleteRabbitMQTopology(url, prefix)
	})
	runParkedChecks(t, tr)
}

// deleteRabbitMQTopology removes the queues and exchanges that a
// transport with prefix may have declared for billing and shipping.
func deleteRabbitMQTopology(url, prefix string) {
	conn, err := amqp.Dial(url)
	if err != nil {
		return
	}
	defer conn.Close()
	names := []string{prefix + ".sig.billing", prefix + ".parked.billing", prefix + ".sig.shipping", prefix + ".parked.shipping"}
	for ms := int64(8); ms <= 1<<25; ms *= 2 {
		names = append(names, fmt.Sprintf("%s.delay.%dms", prefix, ms))
	}
	for _, name := range names {
		// A missing queue or exchange closes the channel: one each.
		if ch, err := conn.Channel(); err == nil {
			_, _ = ch.QueueDelete(name, false, false, false)
			ch.Close()
		}
		if ch, err := conn.Channel(); err == nil {
			_ = ch.ExchangeDelete(name, false, false)
			ch.Close()
		}
	}
}
