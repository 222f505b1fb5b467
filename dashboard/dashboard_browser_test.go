package dashboard_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/backend/memory"
	"github.com/batonhq/baton/conversation"
	"github.com/batonhq/baton/dashboard"
	"github.com/batonhq/baton/engine"
	"github.com/batonhq/baton/internal/testenv"
	memtransport "github.com/batonhq/baton/transport/memory"
)

const chromiumPath = "/usr/bin/chromium"

var httpClient = &http.Client{Timeout: 5 * time.Second}

// shopRun runs a small process on real engines over an in-memory broker:
// shop places orders, billing charges them (and declines "decline"), and
// warehouse, which has no engine running, never takes its reserve signals,
// so one signal of every conversation stays in flight.
type shopRun struct {
	rec            *conversation.Recorder
	tokens         *memory.TokenStore
	shop, billing  *engine.Engine
	broker         *memtransport.Transport
	ok, dup, parks baton.Signal // roots of an order that went through (and got a duplicate), another, and a declined one
	// cardsFixed makes billing charge "decline" too: the handler bug fixed,
	// so that a replayed signal goes through.
	cardsFixed atomic.Bool
	place      func(payload string) baton.Signal
}

type order struct{ Step string }

func startShop(t *testing.T) *shopRun {
	t.Helper()
	r := &shopRun{rec: conversation.NewRecorder(0), tokens: memory.NewTokenStore()}
	broker := memtransport.New(memtransport.Config{})
	r.broker = broker
	newEngine := func(dest string) *engine.Engine {
		e, err := engine.New(engine.Config{Destination: dest, Tokens: r.tokens, Entities: memory.NewEntityStore(),
			Dispatch: broker, Source: broker, OnEvent: r.rec.Observe, Workers: 2})
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	r.shop, r.billing = newEngine("shop"), newEngine("billing")
	byConversation := func(s baton.Signal) (string, error) { return "order-" + s.Conversation.String(), nil }
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(engine.Register(r.shop, engine.Activity[order]{Type: "order.place", Entity: byConversation,
		Handle: func(_ context.Context, sig baton.Signal, o *order) (engine.Effects, error) {
			o.Step = "placed"
			return engine.Effects{Emit: []baton.Emit{
				{Destination: "billing", Type: "charge", Payload: sig.Payload},
				{Destination: "warehouse", Type: "reserve"},
			}}, nil
		}}))
	must(engine.Register(r.shop, engine.Activity[order]{Type: "charged", Entity: byConversation,
		Handle: func(_ context.Context, _ baton.Signal, o *order) (engine.Effects, error) {
			o.Step = "paid"
			return engine.Effects{}, nil
		}}))
	must(engine.Register(r.billing, engine.Activity[order]{Type: "charge", Entity: byConversation,
		Handle: func(_ context.Context, sig baton.Signal, o *order) (engine.Effects, error) {
			if string(sig.Payload) == "decline" && !r.cardsFixed.Load() {
				return engine.Effects{}, engine.Permanent(errors.New("card declined"))
			}
			o.Step = "charged"
			return engine.Effects{Emit: []baton.Emit{{Destination: "shop", Type: "charged"}}}, nil
		}}))

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, e := range []*engine.Engine{r.shop, r.billing} {
		wg.Go(func() {
			if err := e.Run(ctx); err != nil {
				t.Errorf("%s: run: %v", e.Destination(), err)
			}
		})
	}
	t.Cleanup(func() { cancel(); wg.Wait() })

	r.place = func(payload string) baton.Signal {
		sig, err := r.shop.IssueRoot(ctx, baton.Emit{Destination: "shop", Type: "order.place", Payload: []byte(payload)}, 0)
		must(err)
		must(broker.Publish(ctx, sig))
		return sig
	}
	r.ok, r.dup, r.parks = r.place("ok"), r.place("ok too"), r.place("decline")
	stats := dashboard.EngineStats(r.shop, r.billing)
	waitFor(t, "the orders to settle", func() bool {
		s := stats()
		// 3 transitions for each order that went through, 1 for the declined.
		return s[dashboard.CounterTransitions] == 7 && s[dashboard.CounterParked] == 1
	})
	// A copy of a finished root arrives late: it is dropped as a duplicate.
	must(broker.Publish(ctx, r.dup))
	waitFor(t, "the duplicate to be dropped", func() bool { return stats()[dashboard.CounterDuplicates] == 1 })
	return r
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// liveTokensMatchRecorder is the report this test serves: every live token
// is a signal the recorder shows in flight or parked, and the other way
// round.
func liveTokensMatchRecorder(r *shopRun) func() any {
	return func() any {
		ctx := context.Background()
		mismatches := []string{}
		live := 0
		for _, s := range r.rec.List(0) {
			c, _ := r.rec.Get(s.ID)
			for _, n := range c.Nodes {
				_, err := r.tokens.Get(ctx, n.ID)
				hasToken := err == nil
				if hasToken {
					live++
				}
				wantToken := n.State == conversation.InFlight || n.State == conversation.Parked
				if hasToken != wantToken {
					mismatches = append(mismatches, fmt.Sprintf("%s @%s is %s but its token live=%v", n.Type, n.Destination, n.State, hasToken))
				}
			}
		}
		if live != r.tokens.Len() {
			mismatches = append(mismatches, fmt.Sprintf("%d live tokens in the store, %d of recorded signals", r.tokens.Len(), live))
		}
		return map[string]any{"ok": len(mismatches) == 0, "live_tokens": r.tokens.Len(), "mismatches": mismatches}
	}
}

// TestDashboardInBrowser drives the dashboard in headless Chromium: the page
// loads, the graph renders, and the numbers shown equal the API's. The
// README's screenshot comes from it:
//
//	BATON_SCREENSHOT=$PWD/docs/dashboard.png go test -run Browser ./dashboard
func TestDashboardInBrowser(t *testing.T) {
	t.Parallel()
	needChromium(t)
	run := startShop(t)
	h, err := dashboard.New(dashboard.Config{
		Recorder: run.rec,
		Tokens:   run.tokens,
		Stats:    dashboard.EngineStats(run.shop, run.billing),
		Report:   liveTokensMatchRecorder(run),
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)

	ctx, console := startChromium(t, 20*time.Second)

	poll := func(what, expr string) {
		t.Helper()
		if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(8*time.Second),
			chromedp.WithPollingInterval(50*time.Millisecond))); err != nil {
			t.Fatalf("waiting for %s (%s): %v", what, expr, err)
		}
	}
	count := func(selector string) int {
		t.Helper()
		n, err := chromedp.Run(ctx, chromedp.Evaluate[int](fmt.Sprintf("document.querySelectorAll(%q).length", selector)))
		if err != nil {
			t.Fatalf("count %s: %v", selector, err)
		}
		return n
	}
	text := func(selector string) string {
		t.Helper()
		// One evaluation: the page replaces rows every second, so a node
		// found by one call may be gone by the next.
		s, err := chromedp.Run(ctx, chromedp.Evaluate[string](fmt.Sprintf("(document.querySelector(%q) || {}).textContent ?? null", selector)))
		if err != nil {
			t.Fatalf("text of %s: %v", selector, err)
		}
		return strings.TrimSpace(s)
	}

	if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL+"/")); err != nil {
		t.Fatalf("load the page: %v", err)
	}
	title, err := chromedp.Run(ctx, chromedp.Title())
	if err != nil || !strings.Contains(title, "baton") {
		t.Fatalf("title %q, %v", title, err)
	}
	poll("the first refresh", `document.body.dataset.ready === "true"`)

	// The conversations list.
	if n := count("#conversations li[data-id]"); n != 3 {
		t.Errorf("the list shows %d conversations; want 3", n)
	}
	if got := text("#conversations-count"); got != "3" {
		t.Errorf("conversation count %q; want 3", got)
	}

	// The declined order: three signals, the charge parked.
	graphOf := func(root baton.Signal) string {
		return fmt.Sprintf(`svg#graph[data-conversation="%s"]`, root.Conversation)
	}
	clickNow(t, ctx, "the declined order", fmt.Sprintf(`#conversations li[data-id="%s"]`, run.parks.Conversation))
	poll("the declined order's graph", fmt.Sprintf(`document.querySelectorAll('%s g.node').length === 3`, graphOf(run.parks)))
	if n := count(graphOf(run.parks) + ` g.node[data-state="parked"][data-type="charge"]`); n != 1 {
		t.Errorf("declined order: %d parked charge nodes; want 1", n)
	}

	// The order with the duplicate: four signals, reserve in flight.
	clickNow(t, ctx, "the order", fmt.Sprintf(`#conversations li[data-id="%s"]`, run.dup.Conversation))
	g := graphOf(run.dup)
	poll("the order's graph", fmt.Sprintf(`document.querySelectorAll('%s g.node').length === 4`, g))
	if n := count(g + ` path.edge`); n != 3 {
		t.Errorf("%d edges; want 3", n)
	}
	if n := count(g + ` g.node[data-state="in_flight"]`); n != 1 {
		t.Errorf("%d in-flight nodes; want 1", n)
	}
	if n := count(g + ` g.node[data-state="in_flight"][data-type="reserve"][data-destination="warehouse"]`); n != 1 {
		t.Errorf("the in-flight node is not reserve @warehouse")
	}
	if n := count(g + ` g.node[data-state="done"]`); n != 3 {
		t.Errorf("%d done nodes; want 3", n)
	}
	label, err := chromedp.Run(ctx, chromedp.Evaluate[string](
		`document.querySelector('svg#graph g.node[data-state="in_flight"] text.label').textContent`))
	if err != nil || label != "reserve @warehouse" {
		t.Errorf("in-flight node label %q (%v); want %q", label, err, "reserve @warehouse")
	}

	// Counters: what the page shows equals what the API says.
	var stats struct {
		Counters      map[string]int64 `json:"counters"`
		Conversations struct {
			InFlight int64 `json:"in_flight"`
		} `json:"conversations"`
	}
	getJSON(t, srv.URL+"/api/stats", &stats)
	if stats.Counters[dashboard.CounterTransitions] != 7 || stats.Counters[dashboard.CounterDuplicates] != 1 || stats.Counters[dashboard.CounterParked] != 1 {
		t.Errorf("API counters %v; want 7 transitions, 1 duplicate, 1 parked", stats.Counters)
	}
	for id, want := range map[string]int64{
		"#stat-transitions": stats.Counters[dashboard.CounterTransitions],
		"#stat-duplicates":  stats.Counters[dashboard.CounterDuplicates],
		"#stat-parked":      stats.Counters[dashboard.CounterParked],
		"#stat-in-flight":   stats.Conversations.InFlight,
	} {
		shown := text(id)
		if got, err := strconv.ParseInt(strings.ReplaceAll(shown, ",", ""), 10, 64); err != nil || got != want {
			t.Errorf("%s shows %q; the API says %d", id, shown, want)
		}
	}
	if shown := text("#stat-outbox-age"); shown != "—" {
		t.Errorf("#stat-outbox-age shows %q without an outbox counter; want —", shown)
	}
	for name, v := range stats.Counters {
		sel := fmt.Sprintf(`#counters tr[data-counter="%s"] td.num`, name)
		if shown := text(sel); strings.ReplaceAll(shown, ",", "") != strconv.FormatInt(v, 10) {
			t.Errorf("counter %s shows %q; the API says %d", name, shown, v)
		}
	}

	// Live tokens by destination: the three reserves and the parked charge.
	var tokens struct {
		Destinations []struct {
			Destination string `json:"destination"`
			Count       int    `json:"count"`
			Stuck       int    `json:"stuck"`
		} `json:"destinations"`
	}
	getJSON(t, srv.URL+"/api/tokens", &tokens)
	want := map[string]int{"billing": 1, "shop": 0, "warehouse": 3}
	if len(tokens.Destinations) != len(want) {
		t.Errorf("API destinations %+v; want %v", tokens.Destinations, want)
	}
	for _, d := range tokens.Destinations {
		if d.Count != want[d.Destination] {
			t.Errorf("API: %d live tokens at %s; want %d", d.Count, d.Destination, want[d.Destination])
		}
		if shown := text(fmt.Sprintf(`#tokens tr[data-destination="%s"] td.count`, d.Destination)); shown != strconv.Itoa(d.Count) {
			t.Errorf("page: %q live tokens at %s; the API says %d", shown, d.Destination, d.Count)
		}
		if shown := text(fmt.Sprintf(`#tokens tr[data-destination="%s"] td.stuck`, d.Destination)); shown != strconv.Itoa(d.Stuck) {
			t.Errorf("page: %q stuck tokens at %s; the API says %d", shown, d.Destination, d.Stuck)
		}
	}
	if got := text("#stat-live-tokens"); got != "4" {
		t.Errorf("live tokens card %q; want 4", got)
	}
	if n := count(`#stuck li[data-id]`); n != 4 {
		t.Errorf("%d oldest live tokens listed; want 4", n)
	}
	if n := count(fmt.Sprintf(`#parked li[data-conversation="%s"]`, run.parks.Conversation)); n != 1 || !strings.Contains(text("#parked li .why"), "card declined") {
		t.Errorf("parked list: %d entries for the declined order, reason %q", n, text("#parked li .why"))
	}
	poll("the report panel", `!document.getElementById('report-panel').hidden && document.getElementById('report-verdict').textContent === 'PASS'`)

	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if len(shot) < 8 || string(shot[1:4]) != "PNG" {
		t.Fatalf("screenshot is not a PNG (%d bytes)", len(shot))
	}
	if path := os.Getenv("BATON_SCREENSHOT"); path != "" {
		if err := os.WriteFile(path, shot, 0o644); err != nil {
			t.Fatalf("write screenshot: %v", err)
		}
		t.Logf("screenshot written to %s (%d bytes)", path, len(shot))
	}
	// At 1440 px a conversation wider than the panel is drawn smaller, so
	// that all of it shows; one far wider is drawn at the smallest scale
	// and scrolls.
	for _, c := range []struct {
		signals int
		fits    bool
	}{{4, true}, {8, true}, {40, false}} {
		root := chain(run.rec, c.signals)
		if err := chromedp.Do(ctx, chromedp.Navigate(fmt.Sprintf("%s/#%s", srv.URL, root.Conversation))); err != nil {
			t.Fatalf("load the page: %v", err)
		}
		poll(fmt.Sprintf("the graph of %d signals", c.signals), fmt.Sprintf(`document.querySelectorAll('%s g.node').length === %d`, graphOf(root), c.signals))
		fit, err := chromedp.Run(ctx, chromedp.Evaluate[struct {
			Scale  float64 `json:"scale"`
			Scroll int     `json:"scroll"`
			Room   int     `json:"room"`
		}](`(() => { const g = document.getElementById('graph'); const w = g.parentElement;
			return {scale: Number(g.dataset.scale), scroll: w.scrollWidth, room: w.clientWidth}; })()`))
		switch {
		case err != nil:
			t.Fatalf("measure the graph: %v", err)
		case c.fits && fit.Scroll > fit.Room+1:
			t.Errorf("a conversation of %d signals is cut off at 1440 px: %d px drawn in %d (scale %.2f)", c.signals, fit.Scroll, fit.Room, fit.Scale)
		case !c.fits && (fit.Scale != 0.5 || fit.Scroll <= fit.Room):
			t.Errorf("a conversation of %d signals: scale %.2f, %d px in %d; want the smallest scale, scrolling", c.signals, fit.Scale, fit.Scroll, fit.Room)
		}
	}
	for _, m := range console.stop() {
		t.Errorf("browser console: %s", m)
	}
}

// chain records a conversation of n signals, each emitted by the one
// before, as a token service sees it, and returns its root.
func chain(rec *conversation.Recorder, n int) baton.Signal {
	at := time.Now()
	root := baton.Signal{ID: baton.NewTokenID(), Destination: "shop", Type: "order.place"}
	root.Conversation = root.ID
	rec.Observe(engine.Event{Kind: engine.EventRootIssued, Time: at, Signal: root})
	parent := root
	for i := 1; i < n; i++ {
		child := baton.Signal{ID: baton.NewTokenID(), Conversation: root.ID, Causation: parent.ID,
			Destination: "warehouse", Type: fmt.Sprintf("step.%d", i)}
		rec.Observe(engine.Event{Kind: engine.EventTransitioned, Time: at, Signal: baton.Signal{ID: parent.ID},
			Children: []baton.Signal{child}})
		parent = child
	}
	return root
}

// consoleWatch collects the page's uncaught exceptions and console errors
// and warnings (the page warns when a refresh fails).
type consoleWatch struct {
	mu     sync.Mutex
	msgs   []string
	cancel context.CancelFunc
	done   chan struct{}
}

func watchConsole(ctx context.Context) *consoleWatch {
	ctx, cancel := context.WithCancel(ctx)
	w := &consoleWatch{cancel: cancel, done: make(chan struct{})}
	messages := chromedp.Console(ctx)
	go func() {
		defer close(w.done)
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.IsException() || m.Type == chromedp.ConsoleError || m.Type == chromedp.ConsoleWarning {
				w.mu.Lock()
				w.msgs = append(w.msgs, m.String())
				w.mu.Unlock()
			}
		}
	}()
	return w
}

func (w *consoleWatch) stop() []string {
	w.cancel()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.msgs
}

func getJSON(t *testing.T, url string, out any) {
	t.Helper()
	res, err := httpClient.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if err := json.NewDecoder(res.Body).Decode(out); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}

// needChromium skips the test without Debian's chromium, and fails it
// under CI=true, where .ci/setup-chromium installs it.
func needChromium(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		if testenv.CI() {
			t.Fatalf("%s is missing under CI=true: .ci/setup-chromium must install it (%v)", chromiumPath, err)
		}
		t.Skipf("SKIPPED: %s not found; run .ci/setup-chromium to install Debian's chromium and run the dashboard's browser test", chromiumPath)
	}
}

// startChromium starts a headless Chromium for t and returns a context
// whose actions run in it, limited to timeout, and its console.
func startChromium(t *testing.T, timeout time.Duration) (context.Context, *consoleWatch) {
	t.Helper()
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1440, 900),
	)
	t.Cleanup(cancelAlloc)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(cancel)
	// The first run starts the browser; it must not carry a timeout.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	console := watchConsole(ctx)
	ctx, cancelRun := context.WithTimeout(ctx, timeout)
	t.Cleanup(cancelRun)

	return ctx, console
}

// clickNow clicks the element selector finds, in one evaluation: the page
// rebuilds some lists as it polls, and a node found by one call of
// chromedp's may be gone by its next.
func clickNow(t *testing.T, ctx context.Context, what, selector string) {
	t.Helper()
	found, err := chromedp.Run(ctx, chromedp.Evaluate[bool](fmt.Sprintf("(() => { const e = document.querySelector(%q); if (e) e.click(); return !!e; })()", selector)))
	if err != nil || !found {
		t.Fatalf("click %s (%s): found %v, %v", what, selector, found, err)
	}
}
