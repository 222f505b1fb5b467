package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/batonhq/baton/tokenservice"
	"github.com/batonhq/baton/tokenservice/client"
)

// TestServeDashboardActsOnParkedSignals runs `baton serve --nats` (and
// --rabbitmq) against the real broker: a billing engine that takes its
// tokens from the service parks two charges; on the dashboard, a request
// without credentials or from a system without operate changes nothing,
// and the operator replays one (applied once) and discards the other (its
// token retired, the discard in the audit log).
func TestServeDashboardActsOnParkedSignals(t *testing.T) {
	t.Parallel()
	onRealBrokers(t, func(t *testing.T, tr parkingTransport, broker []string) {
		billingKey, billingHash := tokenservice.NewAPIKey()
		opsKey, opsHash := tokenservice.NewAPIKey()
		viewerKey, viewerHash := tokenservice.NewAPIKey()
		data, err := json.Marshal(tokenservice.SystemsFile{Systems: []tokenservice.System{
			{Name: "billing", KeySHA256: billingHash, IssueRoots: true},
			{Name: "ops", KeySHA256: opsHash, Operate: true},
			{Name: "viewer", KeySHA256: viewerHash, Observe: true},
		}})
		must(t, err)
		dir := t.TempDir()
		systems, auditLog := filepath.Join(dir, "systems.json"), filepath.Join(dir, "discards.jsonl")
		must(t, os.WriteFile(systems, data, 0o600))
		o := options(t, systems)
		o.dashboardAddr, o.auditLog = "127.0.0.1:0", auditLog
		o.broker = parseBrokerFlags(t, broker)
		o.allowUnsafe = o.broker.allowUnsafe // serve's flag covers its store and its broker
		s := start(t, o)
		dash, ok := s.stdout.withPrefix("dashboard on ")
		if !ok {
			t.Fatalf("no dashboard address in %q", s.stdout.all)
		}

		tokens, err := client.New(s.url, billingKey, client.Options{})
		must(t, err)
		t.Cleanup(func() { tokens.Close() })
		billing := startBuggyBilling(t, tokens, tr)

		var list struct {
			Actions bool `json:"actions"`
			Signals []struct {
				ID, Token, Reason string
			} `json:"signals"`
			Errors []string `json:"errors"`
		}
		for deadline := time.Now().Add(20 * time.Second); len(list.Signals) < 2; time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("the dashboard does not list both parked charges: %+v", list)
			}
			getDashboardJSON(t, dash+"/api/parked", &list)
		}
		if !list.Actions || !strings.Contains(list.Signals[0].Reason, "bug #42") {
			t.Errorf("GET /api/parked: %+v", list)
		}
		replayed, discarded := list.Signals[0], list.Signals[1]

		replay := fmt.Sprintf(`{"id": %q}`, replayed.ID)
		discard := fmt.Sprintf(`{"id": %q, "why": "customer cancelled"}`, discarded.ID)
		for _, r := range []struct {
			name, url, key, body string
			want                 int
		}{
			{"anonymous on the loopback dashboard", dash + "/api/parked/replay", "", replay, http.StatusUnauthorized},
			{"an observer on the loopback dashboard", dash + "/api/parked/discard", viewerKey, discard, http.StatusForbidden},
			{"the billing system", dash + "/api/parked/discard", billingKey, discard, http.StatusForbidden},
			{"an observer on --addr", s.url + "/api/parked/replay", viewerKey, replay, http.StatusForbidden},
			{"an operator without observe on --addr", s.url + "/api/parked/replay", opsKey, replay, http.StatusForbidden},
		} {
			if got, body := postJSON(t, r.url, r.key, r.body); got != r.want {
				t.Errorf("%s: %d %s; want %d", r.name, got, body, r.want)
			}
		}

		billing.fixed.Store(true)
		if got, body := postJSON(t, dash+"/api/parked/replay", opsKey, replay); got != http.StatusOK || !strings.Contains(body, `"operator":"ops"`) {
			t.Fatalf("replay by the operator: %d %s", got, body)
		}
		for deadline := time.Now().Add(20 * time.Second); billing.applied.Load() < 1; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("the replayed charge was not applied")
			}
		}
		if got, body := postJSON(t, dash+"/api/parked/discard", opsKey, discard); got != http.StatusOK || !strings.Contains(body, `"token_retired":true`) {
			t.Fatalf("discard by the operator: %d %s", got, body)
		}
		record, err := os.ReadFile(auditLog)
		must(t, err)
		if !strings.Contains(string(record), `"operator":"ops"`) || !strings.Contains(string(record), `"why":"customer cancelled"`) ||
			!strings.Contains(string(record), discarded.Token) {
			t.Errorf("audit log %q", record)
		}
		if got, body := postJSON(t, dash+"/api/parked/replay", opsKey, replay); got != http.StatusNotFound {
			t.Errorf("replaying again: %d %s; want 404", got, body)
		}
		time.Sleep(300 * time.Millisecond)
		if n := billing.applied.Load(); n != 1 {
			t.Errorf("applied %d times; want 1", n)
		}
		for _, sig := range billing.sigs {
			if _, err := tokens.Get(t.Context(), sig.ID); err == nil {
				t.Errorf("token %s is live after replay and discard", sig.ID)
			}
		}
	})
}

// parseBrokerFlags reads the broker flags of onRealBrokers.
func parseBrokerFlags(t *testing.T, args []string) brokerFlags {
	t.Helper()
	var b brokerFlags
	f := pflag.NewFlagSet("broker", pflag.ContinueOnError)
	b.register(f, true)
	must(t, f.Parse(args))
	return b
}

func getDashboardJSON(t *testing.T, url string, out any) {
	t.Helper()
	res, err := http.Get(url)
	must(t, err)
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(res.Body)
		t.Fatalf("GET %s: %d %s", url, res.StatusCode, body)
	}
	must(t, json.NewDecoder(res.Body).Decode(out))
}

func postJSON(t *testing.T, url, key, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	must(t, err)
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	res, err := http.DefaultClient.Do(req)
	must(t, err)
	defer res.Body.Close()
	answer, _ := io.ReadAll(res.Body)
	return res.StatusCode, strings.TrimSpace(string(answer))
}
