package dashboard_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/backend/memory"
	"github.com/batonhq/baton/conversation"
	"github.com/batonhq/baton/dashboard"
	"github.com/batonhq/baton/engine"
	"github.com/batonhq/baton/store"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// story feeds rec one conversation: a root at shop that emitted a charge to
// billing (transitioned, then parked there) and a reserve to warehouse
// (still in flight), plus a duplicate of the root. It returns the ids.
func story(rec *conversation.Recorder, at time.Time) (root, charge, reserve baton.Signal) {
	root = signal(baton.TokenID{}, baton.TokenID{}, "shop", "order.place")
	charge = signal(root.Conversation, root.ID, "billing", "charge")
	reserve = signal(root.Conversation, root.ID, "warehouse", "reserve")
	rec.Observe(engine.Event{Kind: engine.EventRootIssued, Time: at, Destination: "shop", Signal: root})
	rec.Observe(engine.Event{Kind: engine.EventApplied, Time: at.Add(time.Millisecond), Destination: "shop", Signal: root,
		Children: []baton.Signal{charge, reserve}})
	rec.Observe(engine.Event{Kind: engine.EventTransitioned, Time: at.Add(2 * time.Millisecond), Destination: "shop",
		Signal: baton.Signal{ID: root.ID}, Children: []baton.Signal{charge, reserve}})
	rec.Observe(engine.Event{Kind: engine.EventDuplicate, Time: at.Add(3 * time.Millisecond), Destination: "shop", Signal: root})
	rec.Observe(engine.Event{Kind: engine.EventParked, Time: at.Add(4 * time.Millisecond), Destination: "billing", Signal: charge,
		Reason: "card declined"})
	return root, charge, reserve
}

func signal(conv, cause baton.TokenID, dest, typ string) baton.Signal {
	id := baton.NewTokenID()
	if conv.IsZero() {
		conv = id
	}
	return baton.Signal{ID: id, Conversation: conv, Causation: cause, Destination: dest, Type: typ}
}

func newServer(t *testing.T, cfg dashboard.Config) *httptest.Server {
	t.Helper()
	if cfg.Now == nil {
		cfg.Now = func() time.Time { return t0.Add(time.Minute) }
	}
	h, err := dashboard.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// get fetches path and decodes the JSON body into out (if not nil); it
// returns the status.
func get(t *testing.T, srv *httptest.Server, path string, out any) int {
	t.Helper()
	res, err := srv.Client().Get(srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	if ct := res.Header.Get("Content-Type"); strings.HasPrefix(path, "/api/") && ct != "application/json; charset=utf-8" {
		t.Errorf("GET %s: Content-Type %q", path, ct)
	}
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			t.Fatalf("GET %s: %v in %s", path, err, body)
		}
	}
	return res.StatusCode
}

func TestNewRequiresARecorder(t *testing.T) {
	t.Parallel()
	if _, err := dashboard.New(dashboard.Config{}); !errors.Is(err, dashboard.ErrInvalidConfig) {
		t.Fatalf("New without recorder: %v, want ErrInvalidConfig", err)
	}
	if _, err := dashboard.New(dashboard.Config{Recorder: conversation.NewRecorder(0), StuckAfter: -1}); !errors.Is(err, dashboard.ErrInvalidConfig) {
		t.Fatalf("New with negative StuckAfter: %v, want ErrInvalidConfig", err)
	}
}

type summary struct {
	ID         string `json:"id"`
	Signals    int    `json:"signals"`
	InFlight   int    `json:"in_flight"`
	Parked     int    `json:"parked"`
	Duplicates int    `json:"duplicates"`
	Root       *struct {
		Type        string `json:"type"`
		Destination string `json:"destination"`
	} `json:"root"`
}

type listBody struct {
	Total         int       `json:"total"`
	Conversations []summary `json:"conversations"`
}

func TestListConversations(t *testing.T) {
	t.Parallel()
	rec := conversation.NewRecorder(0)
	older, _, _ := story(rec, t0)
	newer, _, _ := story(rec, t0.Add(time.Second))
	srv := newServer(t, dashboard.Config{Recorder: rec})

	var body listBody
	if code := get(t, srv, "/api/conversations", &body); code != http.StatusOK {
		t.Fatalf("status %d", code)
	}
	if body.Total != 2 || len(body.Conversations) != 2 {
		t.Fatalf("total %d, listed %d; want 2 and 2", body.Total, len(body.Conversations))
	}
	first := body.Conversations[0]
	if first.ID != newer.Conversation.String() || body.Conversations[1].ID != older.Conversation.String() {
		t.Errorf("order %s, %s; want the most recent first", first.ID, body.Conversations[1].ID)
	}
	if first.Signals != 3 || first.InFlight != 1 || first.Parked != 1 || first.Duplicates != 1 {
		t.Errorf("summary %+v; want 3 signals, 1 in flight, 1 parked, 1 duplicate", first)
	}
	if first.Root == nil || first.Root.Type != "order.place" || first.Root.Destination != "shop" {
		t.Errorf("root %+v; want order.place @shop", first.Root)
	}

	if code := get(t, srv, "/api/conversations?limit=1", &body); code != http.StatusOK || len(body.Conversations) != 1 || body.Total != 2 {
		t.Errorf("limit=1: status %d, %d listed of %d", code, len(body.Conversations), body.Total)
	}
	if code := get(t, srv, "/api/conversations?limit=1000000", &body); code != http.StatusOK || len(body.Conversations) != 2 {
		t.Errorf("huge limit: status %d, %d listed", code, len(body.Conversations))
	}
	for _, bad := range []string{"0", "-3", "abc", "1.5"} {
		var e struct{ Error string }
		if code := get(t, srv, "/api/conversations?limit="+bad, &e); code != http.StatusBadRequest || e.Error == "" {
			t.Errorf("limit=%s: status %d, error %q; want 400 with a message", bad, code, e.Error)
		}
	}
}

func TestListIsBounded(t *testing.T) {
	t.Parallel()
	rec := conversation.NewRecorder(0)
	for i := range dashboard.MaxListLimit + 20 {
		story(rec, t0.Add(time.Duration(i)*time.Second))
	}
	srv := newServer(t, dashboard.Config{Recorder: rec})
	var body listBody
	get(t, srv, "/api/conversations", &body)
	if len(body.Conversations) != dashboard.DefaultListLimit || body.Total != dashboard.MaxListLimit+20 {
		t.Errorf("default: %d listed of %d", len(body.Conversations), body.Total)
	}
	get(t, srv, "/api/conversations?limit=100000", &body)
	if len(body.Conversations) != dashboard.MaxListLimit {
		t.Errorf("limit above the maximum: %d listed, want %d", len(body.Conversations), dashboard.MaxListLimit)
	}
}

type node struct {
	ID          string `json:"id"`
	Causation   string `json:"causation"`
	Type        string `json:"type"`
	Destination string `json:"destination"`
	State       string `json:"state"`
	Duplicates  int    `json:"duplicates"`
	Reason      string `json:"reason"`
}

func TestGetConversation(t *testing.T) {
	t.Parallel()
	rec := conversation.NewRecorder(0)
	root, charge, reserve := story(rec, t0)
	srv := newServer(t, dashboard.Config{Recorder: rec})

	var body struct {
		ID         string `json:"id"`
		Nodes      []node `json:"nodes"`
		TotalNodes int    `json:"total_nodes"`
		Truncated  bool   `json:"truncated"`
	}
	if code := get(t, srv, "/api/conversations/"+root.Conversation.String(), &body); code != http.StatusOK {
		t.Fatalf("status %d", code)
	}
	if body.ID != root.Conversation.String() || body.TotalNodes != 3 || body.Truncated || len(body.Nodes) != 3 {
		t.Fatalf("got id %s, %d nodes of %d (truncated %v)", body.ID, len(body.Nodes), body.TotalNodes, body.Truncated)
	}
	want := map[string]node{
		root.ID.String():    {Type: "order.place", Destination: "shop", State: "done", Duplicates: 1},
		charge.ID.String():  {Type: "charge", Destination: "billing", State: "parked", Causation: root.ID.String(), Reason: "card declined"},
		reserve.ID.String(): {Type: "reserve", Destination: "warehouse", State: "in_flight", Causation: root.ID.String()},
	}
	for _, n := range body.Nodes {
		w, ok := want[n.ID]
		w.ID = n.ID
		if !ok || n != w {
			t.Errorf("node %+v; want %+v", n, w)
		}
	}

	var e struct{ Error string }
	for _, bad := range []string{"xyz", strings.ToUpper(root.ID.String()), root.ID.String() + "00"} {
		if code := get(t, srv, "/api/conversations/"+bad, &e); code != http.StatusBadRequest || e.Error == "" {
			t.Errorf("id %q: status %d, error %q; want 400", bad, code, e.Error)
		}
	}
	if code := get(t, srv, "/api/conversations/"+baton.NewTokenID().String(), &e); code != http.StatusNotFound || e.Error == "" {
		t.Errorf("unknown id: status %d, error %q; want 404", code, e.Error)
	}
	// A signal's own id is not a conversation id.
	if code := get(t, srv, "/api/conversations/"+charge.ID.String(), &e); code != http.StatusNotFound {
		t.Errorf("a child's id: status %d; want 404", code)
	}
}

func TestGetConversationIsBounded(t *testing.T) {
	t.Parallel()
	// A recorder that keeps more signals than one response lists.
	rec := conversation.NewRecorderWithLimits(conversation.Limits{SignalsPerConversation: dashboard.MaxNodes + 10})
	root := fanOutOneByOne(rec, dashboard.MaxNodes+5)
	srv := newServer(t, dashboard.Config{Recorder: rec})
	var body struct {
		Nodes      []node `json:"nodes"`
		TotalNodes int    `json:"total_nodes"`
		Truncated  bool   `json:"truncated"`
		Dropped    int    `json:"dropped"`
	}
	get(t, srv, "/api/conversations/"+root.Conversation.String(), &body)
	if len(body.Nodes) != dashboard.MaxNodes || body.TotalNodes != dashboard.MaxNodes+6 || !body.Truncated || body.Dropped != 0 {
		t.Errorf("%d nodes of %d, truncated %v, dropped %d; want %d of %d, truncated, none dropped", len(body.Nodes),
			body.TotalNodes, body.Truncated, body.Dropped, dashboard.MaxNodes, dashboard.MaxNodes+6)
	}
	if body.Nodes[0].ID != root.ID.String() {
		t.Errorf("first node %s; want the root, which was created first", body.Nodes[0].ID)
	}

	// A recorder that keeps fewer: the response says that it is not the
	// whole conversation.
	rec = conversation.NewRecorderWithLimits(conversation.Limits{SignalsPerConversation: 10})
	root = fanOutOneByOne(rec, 15)
	srv = newServer(t, dashboard.Config{Recorder: rec})
	get(t, srv, "/api/conversations/"+root.Conversation.String(), &body)
	if len(body.Nodes) != 10 || body.TotalNodes != 10 || !body.Truncated || body.Dropped != 6 {
		t.Errorf("%d nodes of %d, truncated %v, dropped %d; want 10 of 10, truncated, 6 dropped", len(body.Nodes),
			body.TotalNodes, body.Truncated, body.Dropped)
	}
}

// fanOutOneByOne records a root that emits n children, one event each.
func fanOutOneByOne(rec *conversation.Recorder, n int) baton.Signal {
	root := signal(baton.TokenID{}, baton.TokenID{}, "shop", "fan.out")
	rec.Observe(engine.Event{Kind: engine.EventRootIssued, Time: t0, Signal: root})
	for i := range n {
		child := signal(root.Conversation, root.ID, "d", "leaf")
		rec.Observe(engine.Event{Kind: engine.EventApplied, Time: t0.Add(time.Duration(i+1) * time.Microsecond), Signal: root,
			Children: []baton.Signal{child}})
	}
	return root
}

type tokensBody struct {
	Available    bool     `json:"available"`
	Buckets      []string `json:"buckets"`
	StuckAfterMS int64    `json:"stuck_after_ms"`
	Destinations []struct {
		Destination string `json:"destination"`
		Count       int    `json:"count"`
		Capped      bool   `json:"capped"`
		Ages        []int  `json:"ages"`
		OldestMS    int64  `json:"oldest_ms"`
		Stuck       int    `json:"stuck"`
		StuckAfter  int64  `json:"stuck_after_ms"`
		Error       string `json:"error"`
	} `json:"destinations"`
	Oldest []struct {
		ID          string `json:"id"`
		Destination string `json:"destination"`
		AgeMS       int64  `json:"age_ms"`
		Stuck       bool   `json:"stuck"`
	} `json:"oldest"`
	Parked []struct {
		ID           string `json:"id"`
		Conversation string `json:"conversation"`
		Type         string `json:"type"`
		Reason       string `json:"reason"`
	} `json:"parked"`
}

func issue(t *testing.T, s store.TokenStore, dest string, created time.Time) baton.Token {
	t.Helper()
	sig := signal(baton.TokenID{}, baton.TokenID{}, dest, "work")
	tok := sig.Token()
	tok.ID, tok.CreatedAt = baton.TokenID{}, created
	tok, err := s.Issue(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestTokensByDestinationAndAge(t *testing.T) {
	t.Parallel()
	now := t0.Add(time.Hour)
	tokens := memory.NewTokenStore()
	ages := map[string][]time.Duration{
		"billing":   {0, 500 * time.Millisecond, 5 * time.Second, 30 * time.Second},
		"warehouse": {2 * time.Minute, 20 * time.Minute, 3 * time.Hour},
	}
	for dest, list := range ages {
		for _, age := range list {
			issue(t, tokens, dest, now.Add(-age))
		}
	}
	issue(t, tokens, "elsewhere", now) // a destination not asked for
	rec := conversation.NewRecorder(0)
	_, charge, _ := story(rec, t0)
	srv := newServer(t, dashboard.Config{Recorder: rec, Tokens: tokens, Now: func() time.Time { return now },
		Destinations: func() []string { return []string{"warehouse", "billing", "billing", "empty"} }})

	var body tokensBody
	if code := get(t, srv, "/api/tokens", &body); code != http.StatusOK {
		t.Fatalf("status %d", code)
	}
	if !body.Available || strings.Join(body.Buckets, " ") != "<1s <10s <1m <10m older" || body.StuckAfterMS != 10_000 {
		t.Fatalf("available %v, buckets %v, stuck after %d", body.Available, body.Buckets, body.StuckAfterMS)
	}
	got := map[string]string{}
	for _, d := range body.Destinations {
		b, _ := json.Marshal(d.Ages)
		got[d.Destination] = string(b)
		if d.Capped || d.Error != "" {
			t.Errorf("%s: capped %v, error %q", d.Destination, d.Capped, d.Error)
		}
	}
	want := map[string]string{"billing": "[2,1,1,0,0]", "warehouse": "[0,0,0,1,2]", "empty": "[0,0,0,0,0]"}
	if len(got) != len(want) || len(body.Destinations) != 3 {
		t.Fatalf("destinations %v; want %v", got, want)
	}
	for d, w := range want {
		if got[d] != w {
			t.Errorf("%s ages %s; want %s", d, got[d], w)
		}
	}
	if body.Destinations[0].Destination != "billing" || body.Destinations[0].Count != 4 || body.Destinations[0].OldestMS != 30_000 {
		t.Errorf("first destination %+v; want billing with 4 tokens, oldest 30s", body.Destinations[0])
	}
	// Oldest first, across destinations; stuck from 10s on.
	if len(body.Oldest) != 7 || body.Oldest[0].AgeMS != (3*time.Hour).Milliseconds() || !body.Oldest[0].Stuck {
		t.Fatalf("oldest %+v", body.Oldest)
	}
	stuck := 0
	for _, o := range body.Oldest {
		if o.Stuck {
			stuck++
		}
	}
	if stuck != 4 {
		t.Errorf("%d stuck; want 4 (30s, 2m, 20m, 3h)", stuck)
	}
	if len(body.Parked) != 1 || body.Parked[0].ID != charge.ID.String() || body.Parked[0].Reason != "card declined" {
		t.Errorf("parked %+v; want the charge with its reason", body.Parked)
	}
	for _, d := range body.Destinations {
		if want := map[string]int{"billing": 1, "warehouse": 3}[d.Destination]; d.Stuck != want || d.StuckAfter != 10_000 {
			t.Errorf("%s: %d stuck after %dms; want %d after 10000ms", d.Destination, d.Stuck, d.StuckAfter, want)
		}
	}
}

// A destination's own threshold decides which of its tokens are stuck.
func TestStuckThresholdsPerDestination(t *testing.T) {
	t.Parallel()
	now := t0.Add(time.Hour)
	tokens := memory.NewTokenStore()
	issue(t, tokens, "billing", now.Add(-time.Minute))
	issue(t, tokens, "shipping", now.Add(-time.Minute))
	srv := newServer(t, dashboard.Config{Recorder: conversation.NewRecorder(0), Tokens: tokens, Now: func() time.Time { return now },
		Destinations: func() []string { return []string{"billing", "shipping"} }, StuckAfter: 10 * time.Second,
		StuckAfterByDestination: map[string]time.Duration{"shipping": 24 * time.Hour}})
	var body tokensBody
	if code := get(t, srv, "/api/tokens", &body); code != http.StatusOK {
		t.Fatalf("status %d", code)
	}
	got := map[string]string{}
	for _, d := range body.Destinations {
		got[d.Destination] = fmt.Sprintf("%d after %dms", d.Stuck, d.StuckAfter)
	}
	if got["billing"] != "1 after 10000ms" || got["shipping"] != "0 after 86400000ms" {
		t.Errorf("stuck by destination %v; want billing 1 after 10s, shipping 0 after 24h", got)
	}
	for _, o := range body.Oldest {
		if o.Stuck != (o.Destination == "billing") {
			t.Errorf("oldest %+v: stuck %v", o, o.Stuck)
		}
	}
}

func TestTokensPagesAndCaps(t *testing.T) {
	t.Parallel()
	tokens := memory.NewTokenStore()
	n := 2*store.MaxPageLimit + 150 // three pages
	for range n {
		issue(t, tokens, "busy", t0)
	}
	for _, tc := range []struct {
		max    int
		count  int
		capped bool
	}{{0, n, false}, {n, n, false}, {n - 1, n - 1, true}, {store.MaxPageLimit, store.MaxPageLimit, true}, {7, 7, true}} {
		srv := newServer(t, dashboard.Config{Recorder: conversation.NewRecorder(0), Tokens: tokens, MaxTokensPerDestination: tc.max, // tokens are a minute old
			Destinations: func() []string { return []string{"busy"} }})
		var body tokensBody
		get(t, srv, "/api/tokens", &body)
		if d := body.Destinations[0]; d.Count != tc.count || d.Capped != tc.capped || d.Ages[3] != tc.count {
			t.Errorf("max %d: count %d capped %v ages %v; want %d, %v", tc.max, d.Count, d.Capped, d.Ages, tc.count, tc.capped)
		}
		if want := min(tc.count, dashboard.MaxOldest); len(body.Oldest) != want {
			t.Errorf("max %d: %d oldest listed; want %d", tc.max, len(body.Oldest), want)
		}
	}
}

func TestTokensDestinationsDefaultToTheRecorded(t *testing.T) {
	t.Parallel()
	tokens := memory.NewTokenStore()
	rec := conversation.NewRecorder(0)
	story(rec, t0)
	issue(t, tokens, "warehouse", t0)
	issue(t, tokens, "unseen", t0)
	srv := newServer(t, dashboard.Config{Recorder: rec, Tokens: tokens})
	var body tokensBody
	get(t, srv, "/api/tokens", &body)
	var names []string
	for _, d := range body.Destinations {
		names = append(names, d.Destination)
	}
	if strings.Join(names, ",") != "billing,shop,warehouse" {
		t.Errorf("destinations %v; want those of the recorded signals", names)
	}
}

func TestTokensWithoutAStore(t *testing.T) {
	t.Parallel()
	rec := conversation.NewRecorder(0)
	story(rec, t0)
	srv := newServer(t, dashboard.Config{Recorder: rec})
	var body tokensBody
	if code := get(t, srv, "/api/tokens", &body); code != http.StatusOK {
		t.Fatalf("status %d", code)
	}
	if body.Available || len(body.Destinations) != 0 || len(body.Oldest) != 0 || len(body.Parked) != 1 {
		t.Errorf("got %+v; want unavailable, no tokens, the parked signal", body)
	}
}

// failingStore fails every listing, to show that an error stays with its
// destination.
type failingStore struct {
	store.TokenStore
	calls atomic.Int64
}

var errDown = errors.New("store is down")

func (f *failingStore) ListByDestination(ctx context.Context, dest string, p store.Page) ([]baton.Token, error) {
	f.calls.Add(1)
	if dest == "broken" {
		return nil, errDown
	}
	return f.TokenStore.ListByDestination(ctx, dest, p)
}

func TestTokensReportStoreErrorsAndReuseReadings(t *testing.T) {
	t.Parallel()
	fs := &failingStore{TokenStore: memory.NewTokenStore()}
	issue(t, fs, "fine", t0)
	var now atomic.Int64
	now.Store(t0.UnixNano())
	srv := newServer(t, dashboard.Config{Recorder: conversation.NewRecorder(0), Tokens: fs,
		Now:          func() time.Time { return time.Unix(0, now.Load()) },
		Destinations: func() []string { return []string{"broken", "fine"} }})
	var body tokensBody
	if code := get(t, srv, "/api/tokens", &body); code != http.StatusOK {
		t.Fatalf("status %d", code)
	}
	if body.Destinations[0].Error == "" || !strings.Contains(body.Destinations[0].Error, errDown.Error()) || body.Destinations[1].Count != 1 {
		t.Errorf("destinations %+v; want the error on broken and 1 token on fine", body.Destinations)
	}
	calls := fs.calls.Load()
	get(t, srv, "/api/tokens", &body)
	if fs.calls.Load() != calls {
		t.Errorf("a second request within TokenRefresh read the store again")
	}
	now.Add(int64(2 * time.Second))
	get(t, srv, "/api/tokens", &body)
	if fs.calls.Load() == calls {
		t.Errorf("a request after TokenRefresh reused the old reading")
	}
}

// slowStore blocks listings while blocked is set.
type slowStore struct {
	store.TokenStore
	listings atomic.Int64
	blocked  atomic.Bool
	release  chan struct{}
}

func (s *slowStore) ListByDestination(ctx context.Context, dest string, p store.Page) ([]baton.Token, error) {
	s.listings.Add(1)
	if s.blocked.Load() {
		<-s.release
	}
	return s.TokenStore.ListByDestination(ctx, dest, p)
}

// While one request lists the store, the other viewers get the last
// reading at once instead of queueing behind it, and no second listing
// starts.
func TestTokensRefreshDoesNotHoldUpViewers(t *testing.T) {
	t.Parallel()
	slow := &slowStore{TokenStore: memory.NewTokenStore(), release: make(chan struct{})}
	issue(t, slow, "billing", t0)
	var now atomic.Int64
	now.Store(t0.UnixNano())
	srv := newServer(t, dashboard.Config{Recorder: conversation.NewRecorder(0), Tokens: slow,
		Now:          func() time.Time { return time.Unix(0, now.Load()) },
		Destinations: func() []string { return []string{"billing"} }})
	var body tokensBody
	get(t, srv, "/api/tokens", &body)
	listings := slow.listings.Load()

	now.Add(int64(time.Minute))
	var release sync.Once
	unblock := func() { release.Do(func() { close(slow.release) }) }
	t.Cleanup(unblock) // before the server's cleanup, which waits for requests
	slow.blocked.Store(true)
	refreshed := make(chan struct{})
	go func() {
		defer close(refreshed)
		res, err := srv.Client().Get(srv.URL + "/api/tokens")
		if err == nil {
			res.Body.Close()
		}
	}()
	for slow.listings.Load() == listings {
		time.Sleep(time.Millisecond)
	}
	answered := make(chan int, 3)
	for range 3 {
		go func() {
			res, err := srv.Client().Get(srv.URL + "/api/tokens")
			if err != nil {
				answered <- 0
				return
			}
			res.Body.Close()
			answered <- res.StatusCode
		}()
	}
	for range 3 {
		select {
		case code := <-answered:
			if code != http.StatusOK {
				t.Errorf("status %d during a refresh", code)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a viewer waited for another viewer's listing of the store")
		}
	}
	unblock()
	<-refreshed
	if n := slow.listings.Load() - listings; n != 1 {
		t.Errorf("%d listings for four requests, want 1", n)
	}
}

func TestStats(t *testing.T) {
	t.Parallel()
	rec := conversation.NewRecorder(0)
	story(rec, t0)
	story(rec, t0.Add(time.Second))
	var transitions atomic.Int64
	srv := newServer(t, dashboard.Config{Recorder: rec, Stats: func() map[string]int64 {
		return map[string]int64{dashboard.CounterTransitions: transitions.Add(1), dashboard.CounterOutboxAge: 1500}
	}})
	var body struct {
		Counters      map[string]int64 `json:"counters"`
		Conversations struct {
			Recorded, Signals, InFlight, Parked, Duplicates int
		} `json:"conversations"`
	}
	if code := get(t, srv, "/api/stats", &body); code != http.StatusOK {
		t.Fatalf("status %d", code)
	}
	if body.Counters["transitions"] != 1 || body.Counters["outbox.oldest_age_ms"] != 1500 || len(body.Counters) != 2 {
		t.Errorf("counters %v", body.Counters)
	}
	get(t, srv, "/api/stats", &body)
	if body.Counters["transitions"] != 2 {
		t.Errorf("counters not read afresh: %v", body.Counters)
	}
	c := body.Conversations
	if c.Recorded != 2 || c.Signals != 6 || c.Parked != 2 || c.Duplicates != 2 {
		t.Errorf("totals %+v", c)
	}

	srv = newServer(t, dashboard.Config{Recorder: conversation.NewRecorder(0)})
	var empty struct {
		Counters map[string]int64 `json:"counters"`
	}
	if code := get(t, srv, "/api/stats", &empty); code != http.StatusOK || empty.Counters == nil || len(empty.Counters) != 0 {
		t.Errorf("without Stats: status %d, counters %v; want an empty object", code, empty.Counters)
	}
}

func TestStatsAreBounded(t *testing.T) {
	t.Parallel()
	many := map[string]int64{}
	for i := range dashboard.MaxCounters + 10 {
		many[strings.Repeat("c", i+1)] = int64(i)
	}
	srv := newServer(t, dashboard.Config{Recorder: conversation.NewRecorder(0), Stats: func() map[string]int64 { return many }})
	var body struct {
		Counters  map[string]int64 `json:"counters"`
		Truncated bool             `json:"truncated"`
	}
	get(t, srv, "/api/stats", &body)
	if len(body.Counters) != dashboard.MaxCounters || !body.Truncated {
		t.Errorf("%d counters, truncated %v", len(body.Counters), body.Truncated)
	}
}

func TestReport(t *testing.T) {
	t.Parallel()
	var e struct{ Error string }
	srv := newServer(t, dashboard.Config{Recorder: conversation.NewRecorder(0)})
	if code := get(t, srv, "/api/report", &e); code != http.StatusNotFound || e.Error == "" {
		t.Errorf("no report: status %d; want 404", code)
	}

	type verdict struct {
		OK       bool     `json:"ok"`
		Failures []string `json:"failures"`
	}
	srv = newServer(t, dashboard.Config{Recorder: conversation.NewRecorder(0), Report: func() any {
		return verdict{OK: true, Failures: []string{}}
	}})
	var body struct {
		Report verdict `json:"report"`
	}
	if code := get(t, srv, "/api/report", &body); code != http.StatusOK || !body.Report.OK {
		t.Errorf("report: status %d, %+v", code, body)
	}

	srv = newServer(t, dashboard.Config{Recorder: conversation.NewRecorder(0), Report: func() any {
		return strings.Repeat("x", dashboard.MaxReportBytes)
	}})
	if code := get(t, srv, "/api/report", &e); code != http.StatusInternalServerError || !strings.Contains(e.Error, "exceeds") {
		t.Errorf("huge report: status %d, %q; want 500", code, e.Error)
	}
	srv = newServer(t, dashboard.Config{Recorder: conversation.NewRecorder(0), Report: func() any { return func() {} }})
	if code := get(t, srv, "/api/report", &e); code != http.StatusInternalServerError {
		t.Errorf("unencodable report: status %d; want 500", code)
	}
}

func TestUnknownAPIAndMethods(t *testing.T) {
	t.Parallel()
	srv := newServer(t, dashboard.Config{Recorder: conversation.NewRecorder(0)})
	var e struct{ Error string }
	if code := get(t, srv, "/api/nope", &e); code != http.StatusNotFound || e.Error == "" {
		t.Errorf("unknown endpoint: status %d", code)
	}
	res, err := srv.Client().Post(srv.URL+"/api/stats", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /api/stats: status %d; want 405", res.StatusCode)
	}
}

// externalURL finds any absolute or protocol-relative URL; the page must
// not load anything from elsewhere.
var externalURL = regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}`)

func TestPageIsSelfContained(t *testing.T) {
	t.Parallel()
	srv := newServer(t, dashboard.Config{Recorder: conversation.NewRecorder(0)})
	for path, wantType := range map[string]string{
		"/":          "text/html; charset=utf-8",
		"/app.js":    "text/javascript; charset=utf-8",
		"/style.css": "text/css; charset=utf-8",
	} {
		res, err := srv.Client().Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != wantType || len(body) == 0 {
			t.Errorf("GET %s: status %d, type %q, %d bytes", path, res.StatusCode, res.Header.Get("Content-Type"), len(body))
		}
		if csp := res.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
			t.Errorf("GET %s: Content-Security-Policy %q", path, csp)
		}
		// The SVG namespace is a name, not a fetched resource.
		text := strings.ReplaceAll(string(body), "http://www.w3.org/2000/svg", "")
		if m := externalURL.FindString(text); m != "" {
			t.Errorf("GET %s refers to %q; the page must work offline", path, m)
		}
	}
	res, err := srv.Client().Get(srv.URL + "/missing.js")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNotFound {
		t.Errorf("GET /missing.js: status %d", res.StatusCode)
	}
}

func TestMountedUnderAPrefix(t *testing.T) {
	t.Parallel()
	h, err := dashboard.New(dashboard.Config{Recorder: conversation.NewRecorder(0)})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/dashboard/", http.StripPrefix("/dashboard", h))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	for _, path := range []string{"/dashboard/", "/dashboard/app.js", "/dashboard/api/stats"} {
		res, err := srv.Client().Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Errorf("GET %s: status %d", path, res.StatusCode)
		}
	}
}

func TestEngineStatsSumsEngines(t *testing.T) {
	t.Parallel()
	tokens := memory.NewTokenStore()
	newEngine := func(dest string) *engine.Engine {
		e, err := engine.New(engine.Config{Destination: dest, Tokens: tokens, Entities: memory.NewEntityStore(),
			Dispatch: engine.Routes{"": publisherFunc(func(context.Context, baton.Signal) error { return nil })}})
		if err != nil {
			t.Fatal(err)
		}
		if err := engine.Register(e, engine.Activity[struct{}]{Type: "work",
			Entity: func(s baton.Signal) (string, error) { return s.ID.String(), nil },
			Handle: func(context.Context, baton.Signal, *struct{}) (engine.Effects, error) { return engine.Effects{}, nil }}); err != nil {
			t.Fatal(err)
		}
		return e
	}
	a, b := newEngine("a"), newEngine("b")
	ctx := t.Context()
	for _, e := range []*engine.Engine{a, b, b} {
		sig, err := e.IssueRoot(ctx, baton.Emit{Destination: e.Destination(), Type: "work"}, 0)
		if err != nil {
			t.Fatal(err)
		}
		for range 2 { // the second is a duplicate
			if _, err := e.Process(ctx, sig); err != nil {
				t.Fatal(err)
			}
		}
	}
	got := dashboard.EngineStats(a, b)()
	want := map[string]int64{"transitions": 3, "duplicates.dropped": 3, "activities.applied": 3, "roots.issued": 3, "signals.parked": 0}
	for name, w := range want {
		if got[name] != w {
			t.Errorf("%s = %d; want %d (all: %v)", name, got[name], w, got)
		}
	}
	if fields := reflect.TypeFor[engine.Stats]().NumField(); len(got) != fields {
		t.Errorf("%d counters; want one per engine.Stats field (%d)", len(got), fields)
	}
}

type publisherFunc func(context.Context, baton.Signal) error

func (f publisherFunc) Publish(ctx context.Context, s baton.Signal) error { return f(ctx, s) }

func TestLongReasonsAreClipped(t *testing.T) {
	t.Parallel()
	rec := conversation.NewRecorder(0)
	root := signal(baton.TokenID{}, baton.TokenID{}, "shop", "order.place")
	rec.Observe(engine.Event{Kind: engine.EventRootIssued, Time: t0, Signal: root})
	rec.Observe(engine.Event{Kind: engine.EventParked, Time: t0, Signal: root, Reason: strings.Repeat("é", 5000)})
	srv := newServer(t, dashboard.Config{Recorder: rec})
	var conv struct{ Nodes []node }
	get(t, srv, "/api/conversations/"+root.Conversation.String(), &conv)
	var toks tokensBody
	get(t, srv, "/api/tokens", &toks)
	for _, reason := range []string{conv.Nodes[0].Reason, toks.Parked[0].Reason} {
		if len(reason) > 600 || !strings.HasPrefix(reason, "éé") || !strings.HasSuffix(reason, "…") {
			t.Errorf("reason of %d bytes: %.20q…; want it clipped to about 500", len(reason), reason)
		}
	}
}
