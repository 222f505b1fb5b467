package demo_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"testing"
	"time"

	"github.com/batonhq/baton/internal/demo"
)

// TestDashboardNumbersEqualTheReport runs the demo under chaos (SIGKILLs,
// duplicate deliveries, lost responses, double clicks) and then compares
// every number the dashboard serves with the verified report: the
// counters, the activities and duplicates among them (counted at the
// token service, so no kill loses any), and the duplicates of the
// conversations, which must add up to the duplicates dropped.
func TestDashboardNumbersEqualTheReport(t *testing.T) {
	t.Parallel()
	ctx, stop := context.WithCancel(t.Context())
	defer stop()
	var dashboardURL string
	checked := make(chan error, 1)
	report, err := demo.Run(ctx, demo.Options{
		Orders: 40, Rate: 40, Addr: "127.0.0.1:0", Command: systemCommand, Linger: true, Seed: 7,
		Chaos:           demo.Chaos{DuplicateRate: 0.2, LostResponseRate: 0.2},
		DoubleClickRate: 0.3, KillEvery: 300 * time.Millisecond, Timeout: 90 * time.Second,
		Ready: func(dashboard, _ string) { dashboardURL = dashboard },
		OnReport: func(final demo.Report) {
			go func() {
				defer stop()
				checked <- compareWithDashboard(dashboardURL, final)
			}()
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
