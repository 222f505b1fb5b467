package telemetry_test

import (
	"context"
	"io"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/backend/memory"
	"github.com/batonhq/baton/engine"
	"github.com/batonhq/baton/internal/telemetry"
	"github.com/batonhq/baton/store"
)

type nothing struct{}

// An engine's counters and the live-token gauge reach the Prometheus
// endpoint under their documented names.
func TestPrometheusExposesEngineMetrics(t *testing.T) {
	t.Parallel()
	provider, handler, err := telemetry.Prometheus()
	if err != nil {
		t.Fatal(err)
	}
	tokens := memory.NewTokenStore()
	e, err := engine.New(engine.Config{Destination: "shop", Tokens: tokens, Entities: memory.NewEntityStore(),
		Dispatch: engine.Routes{}, MeterProvider: provider})
	if err != nil {
		t.Fatal(err)
	}
	if err := telemetry.LiveTokens(provider.Meter("test"), tokens, func() []string { return []string{"shop"} }, telemetry.StuckAfter{}); err != nil {
		t.Fatal(err)
	}
	if err := engine.Register(e, engine.Activity[nothing]{Type: "order",
		Entity: func(s baton.Signal) (string, error) { return s.Conversation.String(), nil },
		Handle: func(context.Context, baton.Signal, *nothing) (engine.Effects, error) { return engine.Effects{}, nil }}); err != nil {
		t.Fatal(err)
	}
	sig, err := e.IssueRoot(t.Context(), baton.Emit{Destination: "shop", Type: "order"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.IssueRoot(t.Context(), baton.Emit{Destination: "shop", Type: "order"}, 0); err != nil {
		t.Fatal(err)
	}
	for range 2 { // the second is a duplicate
		if _, err := e.Process(t.Context(), sig); err != nil {
			t.Fatal(err)
		}
	}
	rec := httptest.NewRecorder()
	handler.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	text := string(body)
	for _, want := range []string{
		`baton_activities_applied_total{baton_destination="shop"`,
		`baton_duplicates_dropped_total{baton_destination="shop"`,
		`baton_transitions_total{baton_destination="shop"`,
		`baton_activity_duration_seconds_bucket{baton_destination="shop"`,
		`baton_tokens_live{baton_destination="shop"`,
		`go_goroutines`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if t.Failed() {
		t.Log(text)
	}
}

// countingStore counts listings of the store.
type countingStore struct {
	store.TokenStore
	listings atomic.Int64
}

func (c *countingStore) ListByDestination(ctx context.Context, dest string, p store.Page) ([]baton.Token, error) {
	c.listings.Add(1)
	return c.TokenStore.ListByDestination(ctx, dest, p)
}

var liveShop = regexp.MustCompile(`(?m)^baton_tokens_live\{baton_destination="shop"[^}]*\} 3$`)

// Pollers of /metrics do not make the service recount the store per
// request: one count serves every scrape for a while.
func TestLiveTokensAreCountedOncePerRefresh(t *testing.T) {
	t.Parallel()
	provider, handler, err := telemetry.Prometheus()
	if err != nil {
		t.Fatal(err)
	}
	tokens := &countingStore{TokenStore: memory.NewTokenStore()}
	for range 3 {
		if _, err := tokens.Issue(t.Context(), baton.Token{Destination: "shop", Type: "order"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := telemetry.LiveTokens(provider.Meter("test"), tokens, func() []string { return []string{"shop"} }, telemetry.StuckAfter{}); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		if body := rec.Body.String(); !liveShop.MatchString(body) {
			t.Fatalf("scrape %d lacks 3 live tokens of shop:\n%s", i, body)
		}
	}
	if n := tokens.listings.Load(); n != 1 {
		t.Errorf("20 scrapes listed the store %d times, want once", n)
	}
}

// TestStuckTokens: a live token older than the threshold counts as stuck.
func TestStuckTokens(t *testing.T) {
	t.Parallel()
	provider, handler, err := telemetry.Prometheus()
	if err != nil {
		t.Fatal(err)
	}
	tokens := memory.NewTokenStore()
	for _, age := range []time.Duration{time.Hour, time.Second} {
		if _, err := tokens.Issue(t.Context(), baton.Token{Destination: "billing", Type: "charge", Digest: baton.DigestOf(nil),
			CreatedAt: time.Now().Add(-age)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := telemetry.LiveTokens(provider.Meter("test"), tokens, func() []string { return []string{"billing"} }, telemetry.StuckAfter{Default: 10 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	handler.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, want := range []string{`baton_tokens_live{baton_destination="billing",otel_scope_name="test"} 2`,
		`baton_tokens_stuck{baton_destination="billing",otel_scope_name="test"} 1`} {
		if !containsSeries(string(body), want) {
			t.Errorf("/metrics lacks %s:\n%s", want, body)
		}
	}
}

// containsSeries reports whether text has the series of want with its
// value, whatever other labels the exporter adds.
func containsSeries(text, want string) bool {
	name, rest, _ := strings.Cut(want, "{")
	value := rest[strings.LastIndex(rest, " ")+1:]
	for line := range strings.Lines(text) {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, name+"{") && strings.Contains(line, `baton_destination="billing"`) && strings.HasSuffix(line, " "+value) {
			return true
		}
	}
	return false
}

// A destination's own threshold decides which of its live tokens are
// stuck: an hour-old shipment is not stuck under shipping=24h, an
// hour-old charge is under the default 10m.
func TestStuckThresholdPerDestination(t *testing.T) {
	t.Parallel()
	provider, handler, err := telemetry.Prometheus()
	if err != nil {
		t.Fatal(err)
	}
	tokens := memory.NewTokenStore()
	for _, dest := range []string{"billing", "shipping"} {
		if _, err := tokens.Issue(t.Context(), baton.Token{Destination: dest, Type: "t", Digest: baton.DigestOf(nil),
			CreatedAt: time.Now().Add(-time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	stuckAfter := telemetry.StuckAfter{Default: 10 * time.Minute, ByDestination: map[string]time.Duration{"shipping": 24 * time.Hour}}
	if err := telemetry.LiveTokens(provider.Meter("test"), tokens, func() []string { return []string{"billing", "shipping"} }, stuckAfter); err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	handler.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, want := range []string{
		`baton_tokens_stuck{baton_destination="billing",otel_scope_name="test",otel_scope_schema_url="",otel_scope_version=""} 1`,
		`baton_tokens_stuck{baton_destination="shipping",otel_scope_name="test",otel_scope_schema_url="",otel_scope_version=""} 0`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if t.Failed() {
		t.Log(string(body))
	}
}
