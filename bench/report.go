package bench

import (
	"fmt"
	"io"
	"net/url"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is the outcome of Run.
type Report struct {
	Started  time.Time
	Elapsed  time.Duration
	Machine  Machine
	Settings string // the run's settings in one line
	Results  []Result
	// Contention is the comparison under contention (ContentionAccounts
	// accounts), empty with NoContention.
	Contention         []Result
	ContentionAccounts int
	Scaling            []ScalingPoint
	Long               []LongSeries
}

// Result is one variant of the comparison.
type Result struct {
	Variant, Label, Note string

	Signals    int64   // signals finished while measuring
	Seconds    float64 // measured time
	Throughput float64 // signals per second
	VsCeiling  float64 // Throughput / the ceiling's (0: no ceiling in the run)
	VsClassic  float64 // Throughput / classic's (0: no classic in the run)
	// VsBatched is Throughput / classic-batched's (0: not in the run).
	VsBatched float64
	P50, P99  time.Duration

	// CPUPerSignal is this process's CPU time (user and system: engine,
	// handlers, drivers, embedded NATS) per signal.
	CPUPerSignal time.Duration
	// ServerCPUPerSignal is the CPU of the variant's PostgreSQL backends
	// and Redis server per signal, read from /proc; ServerCPUSeen is false
	// when none could be seen (a remote server, or no server).
	ServerCPUPerSignal time.Duration
	ServerCPUSeen      bool

	Conflicts int64 // version conflicts retried
	// Applied, Batched and Batches are baton's: activities applied, and
	// how many of them batch commits committed, in how many commits.
	Applied, Batched, Batches int64

	// Samples of stored deduplication data over the variant's running
	// time (warm-up, measurement and drain of every round). StoredEnd is
	// the last, after the final drain: all processed-table rows for
	// classic, no live token left for baton.
	Samples     []sample
	StoredEnd   int64
	StoredMax   int64
	InFlightMax int64

	// Check is "ok" when every conversation's charge was applied exactly
	// once and nothing was left over, else what went wrong.
	Check string
}

// ScalingPoint is one variant at one worker count.
type ScalingPoint struct {
	Variant    string
	Workers    int
	Throughput float64
	P99        time.Duration
}

// LongSeries is one variant's long run.
type LongSeries struct {
	Variant string
	Windows []LongWindow
	Elapsed time.Duration
}

// LongWindow is one window of the long run.
type LongWindow struct {
	Signals      int64 // signals finished at the window's end
	Throughput   float64
	CPUPerSignal time.Duration
	Stored       int64
	Elapsed      time.Duration // since the long run of the variant began
}

func settingsOf(c Config) string {
	measured := c.Duration.String()
	if c.Signals > 0 {
		measured = fmt.Sprintf("%d signals", c.Signals)
	}
	var servers []string
	pg, _, _, my := c.needs()
	if pg {
		servers = append(servers, "PostgreSQL "+redactDSN(c.PostgresDSN))
	}
	if my {
		servers = append(servers, "MySQL "+redactMySQLDSN(c.MySQLDSN))
	}
	return fmt.Sprintf("%s measured per variant in %d interleaved rounds (warm-up %s each), %d workers per destination, %d conversations in flight, %d accounts, %d orders; %s",
		measured, c.Rounds, c.Warmup, c.Workers, c.InFlight, c.Accounts, c.Orders, strings.Join(servers, ", "))
}

// redactDSN keeps a DSN's host, port and database, never its password.
func redactDSN(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil || u.Host == "" {
		return "(dsn)"
	}
	return u.Host + u.Path
}

// setRatios sets each result's ratios: against the PostgreSQL ceiling and
// classic-batched, and against the classic variant on its own database
// (Variant.classic).
func setRatios(results []Result) {
	throughput := map[string]float64{}
	for _, r := range results {
		throughput[r.Variant] = r.Throughput
	}
	for i := range results {
		v, _ := variantByName(results[i].Variant)
		classic := v.classic
		if classic == "" {
			classic = "classic"
		}
		if c := throughput[classic]; c > 0 {
			results[i].VsClassic = results[i].Throughput / c
		}
		if v.mysql {
			continue // ceiling and classic-batched ran on PostgreSQL
		}
		if c := throughput["ceiling"]; c > 0 {
			results[i].VsCeiling = results[i].Throughput / c
		}
		if c := throughput["classic-batched"]; c > 0 {
			results[i].VsBatched = results[i].Throughput / c
		}
	}
}

// Result returns the result of the named variant.
func (r *Report) Result(variant string) (Result, bool) { return resultOf(r.Results, variant) }

func resultOf(results []Result, variant string) (Result, bool) {
	for _, res := range results {
		if res.Variant == variant {
			return res, true
		}
	}
	return Result{}, false
}

// WriteText writes the report as tables with notes.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "baton bench: %s\n", r.Settings)
	fmt.Fprintf(&b, "machine: %s\n\n", r.Machine)
	writeResults(&b, r.Results)
	if len(r.Contention) > 0 {
		fmt.Fprintf(&b, "\nunder contention (charges spread over %d accounts):\n", r.ContentionAccounts)
		writeResults(&b, r.Contention)
	}
	b.WriteString("\n")
	notes := map[string]bool{}
	for _, res := range slices.Concat(r.Results, r.Contention) {
		if !notes[res.Variant] {
			notes[res.Variant] = true
			fmt.Fprintf(&b, "- %s\n", res.Note)
		}
	}
	for _, run := range []struct {
		label   string
		results []Result
	}{{"", r.Results}, {" under contention", r.Contention}} {
		for _, res := range run.results {
			if res.Batches > 0 && res.Applied > 0 {
				fmt.Fprintf(&b, "- %s%s: %.0f%% of its activities were committed by batch commits, %.1f per commit on average.\n",
					res.Variant, run.label, 100*float64(res.Batched)/float64(res.Applied), float64(res.Batched)/float64(res.Batches))
			}
		}
	}
	b.WriteString("- signals/s: both signals of a conversation count. Latency: from the sender's decision to send (before the root token is issued, or when the activity emitted the signal) to the ack after processing.\n")
	b.WriteString("- CPU/signal: this process (engine, handlers, drivers, the embedded NATS server). server CPU/signal: the variant's own PostgreSQL backends (by application_name) and Redis server, from /proc; PostgreSQL's background processes (WAL writer, checkpointer, autovacuum) are not counted.\n")
	b.WriteString("- dedup stored: rows of the processed table (classic) or live tokens (baton), sampled while the variant ran; the maximum, and in brackets what was left after the last conversation finished. in flight: conversations started and not finished (each has one signal in flight).\n")
	if t := r.targets(); t != "" {
		b.WriteString("\n" + t)
	}
	if len(r.Scaling) > 0 {
		b.WriteString("\n" + r.scalingText())
	}
	if len(r.Long) > 0 {
		b.WriteString("\n" + r.longText())
	}
	fmt.Fprintf(&b, "\ntotal time %s\n", r.Elapsed.Round(time.Second))
	_, err := io.WriteString(w, b.String())
	return err
}

// writeResults writes one comparison as a table.
func writeResults(b *strings.Builder, results []Result) {
	tw := tabwriter.NewWriter(b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "variant\tsignals/s\tx ceiling\tx classic\tx classic-batched\tp50\tp99\tCPU/signal\tserver CPU/signal\tdedup stored max (end)\tin flight max\tconflicts\tcheck\t")
	for _, res := range results {
		server := "n/a"
		if res.ServerCPUSeen {
			server = micros(res.ServerCPUPerSignal)
		}
		stored := fmt.Sprintf("%d (%d)", res.StoredMax, res.StoredEnd)
		if res.Variant == "ceiling" {
			stored = "none"
		}
		conflicts := fmt.Sprintf("%d", res.Conflicts)
		if res.Conflicts > 0 && res.Signals > 0 {
			conflicts = fmt.Sprintf("%d (%.1f%%)", res.Conflicts, 100*float64(res.Conflicts)/float64(res.Signals))
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t\n",
			res.Variant, res.Throughput, ratio(res.VsCeiling), ratio(res.VsClassic), ratio(res.VsBatched),
			ms(res.P50), ms(res.P99), micros(res.CPUPerSignal), server, stored, res.InFlightMax, conflicts, res.Check)
	}
	tw.Flush()
}

// targets says whether the goals of the benchmark were met in this run.
func (r *Report) targets() string {
	var b strings.Builder
	pg, okPG := r.Result("baton-pg")
	classic, okClassic := r.Result("classic")
	if okPG && okClassic {
		fmt.Fprintf(&b, "target baton-pg >= 1.0x classic throughput: %.2fx (%s)\n", pg.VsClassic, metText(pg.VsClassic >= 1.0))
	}
	if okPG && pg.VsBatched > 0 {
		fmt.Fprintf(&b, "target baton-pg >= 1.0x classic-batched throughput: %.2fx (%s)\n", pg.VsBatched, metText(pg.VsBatched >= 1.0))
	}
	if single, ok := r.Result("baton-pg-single"); ok && okClassic {
		fmt.Fprintf(&b, "target baton-pg-single >= 1.0x classic throughput: %.2fx (%s)\n", single.VsClassic, metText(single.VsClassic >= 1.0))
		if single.ServerCPUSeen && classic.ServerCPUSeen {
			fmt.Fprintf(&b, "target baton-pg-single PostgreSQL CPU/signal <= classic's: %s against %s (%s)\n",
				micros(single.ServerCPUPerSignal), micros(classic.ServerCPUPerSignal), metText(single.ServerCPUPerSignal <= classic.ServerCPUPerSignal))
		}
	}
	if redis, ok := r.Result("baton-redis-fsync"); ok && okClassic {
		fmt.Fprintf(&b, "target baton-redis-fsync >= 0.9x classic throughput: %.2fx (%s)\n", redis.VsClassic, metText(redis.VsClassic >= 0.9))
	}
	if cpg, ok := resultOf(r.Contention, "baton-pg"); ok && cpg.VsClassic > 0 {
		fmt.Fprintf(&b, "target under contention baton-pg >= 1.0x classic throughput: %.2fx (%s); conflicts %.1f%% of signals\n",
			cpg.VsClassic, metText(cpg.VsClassic >= 1.0), 100*float64(cpg.Conflicts)/float64(max(cpg.Signals, 1)))
	}
	if my, ok := r.Result("baton-mysql"); ok && my.VsClassic > 0 {
		fmt.Fprintf(&b, "baton-mysql against classic-mysql on the same server: %.2fx throughput", my.VsClassic)
		if cm, ok := r.Result("classic-mysql"); ok && my.ServerCPUSeen && cm.ServerCPUSeen {
			fmt.Fprintf(&b, ", server CPU/signal %s against %s", micros(my.ServerCPUPerSignal), micros(cm.ServerCPUPerSignal))
		}
		fmt.Fprintln(&b)
	}
	if okPG && pg.VsCeiling > 0 {
		fmt.Fprintf(&b, "target baton-pg >= 0.5x ceiling throughput: %.2fx (%s)\n", pg.VsCeiling, metText(pg.VsCeiling >= 0.5))
	}
	for _, res := range r.Results {
		if !strings.HasPrefix(res.Variant, "baton") || res.InFlightMax == 0 {
			continue
		}
		fmt.Fprintf(&b, "target %s stored dedup data <= 2x signals in flight: max %d live tokens, max %d in flight (%s)\n",
			res.Variant, res.StoredMax, res.InFlightMax, metText(res.StoredMax <= 2*res.InFlightMax))
	}
	if okClassic && len(classic.Samples) > 1 {
		first, last := classic.Samples[0].Stored, classic.Samples[len(classic.Samples)-1].Stored
		fmt.Fprintf(&b, "classic processed table: %d rows at the start of the measured time, %d at the end (%s)\n",
			first, last, map[bool]string{true: "grows", false: "does not grow"}[last > first])
	}
	return b.String()
}

func metText(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}

func (r *Report) scalingText() string {
	var b strings.Builder
	b.WriteString("scaling (signals/s by workers per destination):\n")
	var workers []int
	var variants []string
	rate := map[string]map[int]float64{}
	for _, p := range r.Scaling {
		if rate[p.Variant] == nil {
			rate[p.Variant] = map[int]float64{}
			variants = append(variants, p.Variant)
		}
		if !containsInt(workers, p.Workers) {
			workers = append(workers, p.Workers)
		}
		rate[p.Variant][p.Workers] = p.Throughput
	}
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "variant\t")
	for _, w := range workers {
		fmt.Fprintf(tw, "%d\t", w)
	}
	fmt.Fprintln(tw)
	for _, v := range variants {
		fmt.Fprintf(tw, "%s\t", v)
		for _, w := range workers {
			fmt.Fprintf(tw, "%.0f\t", rate[v][w])
		}
		fmt.Fprintln(tw)
	}
	if rate["baton-pg"] != nil && rate["classic"] != nil {
		fmt.Fprint(tw, "baton-pg / classic\t")
		for _, w := range workers {
			fmt.Fprintf(tw, "%s\t", ratio(rate["baton-pg"][w]/rate["classic"][w]))
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
	return b.String()
}

func (r *Report) longText() string {
	var b strings.Builder
	b.WriteString("long run (per window: signals/s, CPU/signal of this process, dedup data stored at the window's end):\n")
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "signals\t")
	for _, s := range r.Long {
		fmt.Fprintf(tw, "%s signals/s\tCPU/signal\tstored\t", s.Variant)
	}
	fmt.Fprintln(tw)
	rows := 0
	for _, s := range r.Long {
		rows = max(rows, len(s.Windows))
	}
	for i := range rows {
		var signals int64
		for _, s := range r.Long {
			if i < len(s.Windows) {
				signals = s.Windows[i].Signals
			}
		}
		fmt.Fprintf(tw, "%d\t", signals)
		for _, s := range r.Long {
			if i < len(s.Windows) {
				w := s.Windows[i]
				fmt.Fprintf(tw, "%.0f\t%s\t%d\t", w.Throughput, micros(w.CPUPerSignal), w.Stored)
			} else {
				fmt.Fprint(tw, "\t\t\t")
			}
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
	for _, s := range r.Long {
		if n := len(s.Windows); n > 1 {
			fmt.Fprintf(&b, "%s: last window %.2fx the first's throughput; %s for the run\n",
				s.Variant, s.Windows[n-1].Throughput/s.Windows[0].Throughput, s.Elapsed.Round(time.Second))
		}
	}
	return b.String()
}

func containsInt(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func ratio(x float64) string {
	if x == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", x)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond)) }

func micros(d time.Duration) string {
	return fmt.Sprintf("%.0fµs", float64(d)/float64(time.Microsecond))
}
