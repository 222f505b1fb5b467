package dashboard_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/dashboard"
	"github.com/batonhq/baton/internal/syncio"
	"github.com/batonhq/baton/store"
)

// Operators of these tests: a key names a system that may operate, or one
// that may only look.
const (
	operatorKey = "key-of-alice"
	viewerKey   = "key-of-bob"
)

func operateByKey(r *http.Request) (string, error) {
	switch r.Header.Get("Authorization") {
	case "Bearer " + operatorKey:
		return "alice", nil
	case "Bearer " + viewerKey:
		return "", errors.New(`system "bob" may not operate`)
	case "":
		return "", fmt.Errorf("%w: send the key of a system with operate", dashboard.ErrNoCredentials)
	}
	return "", fmt.Errorf("%w: the key is not registered", dashboard.ErrNoCredentials)
}

// operatedShop serves the shop's dashboard with its broker's park place and
// replay and discard for operators; a second declined order is parked too.
func operatedShop(t *testing.T) (*shopRun, *httptest.Server, *syncio.Buffer, baton.Signal) {
	t.Helper()
	run := startShop(t)
	second := run.place("decline")
	waitFor(t, "the second declined charge to be parked", func() bool {
		return dashboard.EngineStats(run.shop, run.billing)()[dashboard.CounterParked] == 2
	})
	audit := &syncio.Buffer{}
	h, err := dashboard.New(dashboard.Config{Recorder: run.rec, Tokens: run.tokens, Parked: run.broker,
		Operate: operateByKey, Audit: audit, Stats: dashboard.EngineStats(run.shop, run.billing), Report: liveTokensMatchRecorder(run)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return run, srv, audit, second
}

type brokerParked struct {
	Available bool `json:"available"`
	Actions   bool `json:"actions"`
	Signals   []struct {
		ID           string `json:"id"`
		Token        string `json:"token"`
		Conversation string `json:"conversation"`
		Destination  string `json:"destination"`
		Type         string `json:"type"`
		Reason       string `json:"reason"`
		Attempts     int    `json:"attempts"`
		Payload      string `json:"payload"`
	} `json:"signals"`
	Errors []string `json:"errors"`
}

// parkedIDOf returns the park place's id of the parked signal of conversation.
func parkedIDOf(t *testing.T, srv *httptest.Server, conversation baton.TokenID) string {
	t.Helper()
	var list brokerParked
	getJSON(t, srv.URL+"/api/parked", &list)
	for _, p := range list.Signals {
		if p.Conversation == conversation.String() {
			return p.ID
		}
	}
	t.Fatalf("conversation %s has no parked signal in %+v", conversation, list)
	return ""
}

func postAction(t *testing.T, url string, header map[string]string, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	res, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var answer map[string]any
	_ = json.NewDecoder(res.Body).Decode(&answer)
	return res.StatusCode, answer
}

// Replay and discard are refused to anyone who is not an operator, to
// requests another site could make the operator's browser send, and to
// a discard without a reason; nothing is changed by a refusal.
func TestParkedActionsAreRefusedWithoutAnOperator(t *testing.T) {
	t.Parallel()
	run, srv, audit, _ := operatedShop(t)

	var list brokerParked
	getJSON(t, srv.URL+"/api/parked", &list)
	if !list.Available || !list.Actions || len(list.Signals) != 2 {
		t.Fatalf("GET /api/parked: %+v; want both declined charges with actions", list)
	}
	for _, p := range list.Signals {
		if p.Type != "charge" || p.Destination != "billing" || !strings.Contains(p.Reason, "card declined") || p.Payload != "decline" {
			t.Errorf("parked signal %+v; want the declined charge with its reason and payload", p)
		}
	}
	id := parkedIDOf(t, srv, run.parks.Conversation)
	operator := map[string]string{"Authorization": "Bearer " + operatorKey}
	body := fmt.Sprintf(`{"id": %q, "why": "test"}`, id)
	refusals := []struct {
		name, path string
		header     map[string]string
		body       string
		want       int
	}{
		{"no credentials", "replay", nil, body, http.StatusUnauthorized},
		{"unknown key", "discard", map[string]string{"Authorization": "Bearer guess"}, body, http.StatusUnauthorized},
		{"a system that may only look", "replay", map[string]string{"Authorization": "Bearer " + viewerKey}, body, http.StatusForbidden},
		{"a form from another site", "discard", map[string]string{"Authorization": "Bearer " + operatorKey, "Content-Type": "application/x-www-form-urlencoded"}, body, http.StatusForbidden},
		{"a script on another site", "replay", map[string]string{"Authorization": "Bearer " + operatorKey, "Origin": "https://evil.example"}, body, http.StatusForbidden},
		{"a cross-site fetch", "discard", map[string]string{"Authorization": "Bearer " + operatorKey, "Sec-Fetch-Site": "cross-site"}, body, http.StatusForbidden},
		{"a discard without a reason", "discard", operator, fmt.Sprintf(`{"id": %q, "why": "  "}`, id), http.StatusBadRequest},
		{"no id", "replay", operator, `{}`, http.StatusBadRequest},
		{"an unknown field", "replay", operator, fmt.Sprintf(`{"id": %q, "force": true}`, id), http.StatusBadRequest},
		{"a key in another case", "replay", operator, fmt.Sprintf(`{"ID": %q}`, id), http.StatusBadRequest},
		{"a key twice", "discard", operator, fmt.Sprintf(`{"id": %q, "why": "  ", "why": "test"}`, id), http.StatusBadRequest},
		{"a body over the limit", "discard", operator, fmt.Sprintf(`{"id": %q, "why": %q}`, id, strings.Repeat("x", 9000)), http.StatusRequestEntityTooLarge},
		{"an id that is not parked", "replay", operator, `{"id": "no-such-signal"}`, http.StatusNotFound},
	}
	for _, r := range refusals {
		if got, answer := postAction(t, srv.URL+"/api/parked/"+r.path, r.header, r.body); got != r.want {
			t.Errorf("%s: %s answered %d %v; want %d", r.name, r.path, got, answer, r.want)
		}
	}
	if n := billingTokens(t, run, run.parks.Conversation); n != 1 {
		t.Errorf("the parked charge's token is gone after refused actions (%d live)", n)
	}
	getJSON(t, srv.URL+"/api/parked", &list)
	if len(list.Signals) != 2 {
		t.Errorf("%d parked signals after refused actions; want 2", len(list.Signals))
	}
	if audit.String() != "" {
		t.Errorf("refused actions were recorded: %q", audit.String())
	}

	// A dashboard without operators offers no actions at all.
	plain, err := dashboard.New(dashboard.Config{Recorder: run.rec, Tokens: run.tokens, Parked: run.broker})
	if err != nil {
		t.Fatal(err)
	}
	plainSrv := httptest.NewServer(plain)
	defer plainSrv.Close()
	if got, _ := postAction(t, plainSrv.URL+"/api/parked/replay", operator, body); got != http.StatusNotFound {
		t.Errorf("a dashboard without Operate answered %d to a replay; want 404", got)
	}
	if _, err := dashboard.New(dashboard.Config{Recorder: run.rec, Operate: operateByKey}); !errors.Is(err, dashboard.ErrInvalidConfig) {
		t.Errorf("Operate without Audit: %v; want ErrInvalidConfig", err)
	}
}

// An operator replays a signal once its handler is fixed (the activity is
// applied once, also when the replay is sent twice) and discards another
// (its token retired, the discard recorded with who and why).
func TestOperatorReplaysAndDiscards(t *testing.T) {
	t.Parallel()
	run, srv, audit, second := operatedShop(t)
	operator := map[string]string{"Authorization": "Bearer " + operatorKey}
	stats := dashboard.EngineStats(run.shop, run.billing)
	before := stats()[dashboard.CounterTransitions]

	run.cardsFixed.Store(true)
	id := parkedIDOf(t, srv, run.parks.Conversation)
	status, answer := postAction(t, srv.URL+"/api/parked/replay", operator, fmt.Sprintf(`{"id": %q}`, id))
	if status != http.StatusOK || answer["operator"] != "alice" || answer["type"] != "charge" || answer["destination"] != "billing" {
		t.Fatalf("replay: %d %v", status, answer)
	}
	// The charge, then shop's "charged": two transitions.
	waitFor(t, "the replayed charge to go through", func() bool { return stats()[dashboard.CounterTransitions] == before+2 })
	if status, _ := postAction(t, srv.URL+"/api/parked/replay", operator, fmt.Sprintf(`{"id": %q}`, id)); status != http.StatusNotFound {
		t.Errorf("replaying again answered %d; want 404 (no longer parked)", status)
	}
	time.Sleep(100 * time.Millisecond)
	if got := stats()[dashboard.CounterTransitions]; got != before+2 {
		t.Errorf("%d transitions after the second replay; want %d", got, before+2)
	}

	secondID := parkedIDOf(t, srv, second.Conversation)
	status, answer = postAction(t, srv.URL+"/api/parked/discard", operator, fmt.Sprintf(`{"id": %q, "why": "customer cancelled"}`, secondID))
	if status != http.StatusOK || answer["token_retired"] != true {
		t.Fatalf("discard: %d %v", status, answer)
	}
	var list brokerParked
	getJSON(t, srv.URL+"/api/parked", &list)
	if len(list.Signals) != 0 {
		t.Errorf("parked after replay and discard: %+v", list.Signals)
	}
	var rec struct {
		ID                   string `json:"parked_id"`
		Operator, Why, Token string
		Retired              bool `json:"token_retired"`
	}
	if err := json.Unmarshal([]byte(audit.String()), &rec); err != nil {
		t.Fatalf("audit record %q: %v", audit.String(), err)
	}
	if rec.Operator != "alice" || rec.Why != "customer cancelled" || !rec.Retired || rec.ID != secondID {
		t.Errorf("audit record %+v", rec)
	}
	// Neither conversation holds a live token of billing any more.
	for _, c := range []baton.TokenID{run.parks.Conversation, second.Conversation} {
		if n := billingTokens(t, run, c); n != 0 {
			t.Errorf("conversation %s still holds %d of billing's tokens", c, n)
		}
	}
}

// billingTokens counts the live tokens of billing in a conversation.
func billingTokens(t *testing.T, run *shopRun, conversation baton.TokenID) int {
	t.Helper()
	toks, err := run.tokens.ListByConversation(context.Background(), conversation, store.Page{})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, tok := range toks {
		if tok.Destination == "billing" {
			n++
		}
	}
	return n
}

// An operator finds parked signals on the page, is refused without a key,
// then discards one and replays the other with the key.
func TestParkedActionsInBrowser(t *testing.T) {
	t.Parallel()
	needChromium(t)
	run, srv, audit, second := operatedShop(t)
	ctx, console := startChromium(t, 30*time.Second)
	poll := func(what, expr string) {
		t.Helper()
		if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(10*time.Second),
			chromedp.WithPollingInterval(50*time.Millisecond))); err != nil {
			t.Fatalf("waiting for %s (%s): %v", what, expr, err)
		}
	}
	do := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	row := func(conversation baton.TokenID) string {
		return fmt.Sprintf(`#broker-parked li[data-conversation="%s"]`, conversation)
	}
	status := `document.getElementById('action-status').textContent`

	do("load the page", chromedp.Navigate(srv.URL+"/"))
	poll("both parked charges with their actions", `document.querySelectorAll('#broker-parked li button[data-action]').length === 4`)
	poll("the operator's inputs", `!document.getElementById('operate').hidden`)

	click := func(what, selector string) { t.Helper(); clickNow(t, ctx, what, selector) }
	do("say why", chromedp.SendKeys(chromedp.CSS("#discard-why"), "customer cancelled"))
	click("discard without a key", row(second.Conversation)+` button[data-action="discard"]`)
	poll("the refusal", status+`.startsWith('Not allowed')`)

	do("enter the key", chromedp.SendKeys(chromedp.CSS("#operator-key"), operatorKey))
	click("discard with the key", row(second.Conversation)+` button[data-action="discard"]`)
	poll("the discard", status+`.startsWith('Discarded charge to billing as alice: token retired')`)
	poll("the discarded row to go", fmt.Sprintf(`document.querySelector('%s') === null`, row(second.Conversation)))

	run.cardsFixed.Store(true)
	click("replay", row(run.parks.Conversation)+` button[data-action="replay"]`)
	poll("the replay", status+`.startsWith('Replayed charge to billing')`)
	poll("nothing parked", `document.querySelectorAll('#broker-parked li').length === 0 && !document.getElementById('broker-empty').hidden`)
	waitFor(t, "the replayed charge to be applied", func() bool { return billingTokens(t, run, run.parks.Conversation) == 0 })
	if n := billingTokens(t, run, second.Conversation); n != 0 {
		t.Errorf("the discarded charge's token is live (%d)", n)
	}
	if !strings.Contains(audit.String(), `"operator":"alice"`) || !strings.Contains(audit.String(), `"why":"customer cancelled"`) {
		t.Errorf("audit record %q", audit.String())
	}
	for _, m := range console.stop() {
		if !strings.Contains(m, "401") { // the refused discard logs nothing else
			t.Errorf("browser console: %s", m)
		}
	}
}
