package bench

import (
	"fmt"
	"io"
	"log/slog"
	"slices"
	"time"
)

// DefaultPostgresDSN is the PostgreSQL the benchmark uses when neither a
// flag nor BATON_BENCH_POSTGRES names one.
const DefaultPostgresDSN = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// DefaultRedisURL is the Redis of the baton-redis variant by default.
const DefaultRedisURL = "redis://127.0.0.1:6379/0"

// Config configures a benchmark run. Zero values select the defaults
// documented on each field; Quick returns the settings of `baton bench
// --quick`.
type Config struct {
	// PostgresDSN locates the PostgreSQL server of the variants that use
	// one. Default DefaultPostgresDSN. Each variant works in a schema of
	// its own, dropped at the end.
	PostgresDSN string
	// MySQLDSN locates the MySQL or MariaDB server of the MySQL variants
	// (go-sql-driver/mysql's DSN). Default DefaultMySQLDSN. Each variant
	// works in tables of its own prefix, dropped at the end.
	MySQLDSN string
	// RedisURL is the Redis server of baton-redis, opened with
	// AllowUnsafeDurability (the machine's Redis need not fsync). Default
	// DefaultRedisURL.
	RedisURL string
	// RedisServer is the redis-server binary that baton-redis-fsync starts
	// on a free port with appendonly yes and appendfsync always. Default:
	// found on PATH.
	RedisServer string

	// Variants to compare, by name (see Variants). Default
	// DefaultVariants.
	Variants []string
	// Duration is the measured time of each variant in the comparison,
	// split over Rounds. Default 30s.
	Duration time.Duration
	// Signals, if set, replaces Duration: each variant is measured until
	// it finished this many signals (split over Rounds).
	Signals int
	// Rounds interleaves the variants: each runs Duration/Rounds per
	// round, in reversed order on every other round, so that drift in the
	// machine's load falls on all of them alike. Default 2.
	Rounds int
	// Warmup runs before each measured period and is not measured.
	// Default 2s.
	Warmup time.Duration
	// Workers is the number of concurrent consumers per destination.
	// Default 4.
	Workers int
	// InFlight is the number of conversations kept in flight: a new one
	// starts when one finishes (a closed loop). Default 64.
	InFlight int
	// Accounts is the number of billing entities that charges contend
	// for. Default 100.
	Accounts int
	// Orders is the number of order entities (conversation number modulo
	// Orders). Default 10000.
	Orders int
	// SampleEvery is how often stored deduplication data is read. Default
	// 500ms.
	SampleEvery time.Duration

	// ContentionAccounts is the number of billing accounts in the second
	// comparison, under contention: ContentionVariants run again with
	// charges spread over this few entities. Default 10. NoContention
	// skips it.
	ContentionAccounts int
	ContentionVariants []string // default DefaultContentionVariants
	NoContention       bool

	// ScalingWorkers are the worker counts of the scaling run. Default 1,
	// 2 and 4. NoScaling skips the scaling run.
	ScalingWorkers []int
	NoScaling      bool
	// ScalingVariants run in the scaling run. Default ceiling, classic and
	// baton-pg.
	ScalingVariants []string
	// ScalingDuration is the measured time of each scaling point. Default
	// 10s.
	ScalingDuration time.Duration

	// Long adds the long run: LongSignals signals through each of
	// LongVariants, reporting throughput and stored deduplication data
	// per window of LongWindow signals.
	Long         bool
	LongSignals  int      // default 1,000,000
	LongWindow   int      // default 100,000
	LongVariants []string // default classic and baton-pg

	// TempDir holds the data directories; default a fresh directory under
	// os.TempDir, removed at the end.
	TempDir string
	// Progress receives one line per finished measurement. Nil discards.
	Progress io.Writer
	// Logger receives warnings of the systems under test. Nil discards.
	Logger *slog.Logger
}

// DefaultVariants are the variants of a full comparison.
var DefaultVariants = []string{"ceiling", "classic", "classic-batched", "baton-pg", "baton-pg-single", "baton-embedded", "baton-redis", "baton-redis-fsync"}

// DefaultContentionVariants are the variants of the comparison under
// contention.
var DefaultContentionVariants = []string{"classic", "classic-batched", "baton-pg", "baton-pg-single"}

// Quick returns the settings of `baton bench --quick`: every variant of
// the full run, shorter, so the whole run takes about four minutes.
func Quick() Config {
	return Config{Duration: 10 * time.Second, Warmup: time.Second, ScalingDuration: 4 * time.Second}
}

func (c *Config) setDefaults() {
	if c.PostgresDSN == "" {
		c.PostgresDSN = DefaultPostgresDSN
	}
	if c.MySQLDSN == "" {
		c.MySQLDSN = DefaultMySQLDSN
	}
	if c.RedisURL == "" {
		c.RedisURL = DefaultRedisURL
	}
	if len(c.Variants) == 0 {
		c.Variants = DefaultVariants
	}
	setDuration(&c.Duration, 30*time.Second)
	setInt(&c.Rounds, 2)
	setDuration(&c.Warmup, 2*time.Second)
	setInt(&c.Workers, 4)
	setInt(&c.InFlight, 64)
	setInt(&c.Accounts, 100)
	setInt(&c.Orders, 10000)
	setDuration(&c.SampleEvery, 500*time.Millisecond)
	setInt(&c.ContentionAccounts, 10)
	if len(c.ContentionVariants) == 0 {
		c.ContentionVariants = DefaultContentionVariants
	}
	if len(c.ScalingWorkers) == 0 {
		c.ScalingWorkers = []int{1, 2, 4}
	}
	if len(c.ScalingVariants) == 0 {
		c.ScalingVariants = []string{"ceiling", "classic", "baton-pg"}
	}
	setDuration(&c.ScalingDuration, 10*time.Second)
	setInt(&c.LongSignals, 1_000_000)
	setInt(&c.LongWindow, 100_000)
	if len(c.LongVariants) == 0 {
		c.LongVariants = []string{"classic", "baton-pg"}
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

func (c *Config) validate() error {
	for _, list := range [][]string{c.Variants, c.ContentionVariants, c.ScalingVariants, c.LongVariants} {
		for _, name := range list {
			if _, ok := variantByName(name); !ok {
				return fmt.Errorf("bench: unknown variant %q (known: %s)", name, variantNames())
			}
		}
	}
	switch {
	case c.Duration < 0 || c.Warmup < 0 || c.ScalingDuration < 0 || c.SampleEvery < 0:
		return fmt.Errorf("bench: durations must not be negative")
	case c.Signals < 0:
		return fmt.Errorf("bench: signals must not be negative")
	case c.Rounds < 1 || c.Workers < 1 || c.InFlight < 1 || c.Accounts < 1 || c.ContentionAccounts < 1 || c.Orders < 1:
		return fmt.Errorf("bench: rounds, workers, in-flight, accounts, contention accounts and orders must be at least 1")
	case c.LongWindow < 1 || c.LongSignals < c.LongWindow:
		return fmt.Errorf("bench: the long run needs at least one window (signals %d, window %d)", c.LongSignals, c.LongWindow)
	}
	for _, w := range c.ScalingWorkers {
		if w < 1 {
			return fmt.Errorf("bench: scaling worker count %d is below 1", w)
		}
	}
	return nil
}

// needs reports which servers the configured runs use.
func (c *Config) needs() (postgres, redis, redisServer, mysql bool) {
	all := slices.Concat(c.Variants)
	if !c.NoContention {
		all = append(all, c.ContentionVariants...)
	}
	if !c.NoScaling {
		all = append(all, c.ScalingVariants...)
	}
	if c.Long {
		all = append(all, c.LongVariants...)
	}
	for _, name := range all {
		v, _ := variantByName(name)
		postgres = postgres || v.postgres
		redis = redis || v.redis
		redisServer = redisServer || v.redisServer
		mysql = mysql || v.mysql
	}
	return
}

func (c *Config) maxWorkers() int {
	w := c.Workers
	if !c.NoScaling {
		w = max(w, slices.Max(c.ScalingWorkers))
	}
	return w
}

func setInt(v *int, d int) {
	if *v == 0 {
		*v = d
	}
}

func setDuration(v *time.Duration, d time.Duration) {
	if *v == 0 {
		*v = d
	}
}
