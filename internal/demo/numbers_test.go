package demo_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/batonhq/baton/internal/demo"
)

// TestDashboardNumbersEqualTheReport runs the demo under chaos (SIGKILLs,
// duplicate deliveries, lost responses, double clicks) and then compares
// every number the dashboard serves with the verified report: the
// counters, the activities and duplicates among them (counted at the
// token service, so no kill loses any), and the duplicates of the
// conversations, which must add up to the duplicates dropped. Then it
// reads the same numbers off the dashboard's page in a browser.
func TestDashboardNumbersEqualTheReport(t *testing.T) {
	t.Parallel()
	requireChromium(t)
	ctx, stop := context.WithCancel(t.Context())
	defer stop()
	var dashboardURL string
	checked := make(chan error, 1)
	report, err := demo.Run(ctx, demo.Options{
		Orders: 40, Rate: 40, Addr: "127.0.0.1:0", Command: systemCommand, Linger: true, Seed: 7,
		Chaos:           demo.Chaos{DuplicateRate: 0.2, LostResponseRate: 0.2},
		DoubleClickRate: 0.3, KillEvery: 300 * time.Millisecond, Timeout: 90 * time.Second,
		Ready: func(dashboard, _ string) { dashboardURL = dashboard },
		// OnReport runs before the demo goes on serving, while the
		// systems are stopped: nothing changes the numbers meanwhile.
		OnReport: func(final demo.Report) {
			defer stop()
			err := compareWithDashboard(dashboardURL, final)
			if err == nil {
				err = compareWithPage(t, dashboardURL, final)
			}
			checked <- err
		}})
	if err != nil {
		t.Fatal(err)
	}
	if !report.OK || report.Crashes == 0 || report.DuplicatesDropped == 0 {
		t.Fatalf("the run proves nothing: %+v", report)
	}
	if err := <-checked; err != nil {
		t.Error(err)
	}
}

func compareWithDashboard(dashboard string, final demo.Report) error {
	var stats struct {
		Counters      map[string]int64 `json:"counters"`
		Conversations struct {
			Duplicates int64 `json:"duplicates"`
		} `json:"conversations"`
	}
	if err := getJSON(dashboard+"/api/stats", &stats); err != nil {
		return err
	}
	if !maps.Equal(stats.Counters, final.Counters) {
		return fmt.Errorf("the dashboard's counters %v differ from the report's %v", stats.Counters, final.Counters)
	}
	for name, want := range map[string]int64{"activities.applied": int64(final.Activities), "transitions": int64(final.Activities),
		"duplicates.dropped": final.DuplicatesDropped, "chaos.crashes": final.Crashes, "orders.placed": int64(final.Placed)} {
		if got := stats.Counters[name]; got != want {
			return fmt.Errorf("the dashboard shows %s %d, the report %d", name, got, want)
		}
	}
	var listing struct {
		Conversations []struct {
			Duplicates int64 `json:"duplicates"`
		} `json:"conversations"`
	}
	if err := getJSON(dashboard+"/api/conversations?limit=500", &listing); err != nil {
		return err
	}
	var perConversation int64
	for _, c := range listing.Conversations {
		perConversation += c.Duplicates
	}
	if perConversation != final.DuplicatesDropped || stats.Conversations.Duplicates != final.DuplicatesDropped {
		return fmt.Errorf("the conversations show %d duplicates (%d in all), the report %d dropped",
			perConversation, stats.Conversations.Duplicates, final.DuplicatesDropped)
	}
	return nil
}

// compareWithPage reads the counters and the conversations' duplicates
// off the dashboard's page.
func compareWithPage(t *testing.T, dashboard string, final demo.Report) error {
	page := startBrowser(t, 60*time.Second)
	if err := chromedp.Do(page, chromedp.Navigate(dashboard+"/")); err != nil {
		return fmt.Errorf("the dashboard page: %w", err)
	}
	if _, err := chromedp.Run(page, chromedp.Poll[bool](`document.body.dataset.ready === "true" && document.querySelectorAll("#counters tr[data-counter]").length > 0`,
		chromedp.WithPollingTimeout(30*time.Second))); err != nil {
		return fmt.Errorf("the dashboard page: %w", err)
	}
	shown, err := chromedp.Run(page, chromedp.Evaluate[struct {
		Counters   map[string]string `json:"counters"`
		Cards      map[string]string `json:"cards"`
		Duplicates int64             `json:"duplicates"`
	}](`(() => {
		const counters = {}, cards = {};
		for (const tr of document.querySelectorAll("#counters tr[data-counter]")) counters[tr.dataset.counter] = tr.querySelector("td.num").textContent;
		for (const e of document.querySelectorAll(".card .value[data-counter]")) cards[e.dataset.counter] = e.textContent;
		let duplicates = 0;
		for (const b of document.querySelectorAll("#conversations .badge.dup")) duplicates += parseInt(b.textContent, 10);
		return {counters, cards, duplicates};
	})()`))
	if err != nil {
		return err
	}
	number := func(s string) int64 { n, _ := strconv.ParseInt(strings.ReplaceAll(s, ",", ""), 10, 64); return n }
	for name, want := range final.Counters {
		if got, ok := shown.Counters[name]; !ok || number(got) != want {
			return fmt.Errorf("the page shows counter %s %q, the report %d", name, got, want)
		}
	}
	for name, got := range shown.Cards {
		if want, ok := final.Counters[name]; ok && number(got) != want {
			return fmt.Errorf("the page's card %s shows %q, the report %d", name, got, want)
		}
	}
	if shown.Duplicates != final.DuplicatesDropped {
		return fmt.Errorf("the page's conversations show %d duplicates, the report %d dropped", shown.Duplicates, final.DuplicatesDropped)
	}
	return nil
}

func getJSON(url string, into any) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(into)
}
