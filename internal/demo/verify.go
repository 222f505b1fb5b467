package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"time"

	"github.com/batonhq/baton/backend/embedded"
)

// Report is the demo's verification report.
type Report struct {
	OK         bool     `json:"ok"`
	Violations []string `json:"violations"`
	// Running says the run is not over: the counts so far come from the
	// systems' counters, and nothing was verified yet.
	Running bool `json:"running,omitempty"`

	Orders  int `json:"orders"`  // requested
	Placed  int `json:"placed"`  // orders the shop recorded
	Charged int `json:"charged"` // orders billing charged
	Shipped int `json:"shipped"` // orders the warehouse shipped

	DoubleCharges int `json:"double_charges"`
	LostOrders    int `json:"lost_orders"`
	Activities    int `json:"activities"` // activities applied, from the systems' own records

	DoubleClicks       int64 `json:"double_clicks"`
	DuplicatesInjected int64 `json:"duplicates_injected"`
	LostResponses      int64 `json:"lost_responses"`
	DuplicatesDropped  int64 `json:"duplicates_dropped"`
	CopiesCompleted    int64 `json:"copies_completed"` // copies that found the step done and finished it
	Crashes            int64 `json:"crashes"`
	SweptEntries       int64 `json:"swept_entries"`
	// Batched are activities committed with others that arrived together
	// (engine.Config.Batch).
	Batched int64 `json:"batched"`

	TracedConversations int `json:"traced_conversations"` // each one trace across the systems

	PeakLiveTokens int64 `json:"peak_live_tokens"`
	ClassicRows    int   `json:"classic_rows"` // rows a processed-message table would hold
	LiveTokensEnd  int   `json:"live_tokens_at_end"`
	// UnusedFormTokens are roots of forms that reached no person (the shop
	// was killed while rendering them): never sent, they expire unused.
	UnusedFormTokens int `json:"unused_form_tokens"`
	OutboxEnd        int `json:"outbox_entries_at_end"`

	// EarlierOrders are orders of earlier runs over the same --data
	// directory that this run's systems also hold: checked for steps
	// applied twice, not counted above.
	EarlierOrders int `json:"earlier_orders"`
	// Interrupted says the run was stopped (Ctrl-C, SIGTERM) before its
	// orders finished: only steps applied twice are violations then.
	// DataDir is where the unfinished work stays ("" for a temporary
	// directory, removed).
	Interrupted bool   `json:"interrupted"`
	DataDir     string `json:"data_dir,omitempty"`

	Duration time.Duration `json:"duration_ns"`

	// Counters are the dashboard's counters when the run was verified.
	// A demo that keeps serving counts on from there.
	Counters map[string]int64 `json:"counters,omitempty"`
}

// partialReport fills what is known while the demo runs.
func (d *demo) partialReport() Report {
	stats, duplicates, lost := d.totals()
	return Report{
		Orders:             d.opts.Orders,
		Placed:             int(d.placed.Load()),
		DoubleClicks:       d.doubleClicks.Load(),
		DuplicatesInjected: duplicates,
		LostResponses:      lost,
		DuplicatesDropped:  d.tokenCounts.duplicates.Load(),
		CopiesCompleted:    stats.Completed,
		Crashes:            d.kills.Load(),
		SweptEntries:       stats.Swept,
		Batched:            stats.Batched,
		PeakLiveTokens:     d.tokenCounts.peak.Load(),
		Violations:         []string{},
	}
}

// verify reads the systems' own stores after they stopped and checks that
// every order of this run went through every step exactly once: no step
// twice (safety) and, unless the run was interrupted, every step
// (liveness). Orders of earlier runs over the same data directory are
// checked for steps applied twice only.
func (d *demo) verify(started time.Time, interrupted bool) Report {
	ctx := context.Background()
	r := d.partialReport()
	r.Placed = 0
	fail := func(format string, args ...any) { r.Violations = append(r.Violations, fmt.Sprintf(format, args...)) }
	// unfinished reports work that did not happen: a violation only for a
	// run that was not interrupted.
	unfinished := func(format string, args ...any) {
		if !interrupted {
			fail(format, args...)
		}
	}
	stores := map[string]*embedded.Store{}
	for _, role := range roles {
		s, err := embedded.Open(filepath.Join(d.dataDir, role+".db"), embedded.Config{})
		if err != nil {
			fail("open %s's store: %v", role, err)
			return r
		}
		defer s.Close()
		stores[role] = s
	}
	var orders []string
	d.roots.Range(func(k, _ any) bool { orders = append(orders, k.(string)); return true })
	slices.Sort(orders)
	known := map[string]bool{}
	for _, o := range orders {
		known[o] = true
	}

	// The shop's order entities: each step recorded once.
	for _, o := range orders {
		var s orderState
		if !load(ctx, stores[Shop], orderKey(o), &s, fail) {
			unfinished("order %s: never placed (lost)", o[:8])
			r.LostOrders++
			continue
		}
		r.Placed++
		r.Activities += s.Placed + s.Paid + s.Reserved + s.Shipped
		steps := []int{s.Placed, s.Paid, s.Reserved, s.Shipping, s.Shipped}
		if slices.Max(steps) > 1 || (slices.Min(steps) < 1 && !interrupted) {
			fail("order %s: placed %d, paid %d, reserved %d, shipping %d, shipped %d times (want 1 each)",
				o[:8], s.Placed, s.Paid, s.Reserved, s.Shipping, s.Shipped)
		}
		if s.Shipped == 0 {
			r.LostOrders++
		}
	}
	// Billing's accounts: one charge per order.
	charges := map[string]int{}
	for _, c := range customers {
		var s accountState
		load(ctx, stores[Billing], accountKey(c), &s, fail)
		for _, ch := range s.Charges {
			charges[ch.Order]++
		}
	}
	for o, n := range charges {
		if !known[o] {
			// An order of an earlier run over the same data directory,
			// if the shop placed it; else billing made it up.
			var s orderState
			if !load(ctx, stores[Shop], orderKey(o), &s, fail) {
				fail("billing charged unknown order %s", o)
			}
			r.EarlierOrders++
		} else {
			r.Charged++
			r.Activities += n
		}
		if n > 1 {
			r.DoubleCharges += n - 1
			fail("order %s charged %d times", o[:min(len(o), 8)], n)
		}
	}
	// The warehouse: one reservation and one shipment per order.
	reservations := map[string]int{}
	for _, p := range products {
		var s stockState
		load(ctx, stores[Warehouse], stockKey(p), &s, fail)
		for _, o := range s.Reservations {
			reservations[o]++
		}
	}
	for o, n := range reservations {
		if n > 1 {
			fail("order %s reserved %d times", o[:min(len(o), 8)], n)
		}
	}
	for _, o := range orders {
		r.Activities += reservations[o]
		if reservations[o] == 0 {
			unfinished("order %s reserved 0 times", o[:8])
		}
		var s shipmentState
		load(ctx, stores[Warehouse], shipmentKey(o), &s, fail)
		r.Activities += s.Shipped
		switch {
		case s.Shipped == 1:
			r.Shipped++
		case s.Shipped > 1 || !interrupted:
			fail("order %s shipped %d times by the warehouse", o[:8], s.Shipped)
		}
	}
	if len(orders) != d.opts.Orders {
		r.LostOrders += d.opts.Orders - len(orders)
		unfinished("%d orders were requested but %d forms were submitted", d.opts.Orders, len(orders))
	}
	if want := len(orders) * activitiesPerOrder; r.Activities != want {
		unfinished("%d activities applied, want %d", r.Activities, want)
	}
	// Each applied activity consumed its signal's token once, at the token
	// service: its count must match the systems' own records.
	if consumed := d.tokenCounts.transitions.Load(); r.EarlierOrders == 0 && !interrupted && consumed != int64(r.Activities) {
		fail("the token service consumed %d tokens, but the systems recorded %d activities", consumed, r.Activities)
	}
	if interrupted {
		r.LostOrders = 0 // not lost: unfinished, and still in the stores if kept
	}
	// Nothing left: no live token, no outbox entry anywhere.
	for role, s := range stores {
		keys, err := s.Stale(ctx, time.Now().Add(24*time.Hour), 1000)
		if err != nil {
			fail("%s: %v", role, err)
		}
		r.OutboxEnd += len(keys)
	}
	if r.OutboxEnd > 0 {
		unfinished("%d entities still hold outbox entries", r.OutboxEnd)
	}
	live, unused, err := d.unfinished(ctx)
	if err != nil {
		fail("count live tokens: %v", err)
	}
	r.UnusedFormTokens = unused
	if r.LiveTokensEnd = live; live > 0 {
		unfinished("%d tokens still live: %s", live, d.describeLive(ctx, 5))
	}
	// Tracing: the trace context travels in the signals over HTTP and NATS,
	// so each conversation is one trace across the systems.
	traced, split, orphans, err := traceCheck(d.dataDir)
	switch {
	case err != nil:
		fail("read spans: %v", err)
	case len(split) > 0:
		fail("%d conversations split over several traces, e.g. %s", len(split), split[0])
	case len(orphans) > 0:
		fail("%d spans of emitted signals lost their sender's trace context, e.g. token %s", len(orphans), orphans[0])
	}
	r.TracedConversations = traced
	// A classic processed-message table keeps one row per processed
	// signal for its retention window (days), far longer than this run.
	r.ClassicRows = r.Activities
	r.Duration = time.Since(started)
	return r
}

func load(ctx context.Context, s *embedded.Store, key string, into any, fail func(string, ...any)) bool {
	e, err := s.Load(ctx, key)
	if err != nil {
		fail("load %s: %v", key, err)
		return false
	}
	if e.Version == 0 {
		return false
	}
	if err := json.Unmarshal(e.State, into); err != nil {
		fail("decode %s: %v", key, err)
		return false
	}
	return true
}

// Write prints the report for a person.
func (r Report) Write(w io.Writer) {
	verdict := "PASS: every step happened exactly once"
	switch {
	case !r.OK:
		verdict = "FAIL: an invariant was violated"
	case r.Interrupted:
		verdict = fmt.Sprintf("INTERRUPTED after %d of %d orders were placed, %d of them shipped; no step happened twice", r.Placed, r.Orders, r.Shipped)
	}
	rows := []struct {
		label string
		value any
	}{
		{"orders requested", r.Orders}, {"orders placed", r.Placed}, {"orders charged", r.Charged},
		{"orders shipped", r.Shipped}, {"activities applied", fmt.Sprintf("%d (%d per order)", r.Activities, activitiesPerOrder)},
		{"", nil},
		{"chaos: double clicks", r.DoubleClicks}, {"chaos: duplicate deliveries", r.DuplicatesInjected},
		{"chaos: lost HTTP responses", r.LostResponses}, {"chaos: crashes (SIGKILL)", r.Crashes},
		{"duplicates dropped", r.DuplicatesDropped}, {"copies that finished a done step", r.CopiesCompleted},
		{"outbox entries swept", r.SweptEntries}, {"activities committed in batches", r.Batched},
		{"", nil},
		{"double charges", r.DoubleCharges}, {"lost orders", r.LostOrders},
		{"live tokens at the end", r.LiveTokensEnd}, {"outbox entries at the end", r.OutboxEnd},
		{"unused form tokens (expire)", r.UnusedFormTokens},
		{"conversations traced as one trace", r.TracedConversations},
		{"", nil},
		{"peak live tokens", r.PeakLiveTokens},
		{"classic inbox table rows", fmt.Sprintf("%d (one per processed signal, kept for days)", r.ClassicRows)},
	}
	fmt.Fprintln(w, "\nbaton demo: verification report")
	for _, row := range rows {
		if row.label == "" {
			fmt.Fprintln(w)
			continue
		}
		fmt.Fprintf(w, "  %-34s %v\n", row.label, row.value)
	}
	if r.EarlierOrders > 0 {
		fmt.Fprintf(w, "  %-34s %d (checked for steps applied twice)\n", "orders of earlier runs in --data", r.EarlierOrders)
	}
	fmt.Fprintf(w, "\n  %s (in %s)\n", verdict, r.Duration.Round(100*time.Millisecond))
	if r.Interrupted {
		if r.DataDir != "" {
			fmt.Fprintf(w, "  unfinished work stays in %s: run the demo again with --data %s to let the systems finish it\n", r.DataDir, r.DataDir)
		} else {
			fmt.Fprintln(w, "  unfinished work was in a temporary directory and is removed (use --data DIR to keep it)")
		}
	}
	for _, v := range r.Violations {
		fmt.Fprintln(w, "  violation:", v)
	}
}
