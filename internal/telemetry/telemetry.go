// Package telemetry sets up OpenTelemetry for baton's own commands: metrics
// exported for Prometheus at /metrics, and the live-token gauge of a token
// service. Library users install their own SDK and pass its providers in
// engine.Config.
package telemetry

import (
	"context"
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/attribute"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

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

// LiveTokens registers the gauge baton.tokens.live, per destination, for
// a token store seen from a token service: the signals in flight.
func LiveTokens(meter metric.Meter, tokens store.TokenStore, destinations func() []string) error {
	_, err := meter.Int64ObservableGauge("baton.tokens.live",
		metric.WithDescription("Live tokens by destination: the signals in flight, capped at 100000 each."),
		metric.WithInt64Callback(func(ctx context.Context, o metric.Int64Observer) error {
			for _, d := range destinations() {
				n, err := store.CountByDestination(ctx, tokens, d, 100000)
				if err != nil {
					return err
				}
				o.Observe(int64(n), metric.WithAttributes(attribute.String("baton.destination", d)))
			}
			return nil
		}))
	return err
}
