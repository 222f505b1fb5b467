package engine_test

import (
	"context"
	"slices"
	"testing"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/backend/memory"
	"github.com/batonhq/baton/engine"
	memtransport "github.com/batonhq/baton/transport/memory"
)

// A signal emitted while processing another carries the trace context, so
// the receiver's span is a child of the sender's: one trace per
// conversation. Counters are exported as OpenTelemetry metrics.
func TestTraceFollowsCausationAndMetricsExport(t *testing.T) {
	t.Parallel()
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	tokens := memory.NewTokenStore()
	broker := memtransport.New(memtransport.Config{})
	newEngine := func(dest string) *engine.Engine {
		e, err := engine.New(engine.Config{Destination: dest, Tokens: tokens, Entities: memory.NewEntityStore(),
			Dispatch: broker, TracerProvider: tp, MeterProvider: mp})
		must(t, err)
		return e
	}
	shop, billing := newEngine("shop"), newEngine("billing")
	must(t, engine.Register(shop, engine.Activity[counter]{Type: "order", Entity: byConversation,
		Handle: func(context.Context, baton.Signal, *counter) (engine.Effects, error) {
			return engine.Effects{Emit: []baton.Emit{{Destination: "billing", Type: "charge"}}}, nil
		}}))
	must(t, engine.Register(billing, engine.Activity[counter]{Type: "charge", Entity: byConversation,
		Handle: func(context.Context, baton.Signal, *counter) (engine.Effects, error) { return engine.Effects{}, nil }}))

	ctx := t.Context()
	root, err := shop.IssueRoot(ctx, baton.Emit{Destination: "shop", Type: "order"}, 0)
	must(t, err)
	res, err := shop.Process(ctx, root)
	must(t, err)
	if _, err := billing.Process(ctx, res.Emitted[0]); err != nil {
		t.Fatal(err)
	}
	ended := spans.Ended()
	if len(ended) != 2 {
		t.Fatalf("got %d spans, want 2", len(ended))
	}
	first, second := ended[0], ended[1]
	if second.Parent().SpanID() != first.SpanContext().SpanID() || second.SpanContext().TraceID() != first.SpanContext().TraceID() {
		t.Fatalf("charge span is not a child of the order span: parent %v, order span %v", second.Parent(), first.SpanContext())
	}
	// The root arrived without trace context: its trace is the conversation.
	if first.SpanContext().TraceID() != trace.TraceID(root.Conversation) || !first.Parent().Equal(engine.ConversationSpanContext(root.Conversation)) {
		t.Fatalf("root span: trace %v parent %v; want the conversation's trace", first.SpanContext().TraceID(), first.Parent())
	}

	var rm metricdata.ResourceMetrics
	must(t, reader.Collect(ctx, &rm))
	found := map[string]bool{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			found[m.Name] = true
			// Histograms in seconds need buckets in seconds: the SDK's
			// default bounds (5, 10, 25, ... 10000) are for milliseconds,
			// and put every activity of less than 5s in one bucket.
			h, ok := m.Data.(metricdata.Histogram[float64])
			if !ok {
				continue
			}
			for _, p := range h.DataPoints {
				i := slices.IndexFunc(p.Bounds, func(b float64) bool { return b > 0 })
				if i < 0 || p.Bounds[i] > 0.001 || p.Bounds[len(p.Bounds)-1] < 60 {
					t.Errorf("%s (%s) has buckets %v: want from a millisecond or less to a minute or more", m.Name, m.Unit, p.Bounds)
				}
			}
		}
	}
	for _, name := range []string{"baton.activities.applied", "baton.transitions", "baton.activity.duration", "baton.outbox.entry_age", "baton.tokens.live"} {
		if !found[name] {
			t.Errorf("metric %s not exported; got %v", name, found)
		}
	}
}

// Every counter is exported from the start, at zero: an alert on
// increase(baton_signals_parked_total[15m]) > 0 never fired for the first
// parked signal of a process, because the series appeared at 1 and
// Prometheus sees no increase in a series' first sample.
func TestCountersAreExportedAtZeroFromTheStart(t *testing.T) {
	t.Parallel()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	broker := memtransport.New(memtransport.Config{})
	if _, err := engine.New(engine.Config{Destination: "shop", Tokens: memory.NewTokenStore(), Entities: memory.NewEntityStore(),
		Dispatch: broker, MeterProvider: mp}); err != nil {
		t.Fatal(err)
	}
	var rm metricdata.ResourceMetrics
	must(t, reader.Collect(t.Context(), &rm))
	zero := map[string]bool{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if sum, ok := m.Data.(metricdata.Sum[int64]); ok && len(sum.DataPoints) == 1 && sum.DataPoints[0].Value == 0 {
				zero[m.Name] = true
			}
		}
	}
	for _, name := range []string{"baton.signals.parked", "baton.sweeper.failures", "baton.activity.errors", "baton.duplicates.dropped"} {
		if !zero[name] {
			t.Errorf("%s is not exported at zero before anything happened", name)
		}
	}
}
