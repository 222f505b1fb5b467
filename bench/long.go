package bench

import (
	"context"
	"fmt"
	"time"
)

// longRun pushes cfg.LongSignals signals through each long variant and
// reports each window of cfg.LongWindow signals: how fast it went and how
// much deduplication data was stored at its end. The classic processed
// table grows by a window's worth every window; baton's live tokens stay
// at the signals in flight.
func longRun(ctx context.Context, e *env) ([]LongSeries, error) {
	cfg := e.cfg
	var out []LongSeries
	for _, name := range cfg.LongVariants {
		v, _ := variantByName(name)
		sys, err := v.open(ctx, e, name)
		if err != nil {
			return nil, fmt.Errorf("bench: long %s: %w", name, err)
		}
		series, err := longSeries(ctx, e, sys, name)
		sys.close()
		if err != nil {
			return nil, fmt.Errorf("bench: long %s: %w", name, err)
		}
		out = append(out, series)
	}
	return out, nil
}

func longSeries(ctx context.Context, e *env, sys system, name string) (LongSeries, error) {
	cfg := e.cfg
	obs := newObserver(cfg.InFlight)
	series := LongSeries{Variant: name}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	wait, err := sys.start(runCtx, cfg.Workers, obs)
	if err != nil {
		return series, err
	}
	defer func() { cancel(); wait() }()
	stopProducing, producing := startProducers(ctx, e, sys, obs)
	defer stopProducing()

	started := time.Now()
	windowStart, cpuStart := started, processCPU()
	next := int64(cfg.LongWindow)
	for next <= int64(cfg.LongSignals) {
		if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
			return series, err
		}
		if obs.finished.Load() < next {
			continue
		}
		now := time.Now()
		stored, err := sys.stored(ctx)
		if err != nil {
			return series, err
		}
		cpu := processCPU()
		w := LongWindow{
			Signals:      next,
			Throughput:   float64(cfg.LongWindow) / now.Sub(windowStart).Seconds(),
			CPUPerSignal: (cpu - cpuStart) / time.Duration(cfg.LongWindow),
			Stored:       stored,
			Elapsed:      now.Sub(started),
		}
		series.Windows = append(series.Windows, w)
		fmt.Fprintf(cfg.Progress, "%-18s long %7d signals  %8.0f signals/s  stored %d  (%s)\n",
			name, next, w.Throughput, stored, w.Elapsed.Round(time.Second))
		windowStart, cpuStart = now, cpu
		next += int64(cfg.LongWindow)
	}
	stopProducing()
	if err := producing(); err != nil {
		return series, err
	}
	if err := drain(ctx, obs); err != nil {
		return series, err
	}
	series.Elapsed = time.Since(started)
	return series, nil
}
