package engine

import (
	"context"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
)

const instrumentation = "github.com/batonhq/baton/engine"

// telemetry carries trace context across hops inside signals, so a
// conversation is one trace whose spans follow causation, and records the
// latencies that counters cannot show.
type telemetry struct {
	tracer          trace.Tracer
	propagator      propagation.TraceContext
	handlerDuration metric.Float64Histogram
	outboxAge       metric.Float64Histogram
}

func (e *Engine) initTelemetry() {
	tp, mp := e.cfg.TracerProvider, e.cfg.MeterProvider
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	meter := mp.Meter(instrumentation)
	e.tel.tracer = tp.Tracer(instrumentation)
	// Bounds in seconds: the SDK's default ones (5, 10, 25, ... 10000) are
	// for milliseconds and would put every activity under 5s in one bucket.
	e.tel.handlerDuration, _ = meter.Float64Histogram("baton.activity.duration", metric.WithUnit("s"),
		metric.WithDescription("Time an activity's handler ran."),
		metric.WithExplicitBucketBoundaries(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
	e.tel.outboxAge, _ = meter.Float64Histogram("baton.outbox.entry_age", metric.WithUnit("s"),
		metric.WithDescription("Age of outbox entries when they were removed."),
		metric.WithExplicitBucketBoundaries(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600))
	e.stats.init(meter, e.cfg.Destination)
	// Live tokens are the signals in flight to this destination; counting
	// them on each collection costs as much as there is work in flight.
	_, _ = meter.Int64ObservableGauge("baton.tokens.live",
		metric.WithDescription("Live tokens addressed to this destination: its signals in flight, capped at 100000."),
		metric.WithInt64Callback(func(ctx context.Context, o metric.Int64Observer) error {
			n, err := store.CountByDestination(ctx, e.cfg.Tokens, e.cfg.Destination, 100000)
			if err != nil {
				return err
			}
			o.Observe(int64(n), e.stats.attrs)
			return nil
		}))
}

// startSpan starts the span of processing sig as a child of the span that
// emitted it.
func (e *Engine) startSpan(ctx context.Context, name string, sig baton.Signal) (context.Context, trace.Span) {
	if sig.Trace.Parent != "" {
		carrier := propagation.MapCarrier{"traceparent": sig.Trace.Parent, "tracestate": sig.Trace.State}
		ctx = e.tel.propagator.Extract(ctx, carrier)
	} else if !trace.SpanContextFromContext(ctx).IsValid() {
		ctx = trace.ContextWithRemoteSpanContext(ctx, ConversationSpanContext(sig.Conversation))
	}
	return e.tel.tracer.Start(ctx, name+" "+sig.Type, trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(
			attribute.String("baton.destination", e.cfg.Destination),
			attribute.String("baton.conversation", sig.Conversation.String()),
			attribute.String("baton.token", sig.ID.String()),
			attribute.String("baton.causation", sig.Causation.String()),
		))
}

// ConversationSpanContext is the parent of the spans of a signal that
// arrives without trace context (a root signal from a form, say): the trace
// id is the conversation id, so every copy and retry of that signal, in any
// process, joins the conversation's one trace. Its span id names no real
// span; the spans of emitted signals carry their sender's span instead.
func ConversationSpanContext(conversation baton.TokenID) trace.SpanContext {
	var span trace.SpanID
	copy(span[:], conversation[8:])
	span[0] |= 1 // never the invalid zero id
	return trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID(conversation),
		SpanID:     span,
		TraceFlags: trace.FlagsSampled,
		Remote:     true,
	})
}

// traceContext returns the W3C trace context of the span in ctx, for the
// signals emitted under it.
func (e *Engine) traceContext(ctx context.Context) baton.TraceContext {
	carrier := propagation.MapCarrier{}
	e.tel.propagator.Inject(ctx, carrier)
	return baton.TraceContext{Parent: carrier["traceparent"], State: carrier["tracestate"]}
}

func endSpan(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

func (e *Engine) observeHandler(ctx context.Context, started time.Time) {
	e.tel.handlerDuration.Record(ctx, e.cfg.Now().Sub(started).Seconds(), e.stats.attrs)
}

func (e *Engine) observeOutboxAge(ctx context.Context, created time.Time) {
	e.tel.outboxAge.Record(ctx, e.cfg.Now().Sub(created).Seconds(), e.stats.attrs)
}
