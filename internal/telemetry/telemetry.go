// Package telemetry sets up OpenTelemetry for baton's own commands: metrics
// exported for Prometheus at /metrics, and the live-token gauge of a token
// service. Library users install their own SDK and pass its providers in
// engine.Config.
package telemetry

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/attribute"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/batonhq/baton/internal/cached"
	"github.com/batonhq/baton/store"
)

// Prometheus returns a meter provider whose metrics, with the Go runtime's,
// are served in the Prometheus text format by the returned handler.
func Prometheus() (*sdkmetric.MeterProvider, http.Handler, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	exporter, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		return nil, nil, fmt.Errorf("telemetry: prometheus exporter: %w", err)
	}
	provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter))
	return provider, promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), nil
}

// LiveTokensRefresh is how long one count of the live tokens is reused by
// every scrape of the gauge: pollers of /metrics cost one count of the
// store per LiveTokensRefresh, not one per request.
const LiveTokensRefresh = 5 * time.Second

// maxLiveTokens caps the count of one destination.
const maxLiveTokens = 100_000

// DefaultStuckAfter is the age from which LiveTokens counts a live token
// as stuck unless told otherwise.
const DefaultStuckAfter = 10 * time.Minute

// StuckAfter is the age from which a live token counts as stuck: the
// destination's own, or Default (zero: DefaultStuckAfter). Destinations
// differ: a shipment may rightly wait a day where a charge waits seconds.
type StuckAfter struct {
	Default       time.Duration
	ByDestination map[string]time.Duration
}

// For returns the threshold of destination.
func (s StuckAfter) For(destination string) time.Duration {
	if d, ok := s.ByDestination[destination]; ok && d > 0 {
		return d
	}
	if s.Default > 0 {
		return s.Default
	}
	return DefaultStuckAfter
}

// LiveTokens registers the gauges baton.tokens.live and baton.tokens.stuck
// (live tokens created more than stuckAfter.For(their destination) ago),
// per destination, for a token store seen from a token
// service: the signals in flight, and those that have been for too long.
// The store is read at most once per LiveTokensRefresh, by one scrape at a
// time; scrapes meanwhile report the last reading.
func LiveTokens(meter metric.Meter, tokens store.TokenStore, destinations func() []string, stuckAfter StuckAfter) error {
	counts := &cached.Value[[]destinationCount]{
		MaxAge: LiveTokensRefresh,
		Read: func(ctx context.Context) ([]destinationCount, error) {
			var out []destinationCount
			now := time.Now()
			for _, d := range destinations() {
				live, stuck, err := store.CountByAge(ctx, tokens, d, now.Add(-stuckAfter.For(d)), maxLiveTokens)
				if err != nil {
					return nil, fmt.Errorf("count live tokens of %q: %w", d, err)
				}
				out = append(out, destinationCount{d, live, stuck})
			}
			return out, nil
		},
	}
	observe := func(value func(destinationCount) int) metric.Int64Callback {
		return func(ctx context.Context, o metric.Int64Observer) error {
			all, err := counts.Get(ctx)
			if err != nil {
				return err
			}
			for _, c := range all {
				o.Observe(int64(value(c)), metric.WithAttributes(attribute.String("baton.destination", c.destination)))
			}
			return nil
		}
	}
	_, err := meter.Int64ObservableGauge("baton.tokens.live",
		metric.WithDescription("Live tokens by destination: the signals in flight, capped at 100000 each, counted at most every 5s."),
		metric.WithInt64Callback(observe(func(c destinationCount) int { return c.count })))
	if err != nil {
		return err
	}
	_, err = meter.Int64ObservableGauge("baton.tokens.stuck",
		metric.WithDescription(fmt.Sprintf("Live tokens by destination created more than %s ago (or the destination's own threshold): signals stuck or parked.", stuckAfter.For(""))),
		metric.WithInt64Callback(observe(func(c destinationCount) int { return c.stuck })))
	return err
}

type destinationCount struct {
	destination  string
	count, stuck int
}
