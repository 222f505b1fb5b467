package rabbitmq

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/internal/testenv"
	amqp "github.com/rabbitmq/amqp091-go"
)

// TestPublishBatchMatchesReturns publishes one batch to two destinations,
// one of whose queues was deleted behind the transport's back: exactly the
// signals for it come back ErrUnroutable (matched by message id on a
// channel that carries the whole batch, in windows of returnWindow), the
// others are stored, and the next batch declares the queue again.
func TestPublishBatchMatchesReturns(t *testing.T) {
	t.Parallel()
	tr := newTestTransport(t, testConfig(t, testenv.Addr(t, testenv.RabbitMQ)))
	ctx := t.Context()
	for _, d := range []string{"kept", "gone"} {
		if err := tr.Publish(ctx, newSignal(d)); err != nil {
			t.Fatal(err)
		}
	}
	err := tr.withChannel(ctx, func(ch *amqp.Channel) error {
		_, err := ch.QueueDelete(tr.signalQueue("gone"), false, false, false)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	sigs := make([]baton.Signal, 2*returnWindow+20) // three windows
	for i := range sigs {
		sigs[i] = newSignal([]string{"kept", "gone"}[i%3/2]) // every third one is for "gone"
	}
	errs := tr.PublishBatch(ctx, sigs)
	for i, err := range errs {
		gone := sigs[i].Destination == "gone"
		if gone && !errors.Is(err, ErrUnroutable) || !gone && err != nil {
			t.Errorf("signal %d to %q: PublishBatch error = %v", i, sigs[i].Destination, err)
		}
	}
	again := []baton.Signal{newSignal("gone"), newSignal("kept")}
	for i, err := range tr.PublishBatch(ctx, again) {
		if err != nil {
			t.Fatalf("batch after an unroutable one, signal %d: %v (the queue must be declared again)", i, err)
		}
	}
	stored := 1 // the first Publish to "kept"
	for _, s := range sigs {
		if s.Destination == "kept" {
			stored++
		}
	}
	getAll(t, tr, tr.signalQueue("kept"), stored+1)
	getAll(t, tr, tr.signalQueue("gone"), 1)

	// The channel that carried the batch is reused: a later single publish
	// must not see a return left over from it.
	if err := tr.Publish(ctx, newSignal("kept")); err != nil {
		t.Fatalf("Publish after the batches = %v", err)
	}
}

// TestPublishBatchWithoutConfirms holds back the broker's confirms of a
// batch and cuts the connection: every signal of it is ErrNoConfirm (the
// outcome is unknown), and the transport publishes again once reconnected.
func TestPublishBatchWithoutConfirms(t *testing.T) {
	t.Parallel()
	url := testenv.Addr(t, testenv.RabbitMQ)
	p := startProxy(t, url)
	tr := newTestTransport(t, testConfig(t, p.url(url)))
	ctx := t.Context()
	if err := tr.Publish(ctx, newSignal("orders")); err != nil {
		t.Fatal(err)
	}
	p.holdReplies(true)
	result := make(chan []error, 1)
	sigs := []baton.Signal{newSignal("orders"), newSignal("orders"), newSignal("orders")}
	go func() { result <- tr.PublishBatch(ctx, sigs) }()
	select {
	case errs := <-result:
		t.Fatalf("PublishBatch returned %v while the broker's confirms were held back", errs)
	case <-time.After(500 * time.Millisecond):
	}
	p.cut()
	p.holdReplies(false)
	select {
	case errs := <-result:
		for i, err := range errs {
			if !errors.Is(err, ErrNoConfirm) {
				t.Errorf("signal %d of a batch whose connection was lost before the confirms = %v, want ErrNoConfirm", i, err)
			}
		}
	case <-time.After(10 * time.Second):
		t.Fatal("PublishBatch did not return after its connection was cut")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		errs := tr.PublishBatch(ctx, []baton.Signal{newSignal("orders"), newSignal("orders")})
		if errors.Join(errs...) == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("PublishBatch after reconnecting = %v", errs)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// BenchmarkPublishBatch publishes batches of 16 signals: one Publish after
// another (each waits for its confirm) against one PublishBatch. Metrics:
// one-by-one-signals/s, batch-signals/s and batch/one-by-one, from
// interleaved rounds.
func BenchmarkPublishBatch(b *testing.B) {
	tr, _ := benchTransport(b)
	ctx := b.Context()
	const size, rounds = 16, 4
	batch := func() []baton.Signal {
		sigs := make([]baton.Signal, size)
		for i := range sigs {
			sigs[i] = newSignal("bench")
		}
		return sigs
	}
	var single, batched time.Duration
	var n int
	for b.Loop() {
		for range rounds {
			start := time.Now()
			for _, sig := range batch() {
				if err := tr.Publish(ctx, sig); err != nil {
					b.Fatal(err)
				}
			}
			single += time.Since(start)
			start = time.Now()
			if err := errors.Join(tr.PublishBatch(ctx, batch())...); err != nil {
				b.Fatal(err)
			}
			batched += time.Since(start)
		}
		n += rounds * size
	}
	b.ReportMetric(float64(n)/single.Seconds(), "one-by-one-signals/s")
	b.ReportMetric(float64(n)/batched.Seconds(), "batch-signals/s")
	b.ReportMetric(single.Seconds()/batched.Seconds(), "batch/one-by-one")
	b.Log(fmt.Sprintf("%d signals each way", n))
}
