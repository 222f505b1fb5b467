package tokenservice_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/internal/testlog"
	"github.com/batonhq/baton/store"
	"github.com/batonhq/baton/tokenservice"
)

// downTokens is a token store that, while down is set, fails every call
// as a store whose server went away does: refused connections (not
// applied) or connections cut mid-call (outcome unknown).
type downTokens struct {
	store.TokenStore
	down    atomic.Bool
	unknown bool
}

func (d *downTokens) fail(op string) error {
	if d.unknown {
		return fmt.Errorf("redis: %s: outcome unknown: EOF", op)
	}
	return fmt.Errorf("redis: %s: %w: dial tcp 127.0.0.1:6379: connect: connection refused", op, store.ErrNotApplied)
}

func (d *downTokens) Issue(ctx context.Context, root baton.Token) (baton.Token, error) {
	if d.down.Load() {
		return baton.Token{}, d.fail("issue")
	}
	return d.TokenStore.Issue(ctx, root)
}

func (d *downTokens) Get(ctx context.Context, id baton.TokenID) (baton.Token, error) {
	if d.down.Load() {
		return baton.Token{}, d.fail("get")
	}
	return d.TokenStore.Get(ctx, id)
}

// An outage of the token store is one line in the service's log when it
// begins and one when it ends, whatever the number of requests that meet
// it (a line per request floods the log of a busy service exactly when the
// operator reads it); /metrics counts the failed operations and times
// every call, so that an operator can alert on both.
func TestStoreOutageIsLoggedOnceAndCounted(t *testing.T) {
	t.Parallel()
	for _, unknown := range []bool{false, true} {
		t.Run(fmt.Sprintf("unknown=%v", unknown), func(t *testing.T) {
			t.Parallel()
			var inner *downTokens
			logs := &testlog.Recorder{}
			reader := sdkmetric.NewManualReader()
			f := newFixture(t, func(c *tokenservice.Config) {
				inner = &downTokens{TokenStore: c.Tokens, unknown: unknown}
				c.Tokens = inner
				c.Logger = slog.New(logs)
				c.MeterProvider = sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
			})
			root := map[string]any{"destination": "billing", "type": "charge"}
			call(t, "POST", f.url+"/v1/roots", f.orders, root).decode(t, http.StatusCreated, &baton.Token{})

			inner.down.Store(true)
			const requests = 40
			want := http.StatusServiceUnavailable
			if unknown {
				want = http.StatusInternalServerError
			}
			for range requests {
				if a := call(t, "POST", f.url+"/v1/roots", f.orders, root); a.status != want {
					t.Fatalf("issue while the store is down: status %d, want %d", a.status, want)
				}
			}
			if a := call(t, "GET", f.url+"/healthz", "", nil); a.status != http.StatusServiceUnavailable {
				t.Fatalf("healthz while the store is down: %d", a.status)
			}
			warnings := logs.Records(slog.LevelWarn)
			if len(warnings) != 2 {
				for _, w := range warnings {
					t.Logf("%s %s", w.Level, w.Message)
				}
				t.Fatalf("%d requests met a store that is down: %d warning or error lines, want 2 (writes and reads)", requests+1, len(warnings))
			}

			inner.down.Store(false)
			call(t, "POST", f.url+"/v1/roots", f.orders, root).decode(t, http.StatusCreated, &baton.Token{})
			call(t, "GET", f.url+"/healthz", "", nil)
			messages := logs.Messages(testlog.All)
			for _, kind := range []string{"writes", "reads"} {
				if n := slices.Index(messages, "token store answers "+kind+" again"); n < 0 {
					t.Fatalf("after the store came back no line says that it answers %s again: %q", kind, messages)
				}
			}

			var rm metricdata.ResourceMetrics
			if err := reader.Collect(t.Context(), &rm); err != nil {
				t.Fatal(err)
			}
			failed, timed, series := int64(0), uint64(0), 0
			for _, sm := range rm.ScopeMetrics {
				for _, m := range sm.Metrics {
					switch data := m.Data.(type) {
					case metricdata.Sum[int64]:
						if m.Name == "baton.token_store.errors" {
							series = len(data.DataPoints)
							for _, p := range data.DataPoints {
								failed += p.Value
							}
						}
					case metricdata.Histogram[float64]:
						if m.Name == "baton.token_store.duration" {
							if m.Unit != "s" {
								t.Errorf("duration unit %q, want s", m.Unit)
							}
							for _, p := range data.DataPoints {
								timed += p.Count
								if len(p.Bounds) == 0 || p.Bounds[0] > 0.001 {
									t.Errorf("duration buckets %v: want sub-millisecond resolution for a store call", p.Bounds)
								}
							}
						}
					}
				}
			}
			if series < 18 {
				t.Errorf("baton.token_store.errors has %d series; want every operation and outcome from the start, at zero", series)
			}
			if failed != requests+1 {
				t.Errorf("baton.token_store.errors = %d, want %d", failed, requests+1)
			}
			if timed != requests+4 {
				t.Errorf("baton.token_store.duration counted %d calls, want %d", timed, requests+4)
			}
		})
	}
}

// refusingWrites refuses every write, as a store on a full disk or a
// read-only replica does, and answers reads.
type refusingWrites struct{ store.TokenStore }

func (refusingWrites) Issue(context.Context, baton.Token) (baton.Token, error) {
	return baton.Token{}, fmt.Errorf("redis: issue: %w: NOREPLICAS Not enough good replicas to write.", store.ErrNotApplied)
}

// A store that answers reads but refuses writes is not declared back by a
// read (healthz's): writes that keep failing after it are reported.
func TestStoreRefusingWritesIsNotReportedBackByAReadAlone(t *testing.T) {
	t.Parallel()
	logs := &testlog.Recorder{}
	f := newFixture(t, func(c *tokenservice.Config) {
		c.Tokens = refusingWrites{c.Tokens}
		c.Logger = slog.New(logs)
	})
	root := map[string]any{"destination": "billing", "type": "charge"}
	call(t, "POST", f.url+"/v1/roots", f.orders, root)
	call(t, "GET", f.url+"/healthz", "", nil)
	call(t, "POST", f.url+"/v1/roots", f.orders, root)
	warnings, messages := logs.Records(slog.LevelWarn), logs.Messages(testlog.All)
	if len(warnings) != 1 || !strings.Contains(warnings[0].Message, "fails writes") {
		t.Fatalf("want one line that the store fails writes; got %q", messages)
	}
	for _, m := range messages {
		if strings.Contains(m, "again") {
			t.Errorf("a read declared the store back while it refuses writes: %q", m)
		}
	}
}

// partDown is a store split in parts of which one is down: its batch
// calls answer as a whole and fail the items of that part (here, every
// item of the reads or of the transitions), as backend/split does.
type partDown struct {
	store.TokenStore
	reads bool // the reads fail, else the transitions
}

func (p partDown) partFailure() error {
	return fmt.Errorf("split: part 2: redis: %w: dial tcp 127.0.0.1:6380: connect: connection refused", store.ErrNotApplied)
}

func (p partDown) GetTokens(ctx context.Context, ids []baton.TokenID) ([]baton.Token, []error, error) {
	tokens, errs := make([]baton.Token, len(ids)), make([]error, len(ids))
	for i, id := range ids {
		if p.reads {
			errs[i] = p.partFailure()
		} else {
			tokens[i], errs[i] = p.Get(ctx, id)
		}
	}
	return tokens, errs, nil
}

func (p partDown) TransitionTokens(_ context.Context, ts []store.TokenTransition) ([]bool, []error, error) {
	errs := make([]error, len(ts))
	for i := range errs {
		errs[i] = p.partFailure()
	}
	return make([]bool, len(ts)), errs, nil
}

// A part of the store that fails the items of batch calls is an outage
// of the store, logged and counted as one, although each call answered.
func TestStorePartDownInBatchesIsReported(t *testing.T) {
	t.Parallel()
	for _, reads := range []bool{true, false} {
		t.Run(fmt.Sprintf("reads=%v", reads), func(t *testing.T) {
			t.Parallel()
			logs := &testlog.Recorder{}
			reader := sdkmetric.NewManualReader()
			f := newFixture(t, func(c *tokenservice.Config) {
				c.Tokens = partDown{c.Tokens, reads}
				c.Logger = slog.New(logs)
				c.MeterProvider = sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
			})
			op, kind := "transition_batch", "fails writes"
			if reads {
				op, kind = "get_batch", "fails reads"
			}
			root := issueRoot(t, f.url, f.orders, rootToken("orders"))
			call(t, "POST", f.url+"/v1/transitions/batch", f.orders, batchBody(transitionBody(root.ID))).decode(t, 200, &tokenservice.TransitionBatchResponse{})
			warnings, messages := logs.Records(slog.LevelWarn), logs.Messages(testlog.All)
			if !slices.ContainsFunc(warnings, func(w slog.Record) bool { return strings.Contains(w.Message, kind) }) {
				t.Errorf("a batch whose items a part of the store failed: no line that the store %s; log %q", kind, messages)
			}
			var rm metricdata.ResourceMetrics
			if err := reader.Collect(t.Context(), &rm); err != nil {
				t.Fatal(err)
			}
			var counted int64
			for _, sm := range rm.ScopeMetrics {
				for _, m := range sm.Metrics {
					if data, ok := m.Data.(metricdata.Sum[int64]); ok && m.Name == "baton.token_store.errors" {
						for _, p := range data.DataPoints {
							if o, _ := p.Attributes.Value("op"); o.AsString() == op {
								counted += p.Value
							}
						}
					}
				}
			}
			if counted != 1 {
				t.Errorf("%s failures counted %d, want 1", op, counted)
			}
		})
	}
}

// switchedWrites refuses the writes of Issue while refuse is set, as a
// store at its memory limit or a read-only replica does, and counts the
// calls of Issue.
type switchedWrites struct {
	store.TokenStore
	refuse atomic.Bool
	issues atomic.Int32
}

func (s *switchedWrites) Issue(ctx context.Context, root baton.Token) (baton.Token, error) {
	s.issues.Add(1)
	if s.refuse.Load() {
		return baton.Token{}, fmt.Errorf("redis: issue: %w: OOM command not allowed when used memory > 'maxmemory'.", store.ErrNotApplied)
	}
	return s.TokenStore.Issue(ctx, root)
}

// /healthz answers 503 while the store refuses writes, though it answers
// reads: it writes a token and removes it when no write of the service's
// own traffic vouches for the store, at most once a second, and answers
// 200 again once a write works.
func TestHealthzSeesAStoreThatRefusesWrites(t *testing.T) {
	t.Parallel()
	tokens := &switchedWrites{}
	var elapsed atomic.Int64
	start := time.Date(2026, 12, 6, 8, 0, 0, 0, time.UTC)
	logs := &testlog.Recorder{}
	f := newFixture(t, func(c *tokenservice.Config) {
		tokens.TokenStore = c.Tokens
		c.Tokens = tokens
		c.Now = func() time.Time { return start.Add(time.Duration(elapsed.Load())) }
		c.Logger = slog.New(logs)
	})
	healthz := func() answer { return call(t, "GET", f.url+"/healthz", "", nil) }

	if a := healthz(); a.status != http.StatusOK || tokens.issues.Load() != 1 {
		t.Fatalf("healthz with no write yet: %d %s after %d writes; want 200 after a probe", a.status, a.body, tokens.issues.Load())
	}
	if f.tokens.Len() != 0 {
		t.Errorf("the probe left %d tokens; want it removed", f.tokens.Len())
	}
	if a := healthz(); a.status != http.StatusOK || tokens.issues.Load() != 1 {
		t.Fatalf("healthz after a write worked: %d after %d writes; want 200 without a probe", a.status, tokens.issues.Load())
	}

	tokens.refuse.Store(true)
	call(t, "POST", f.url+"/v1/roots", f.orders, rootBody(rootToken("orders"))).wantProblem(t, 503, tokenservice.ProblemNotApplied)
	healthz().wantProblem(t, 503, tokenservice.ProblemNotApplied)
	healthz().wantProblem(t, 503, tokenservice.ProblemNotApplied)
	if n := tokens.issues.Load(); n != 3 {
		t.Errorf("%d writes after a refused root and two healthz within a second; want 3 (one probe)", n)
	}

	tokens.refuse.Store(false)
	elapsed.Store(int64(2 * time.Second))
	if a := healthz(); a.status != http.StatusOK {
		t.Fatalf("healthz after the store takes writes again: %d %s", a.status, a.body)
	}
	if messages := logs.Messages(testlog.All); !slices.ContainsFunc(messages, func(m string) bool { return strings.Contains(m, "answers writes again") }) {
		t.Errorf("the probe that worked did not end the outage of writes: %q", messages)
	}
}
