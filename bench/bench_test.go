package bench

import (
	"bytes"
	"context"
	"encoding/xml"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/internal/proccpu"
	"github.com/batonhq/baton/internal/testenv"
)

// tiny is a configuration that runs in a few seconds.
func tiny(variants ...string) Config {
	return Config{
		Variants:     variants,
		Duration:     time.Second,
		Rounds:       1,
		Warmup:       200 * time.Millisecond,
		Workers:      2,
		InFlight:     8,
		Accounts:     5,
		Orders:       20,
		SampleEvery:  100 * time.Millisecond,
		NoScaling:    true,
		NoContention: true,
	}
}

// TestRunWithoutServers runs the comparison over the in-memory and
// embedded stores and the embedded NATS server: no external service.
func TestRunWithoutServers(t *testing.T) {
	t.Parallel()
	cfg := tiny("baton-memory", "baton-embedded")
	cfg.TempDir = t.TempDir()
	var progress bytes.Buffer
	cfg.Progress = &progress
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Results) != 2 {
		t.Fatalf("got %d results, want 2", len(rep.Results))
	}
	for _, res := range rep.Results {
		checkBatonResult(t, res, cfg.InFlight)
	}
	if got := strings.Count(progress.String(), "\n"); got != 2 {
		t.Errorf("progress has %d lines, want one per variant and round (2):\n%s", got, progress.String())
	}
	checkRendering(t, rep, "baton-memory", "baton-embedded")
}

func checkBatonResult(t *testing.T, res Result, inFlight int) {
	t.Helper()
	if res.Check != "ok" {
		t.Errorf("%s: check: %s", res.Variant, res.Check)
	}
	if res.Signals == 0 || res.Throughput <= 0 {
		t.Errorf("%s: no signals measured (%d, %.1f/s)", res.Variant, res.Signals, res.Throughput)
	}
	if res.P50 <= 0 || res.P99 < res.P50 {
		t.Errorf("%s: latencies p50 %v p99 %v", res.Variant, res.P50, res.P99)
	}
	if res.CPUPerSignal <= 0 {
		t.Errorf("%s: CPU per signal %v", res.Variant, res.CPUPerSignal)
	}
	if len(res.Samples) < 3 {
		t.Errorf("%s: %d samples of stored data, want several", res.Variant, len(res.Samples))
	}
	// Live tokens: at most one per conversation in flight, plus the
	// roots issued by producers that sampling caught between counters.
	if res.StoredMax == 0 || res.StoredMax > 2*int64(inFlight) {
		t.Errorf("%s: max %d live tokens with %d conversations in flight", res.Variant, res.StoredMax, inFlight)
	}
}

func checkRendering(t *testing.T, rep *Report, variants ...string) {
	t.Helper()
	var text bytes.Buffer
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, v := range variants {
		if !strings.Contains(text.String(), v) {
			t.Errorf("table lacks %s:\n%s", v, text.String())
		}
	}
	var svg bytes.Buffer
	if err := rep.WriteSVG(&svg); err != nil {
		t.Fatal(err)
	}
	dec := xml.NewDecoder(&svg)
	lines := 0
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("SVG is not well-formed XML: %v", err)
		}
		if el, ok := tok.(xml.StartElement); ok && el.Name.Local == "polyline" {
			lines++
		}
	}
	if lines != len(variants) {
		t.Errorf("SVG has %d lines, want %d", lines, len(variants))
	}
}

// TestRunPostgres runs the variants on PostgreSQL with a scaling point and
// a short long run, and checks that the classic table grows while baton's
// live tokens stay at the signals in flight.
func TestRunPostgres(t *testing.T) {
	t.Parallel()
	dsn := testenv.Addr(t, testenv.Postgres)
	cfg := tiny("ceiling", "classic", "classic-batched", "baton-pg", "baton-pg-tx")
	cfg.PostgresDSN = dsn
	cfg.TempDir = t.TempDir()
	// Two accounts: charges conflict, so that the batched variants refuse
	// items and retry them alone.
	cfg.NoContention = false
	cfg.ContentionAccounts = 2
	cfg.ContentionVariants = []string{"classic", "classic-batched", "baton-pg"}
	cfg.NoScaling = false
	cfg.ScalingWorkers = []int{1}
	cfg.ScalingVariants = []string{"classic", "baton-pg"}
	cfg.ScalingDuration = 500 * time.Millisecond
	cfg.Long = true
	cfg.LongSignals = 400
	cfg.LongWindow = 200
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, res := range rep.Results {
		if res.Check != "ok" {
			t.Errorf("%s: check: %s", res.Variant, res.Check)
		}
		if res.Throughput <= 0 || res.VsCeiling <= 0 || res.VsClassic <= 0 || res.VsBatched <= 0 {
			t.Errorf("%s: throughput %.1f, ratios %.2f %.2f %.2f", res.Variant, res.Throughput, res.VsCeiling, res.VsClassic, res.VsBatched)
		}
	}
	if len(rep.Contention) != 3 {
		t.Fatalf("got %d results under contention, want 3", len(rep.Contention))
	}
	for _, res := range rep.Contention {
		if res.Check != "ok" {
			t.Errorf("under contention, %s: check: %s", res.Variant, res.Check)
		}
		if res.Throughput <= 0 || res.VsClassic <= 0 {
			t.Errorf("under contention, %s: throughput %.1f, ratio %.2f", res.Variant, res.Throughput, res.VsClassic)
		}
	}
	classic, _ := rep.Result("classic")
	if n := len(classic.Samples); n < 2 || classic.Samples[n-1].Stored <= classic.Samples[0].Stored {
		t.Errorf("classic processed table did not grow: %+v", classic.Samples)
	}
	pg, _ := rep.Result("baton-pg")
	checkBatonResult(t, pg, cfg.InFlight)
	if len(rep.Scaling) != 2 {
		t.Errorf("got %d scaling points, want 2", len(rep.Scaling))
	}
	if len(rep.Long) != 2 || len(rep.Long[0].Windows) != 2 || len(rep.Long[1].Windows) != 2 {
		t.Fatalf("long run: %+v", rep.Long)
	}
	if classicLong := rep.Long[0].Windows; classicLong[1].Stored < 400 {
		t.Errorf("classic stored %d rows after 400 signals", classicLong[1].Stored)
	}
	if batonLong := rep.Long[1].Windows; batonLong[1].Stored > 2*int64(cfg.InFlight) {
		t.Errorf("baton stored %d live tokens with %d in flight", batonLong[1].Stored, cfg.InFlight)
	}
	checkRendering(t, rep, "classic", "classic-batched", "baton-pg", "baton-pg-tx")
	if rep.Machine.Postgres == "" {
		t.Errorf("machine description lacks PostgreSQL: %+v", rep.Machine)
	}
}

func TestUnreachablePostgresIsOneLine(t *testing.T) {
	t.Parallel()
	cfg := tiny("classic")
	cfg.PostgresDSN = "postgres://postgres@127.0.0.1:1/none?sslmode=disable&connect_timeout=2"
	_, err := Run(context.Background(), cfg)
	if err == nil {
		t.Fatal("Run succeeded without a PostgreSQL server")
	}
	msg := err.Error()
	if strings.Contains(msg, "\n") || !strings.Contains(msg, "PostgreSQL at 127.0.0.1:1 is unreachable") {
		t.Errorf("error %q is not one clear line", msg)
	}
}

func TestConfigRejectsUnknownVariant(t *testing.T) {
	t.Parallel()
	_, err := Run(context.Background(), Config{Variants: []string{"nope"}})
	if err == nil || !strings.Contains(err.Error(), `unknown variant "nope"`) {
		t.Fatalf("got %v", err)
	}
}

func TestPercentile(t *testing.T) {
	t.Parallel()
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{50, 50 * time.Millisecond}, {99, 99 * time.Millisecond}, {100, 100 * time.Millisecond}, {1, time.Millisecond}} {
		if got := percentile(d, c.p); got != c.want {
			t.Errorf("p%.0f = %v, want %v", c.p, got, c.want)
		}
	}
	if got := percentile(nil, 50); got != 0 {
		t.Errorf("p50 of nothing = %v", got)
	}
}

func TestProcessCPUAndProc(t *testing.T) {
	t.Parallel()
	before := processCPU()
	deadline := time.Now().Add(30 * time.Millisecond)
	for x := 0; time.Now().Before(deadline); x++ {
		_ = x * x
	}
	if after := processCPU(); after <= before {
		t.Errorf("process CPU did not grow: %v then %v", before, after)
	}
	self := os.Getpid()
	cpu, ok := proccpu.Of([]int{self})
	if !ok || cpu[self] < 0 {
		t.Errorf("cannot read /proc/%d/stat: %v %v", self, cpu, ok)
	}
	if got := cpuDelta(map[int]time.Duration{1: time.Second}, map[int]time.Duration{1: 3 * time.Second, 2: time.Second}); got != 3*time.Second {
		t.Errorf("cpuDelta = %v, want 3s", got)
	}
}

func TestFormatting(t *testing.T) {
	t.Parallel()
	for in, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 1234567: "1,234,567", -4200: "-4,200"} {
		if got := thousands(in); got != want {
			t.Errorf("thousands(%d) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[float64]float64{0.4: 0.5, 7: 7.5, 10: 10, 11: 15, 45000: 50000} {
		if got := niceCeil(in); got != want {
			t.Errorf("niceCeil(%v) = %v, want %v", in, got, want)
		}
	}
	if got := redactDSN("postgres://u:secret@db.example:5432/app?sslmode=disable"); strings.Contains(got, "secret") || got != "db.example:5432/app" {
		t.Errorf("redactDSN = %q", got)
	}
}

func TestRunBySignalCount(t *testing.T) {
	t.Parallel()
	cfg := tiny("baton-memory")
	cfg.TempDir = t.TempDir()
	cfg.Signals = 150
	cfg.Duration = time.Hour // ignored when Signals is set
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	res := rep.Results[0]
	if res.Signals < 150 || res.Check != "ok" {
		t.Errorf("measured %d signals (check %s), want at least 150", res.Signals, res.Check)
	}
}

// TestRunMySQL runs the MySQL variants against the machine's MySQL or
// MariaDB: both check out, and baton-mysql's "x classic" is against
// classic-mysql.
func TestRunMySQL(t *testing.T) {
	t.Parallel()
	cfg := tiny("classic-mysql", "baton-mysql")
	cfg.MySQLDSN = testenv.Addr(t, testenv.MySQL)
	cfg.TempDir = t.TempDir()
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, res := range rep.Results {
		if res.Check != "ok" || res.Throughput <= 0 || res.VsClassic <= 0 || res.VsCeiling != 0 {
			t.Errorf("%s: check %s, throughput %.1f, x classic %.2f, x ceiling %.2f (want none: the ceiling is PostgreSQL's)",
				res.Variant, res.Check, res.Throughput, res.VsClassic, res.VsCeiling)
		}
	}
	if classic, _ := rep.Result("classic-mysql"); classic.VsClassic != 1 {
		t.Errorf("classic-mysql is %.2fx itself", classic.VsClassic)
	}
	my, _ := rep.Result("baton-mysql")
	checkBatonResult(t, my, cfg.InFlight)
	checkRendering(t, rep, "classic-mysql", "baton-mysql")
}
