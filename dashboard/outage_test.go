package dashboard_test

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/backend/memory"
	"github.com/batonhq/baton/conversation"
	"github.com/batonhq/baton/dashboard"
	"github.com/batonhq/baton/store"
)

// downStore fails every listing while down is set.
type downStore struct {
	store.TokenStore
	down atomic.Bool
}

func (d *downStore) ListByDestination(ctx context.Context, dest string, p store.Page) ([]baton.Token, error) {
	if d.down.Load() {
		return nil, errDown
	}
	return d.TokenStore.ListByDestination(ctx, dest, p)
}

// levels counts log records by level.
type levels struct {
	mu     sync.Mutex
	counts map[slog.Level]int
}

func (l *levels) Enabled(context.Context, slog.Level) bool { return true }
func (l *levels) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.counts[r.Level]++
	return nil
}
func (l *levels) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *levels) WithGroup(string) slog.Handler      { return l }

func (l *levels) get(level slog.Level) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.counts[level]
}

// A store that is down while the page is open is one warning, not one per
// destination every TokenRefresh (an open page refreshes every 2s), and a
// line when listing works again.
func TestStoreOutageIsOneWarningWhileThePageRefreshes(t *testing.T) {
	t.Parallel()
	ds := &downStore{TokenStore: memory.NewTokenStore()}
	logs := &levels{counts: map[slog.Level]int{}}
	var now atomic.Int64
	now.Store(t0.UnixNano())
	srv := newServer(t, dashboard.Config{Recorder: conversation.NewRecorder(0), Tokens: ds, Logger: slog.New(logs),
		Now:          func() time.Time { return time.Unix(0, now.Load()) },
		Destinations: func() []string { return []string{"billing", "shipping", "stock"} }})
	ds.down.Store(true)
	var body tokensBody
	for range 20 {
		get(t, srv, "/api/tokens", &body)
		now.Add(int64(2 * time.Second))
	}
	if body.Destinations[0].Error == "" {
		t.Fatalf("the page shows no error while the store is down: %+v", body.Destinations)
	}
	if n := logs.get(slog.LevelWarn); n != 1 {
		t.Errorf("%d warnings for 20 refreshes of 3 destinations with the store down, want 1", n)
	}
	ds.down.Store(false)
	get(t, srv, "/api/tokens", &body)
	if n := logs.get(slog.LevelInfo); n != 1 {
		t.Errorf("%d info lines after the store came back, want 1 that listing works again", n)
	}
}
