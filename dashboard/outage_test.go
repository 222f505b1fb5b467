package dashboard_test

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/backend/memory"
	"github.com/batonhq/baton/conversation"
	"github.com/batonhq/baton/dashboard"
	"github.com/batonhq/baton/internal/testlog"
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

// A store that is down while the page is open is one warning, not one per
// destination every TokenRefresh (an open page refreshes every 2s), and a
// line when listing works again.
func TestStoreOutageIsOneWarningWhileThePageRefreshes(t *testing.T) {
	t.Parallel()
	ds := &downStore{TokenStore: memory.NewTokenStore()}
	logs := &testlog.Recorder{}
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
	if n := logs.CountLevel(slog.LevelWarn); n != 1 {
		t.Errorf("%d warnings for 20 refreshes of 3 destinations with the store down, want 1", n)
	}
	ds.down.Store(false)
	get(t, srv, "/api/tokens", &body)
	if n := logs.CountLevel(slog.LevelInfo); n != 1 {
		t.Errorf("%d info lines after the store came back, want 1 that listing works again", n)
	}
}
