package main

import (
	"fmt"
	"os"
	"runtime/pprof"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/batonhq/baton/bench"
)

func newBenchCommand() *cobra.Command {
	var (
		cfg                 bench.Config
		quick, noScaling    bool
		noContention        bool
		variants, scaleVars string
		contentionVars      string
		svgPath, cpuProfile string
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Compare baton with at-least-once and the classic processed-table approach",
		Long: `bench runs one two-step process (order -> charge) over the same broker
(embedded NATS JetStream, in process) and the same data under:

  ceiling            at-least-once, no deduplication
  classic            processed-message table + transactional outbox + relay
  classic-batched    the same, with the batching baton-pg has
  baton-pg           baton, tokens and entities in PostgreSQL (fast path, batches)
  baton-pg-single    the same, one signal at a time
  baton-embedded     baton, embedded single-file store
  baton-redis        baton, tokens in the machine's Redis (not fsynced) + PostgreSQL entities
  baton-redis-fsync  baton, tokens in a redis-server started with appendfsync always

and prints throughput, latency, CPU per signal and the deduplication data
each stores, with ratios from the same run; then the same comparison under
contention (--contention-accounts billing accounts), a scaling run with 1,
2 and 4 workers, and with --long a run of a million signals per variant.
Each variant gets a fresh PostgreSQL schema, Redis key prefix and data
directory, removed at the end.`,
		Example: "  baton bench --quick\n  baton bench --duration 60s --svg bench-dedup.svg\n  baton bench --long --no-scaling --variants classic,baton-pg",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// bench.Config takes zero for a default: a zero given here
			// would run the default silently.
			if err := positiveFlags(cmd.Flags(), "duration", "rounds", "warmup", "workers", "in-flight", "accounts",
				"contention-accounts", "scaling-duration", "long-signals", "long-window"); err != nil {
				return err
			}
			if err := nonNegativeFlags(cmd.Flags(), "signals"); err != nil {
				return err
			}
			for _, w := range cfg.ScalingWorkers {
				if w < 1 {
					return fmt.Errorf("--scaling-workers must be positive, got %d", w)
				}
			}
			if quick {
				q := bench.Quick()
				f := cmd.Flags()
				if !f.Changed("duration") {
					cfg.Duration = q.Duration
				}
				if !f.Changed("warmup") {
					cfg.Warmup = q.Warmup
				}
				if !f.Changed("scaling-duration") {
					cfg.ScalingDuration = q.ScalingDuration
				}
			}
			cfg.NoScaling = noScaling
			cfg.NoContention = noContention
			cfg.ContentionVariants = benchSplitList(contentionVars)
			cfg.Variants = benchSplitList(variants)
			cfg.ScalingVariants = benchSplitList(scaleVars)
			cfg.Progress = cmd.ErrOrStderr()
			fmt.Fprintln(cmd.ErrOrStderr(), "baton bench: running; one line per finished measurement")
			if cpuProfile != "" {
				f, err := os.Create(cpuProfile)
				if err != nil {
					return fmt.Errorf("bench: %w", err)
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return fmt.Errorf("bench: %w", err)
				}
				defer pprof.StopCPUProfile()
			}
			rep, err := bench.Run(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			if err := rep.WriteText(cmd.OutOrStdout()); err != nil {
				return err
			}
			if svgPath != "" {
				if err := writeBenchSVG(rep, svgPath); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "picture of stored deduplication data: %s\n", svgPath)
			}
			for _, res := range slices.Concat(rep.Results, rep.Contention) {
				if res.Variant != "ceiling" && res.Check != "ok" {
					return exitError{code: 1, msg: fmt.Sprintf("bench: %s failed its check: %s", res.Variant, res.Check)}
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.PostgresDSN, "postgres-dsn", benchEnvOr("BATON_BENCH_POSTGRES", bench.DefaultPostgresDSN), "PostgreSQL to benchmark against; BATON_BENCH_POSTGRES sets the default")
	f.StringVar(&cfg.MySQLDSN, "mysql-dsn", benchEnvOr("BATON_BENCH_MYSQL", bench.DefaultMySQLDSN), "MySQL or MariaDB of the variants classic-mysql and baton-mysql (go-sql-driver DSN); BATON_BENCH_MYSQL sets the default")
	f.StringVar(&cfg.RedisURL, "redis-url", benchEnvOr("BATON_BENCH_REDIS", bench.DefaultRedisURL), "Redis of the baton-redis variant; BATON_BENCH_REDIS sets the default")
	f.StringVar(&cfg.RedisServer, "redis-server", "", "redis-server binary for baton-redis-fsync (default: found on PATH)")
	f.BoolVar(&quick, "quick", false, "short run of everything (about four minutes): 10s per variant, 4s per scaling point")
	f.DurationVar(&cfg.Duration, "duration", 30*time.Second, "measured time per variant, split over --rounds")
	f.IntVar(&cfg.Signals, "signals", 0, "measure each variant until this many signals finished, instead of --duration")
	f.IntVar(&cfg.Rounds, "rounds", 2, "interleaved rounds of the comparison")
	f.DurationVar(&cfg.Warmup, "warmup", 2*time.Second, "unmeasured warm-up before each measurement")
	f.IntVar(&cfg.Workers, "workers", 4, "consumers per destination")
	f.IntVar(&cfg.InFlight, "in-flight", 64, "conversations kept in flight (closed loop)")
	f.IntVar(&cfg.Accounts, "accounts", 100, "billing accounts that charges contend for")
	f.StringVar(&variants, "variants", strings.Join(bench.DefaultVariants, ","), "variants to compare: "+benchVariantList())
	f.BoolVar(&noScaling, "no-scaling", false, "skip the scaling run")
	f.BoolVar(&noContention, "no-contention", false, "skip the comparison under contention")
	f.IntVar(&cfg.ContentionAccounts, "contention-accounts", 10, "billing accounts of the comparison under contention")
	f.StringVar(&contentionVars, "contention-variants", strings.Join(bench.DefaultContentionVariants, ","), "variants of the comparison under contention")
	f.IntSliceVar(&cfg.ScalingWorkers, "scaling-workers", []int{1, 2, 4}, "worker counts of the scaling run")
	f.StringVar(&scaleVars, "scaling-variants", "ceiling,classic,baton-pg", "variants of the scaling run")
	f.DurationVar(&cfg.ScalingDuration, "scaling-duration", 10*time.Second, "measured time per scaling point")
	f.BoolVar(&cfg.Long, "long", false, "add the long run: --long-signals per variant (classic, baton-pg), reported per --long-window")
	f.IntVar(&cfg.LongSignals, "long-signals", 1_000_000, "signals per variant in the long run")
	f.IntVar(&cfg.LongWindow, "long-window", 100_000, "signals per reported window of the long run")
	f.StringVar(&svgPath, "svg", "", "also write the picture of stored dedup data to this SVG file")
	f.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run to this file (go tool pprof)")
	return cmd
}

func writeBenchSVG(rep *bench.Report, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	if err := rep.WriteSVG(f); err != nil {
		f.Close()
		return fmt.Errorf("bench: write %s: %w", path, err)
	}
	return f.Close()
}

func benchEnvOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}

func benchSplitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func benchVariantList() string {
	names := make([]string, len(bench.Variants))
	for i, v := range bench.Variants {
		names[i] = v.Name
	}
	return strings.Join(names, ", ")
}
