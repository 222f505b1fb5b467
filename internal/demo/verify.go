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

	TracedConversations int `json:"traced_conversations"` // each one trace across the systems

	PeakLiveTokens int64 `json:"peak_live_tokens"`
	ClassicRows    int   `json:"classic_rows"` // rows a processed-message table would hold
	LiveTokensEnd  int   `json:"live_tokens_at_end"`
	// UnusedFormTokens are roots of forms that reached no person (the shop
	// was killed while rendering them): never sent, they expire unused.
	UnusedFormTokens int `json:"unused_form_tokens"`
	OutboxEnd        int `json:"outbox_entries_at_end"`

	Duration time.Duration `json:"duration_ns"`
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
		DuplicatesDropped:  stats.Duplicates,
		CopiesCompleted:    stats.Completed,
		Crashes:            d.kills.Load(),
		SweptEntries:       stats.Swept,
		PeakLiveTokens:     d.peakLive.Load(),
		Violations:         []string{},
	}
}

// verify reads the systems' own stores after they stopped and checks that
// every order went through every step exactly once.
func (d *demo) verify(started time.Time) Report {
	ctx := context.Background()
	r := d.partialReport()
	r.Placed = 0
	fail := func(format string, args ...any) { r.Violations = append(r.Violations, fmt.Sprintf(format, args...)) }
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
			fail("order %s: never placed (lost)", o[:8])
			r.LostOrders++
			continue
		}
		r.Placed++
		r.Activities += s.Placed + s.Paid + s.Reserved + s.Shipped
		if s.Placed != 1 || s.Paid != 1 || s.Reserved != 1 || s.Shipping != 1 || s.Shipped != 1 {
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
			r.Activities++
		}
	}
	for o, n := range charges {
		switch {
		case !known[o]:
			fail("billing charged unknown order %s", o)
		case n > 1:
			r.DoubleCharges += n - 1
			fail("order %s charged %d times", o[:8], n)
		}
	}
	r.Charged = len(charges)
	// The warehouse: one reservation and one shipment per order.
	reservations := map[string]int{}
	for _, p := range products {
		var s stockState
		load(ctx, stores[Warehouse], stockKey(p), &s, fail)
		for _, o := range s.Reservations {
			reservations[o]++
			r.Activities++
		}
	}
	for _, o := range orders {
		if reservations[o] != 1 {
			fail("order %s reserved %d times", o[:8], reservations[o])
		}
		var s shipmentState
		load(ctx, stores[Warehouse], shipmentKey(o), &s, fail)
		r.Activities += s.Shipped
		if s.Shipped == 1 {
			r.Shipped++
		} else {
			fail("order %s shipped %d times by the warehouse", o[:8], s.Shipped)
		}
	}
	if len(orders) != d.opts.Orders {
		r.LostOrders += d.opts.Orders - len(orders)
		fail("%d orders were requested but %d forms were submitted", d.opts.Orders, len(orders))
	}
	if want := len(orders) * activitiesPerOrder; r.Activities != want {
		fail("%d activities applied, want %d", r.Activities, want)
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
		fail("%d entities still hold outbox entries", r.OutboxEnd)
	}
	live, unused, err := d.unfinished(ctx)
	if err != nil {
		fail("count live tokens: %v", err)
	}
	r.UnusedFormTokens = unused
	if r.LiveTokensEnd = live; live > 0 {
		fail("%d tokens still live: %s", live, d.describeLive(ctx, 5))
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
	if !r.OK {
		verdict = "FAIL: an invariant was violated"
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
		{"outbox entries swept", r.SweptEntries},
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
	fmt.Fprintf(w, "\n  %s (in %s)\n", verdict, r.Duration.Round(100*time.Millisecond))
	for _, v := range r.Violations {
		fmt.Fprintln(w, "  violation:", v)
	}
}
