package conformance_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/conformance"
	"github.com/batonhq/baton/httpsignal"
	"github.com/batonhq/baton/internal/participant"
	"github.com/batonhq/baton/tokenservice"
	"github.com/batonhq/baton/tokenservice/client"
)

func startKit(t *testing.T) (*conformance.Kit, string) {
	t.Helper()
	key, _ := tokenservice.NewAPIKey()
	kit, err := conformance.Start(conformance.Config{Destination: "billing", ParticipantKey: key,
		TokenServiceAddr: "127.0.0.1:0", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = kit.Close() })
	return kit, key
}

func report(t *testing.T, r conformance.Report) string {
	t.Helper()
	var b strings.Builder
	if err := r.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestReferenceParticipantPasses: the Go participant of `baton participant`
// (the reference engine behind httpsignal) passes every check.
func TestReferenceParticipantPasses(t *testing.T) {
	t.Parallel()
	kit, key := startKit(t)
	ctx, cancel := context.WithCancel(t.Context())
	urls := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- participant.Run(ctx, participant.Config{Addr: "127.0.0.1:0", TokenService: kit.TokenServiceURL(),
			Key: key, Destination: "billing", Data: t.TempDir()}, func(u string) { urls <- u })
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("participant: %v", err)
		}
	})
	var signals string
	select {
	case signals = <-urls:
	case err := <-done:
		t.Fatalf("participant did not start: %v", err)
	}
	r, err := kit.Check(t.Context(), signals)
	if err != nil {
		t.Fatal(err)
	}
	table := report(t, r)
	t.Log("\n" + table)
	if !r.Passed() {
		t.Errorf("the reference participant failed checks:\n%s", table)
	}
}

// TestShortcutParticipantFails: a participant that keeps no outbox (reads
// the token, applies, consumes) applies a signal twice when the transition
// fails after its commit, and the kit says so.
func TestShortcutParticipantFails(t *testing.T) {
	t.Parallel()
	kit, key := startKit(t)
	tokens, err := client.New(kit.TokenServiceURL(), key, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tokens.Close() })
	p := httptest.NewServer(&shortcut{tokens: tokens, counts: map[string]int{}})
	t.Cleanup(p.Close)
	r, err := kit.Check(t.Context(), p.URL)
	if err != nil {
		t.Fatal(err)
	}
	table := report(t, r)
	t.Log("\n" + table)
	failed := map[string]bool{}
	for _, res := range r.Results {
		failed[res.Check] = !res.Passed
	}
	for _, want := range []string{"transition fails after the commit: retried, applied once",
		"a token for another destination is refused"} {
		if !failed[want] {
			t.Errorf("check %q passed for a participant without outbox; want it failed", want)
		}
	}
	if r.Passed() {
		t.Error("the report passed")
	}
}

// shortcut is the participant that protocol.md 3.7 says is not the
// protocol: no outbox, no claim, and it treats any failure to read the
// token as a duplicate.
type shortcut struct {
	tokens *client.Client
	mu     sync.Mutex
	counts map[string]int
}

func (s *shortcut) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	sig, err := httpsignal.DecodeRequest(r, baton.MaxPayloadBytes)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set(httpsignal.HeaderToken, sig.ID.String())
	if _, err := s.tokens.Get(r.Context(), sig.ID); err != nil {
		w.Header().Set("Content-Type", httpsignal.ProblemContentType)
		w.Header().Set(httpsignal.HeaderOutcome, httpsignal.OutcomeDuplicate)
		w.WriteHeader(http.StatusConflict)
		_ = json.NewEncoder(w).Encode(httpsignal.Problem{Type: httpsignal.ProblemAlreadyProcessed, Status: 409})
		return
	}
	var p struct{ Entity string }
	_ = json.Unmarshal(sig.Payload, &p)
	s.mu.Lock()
	s.counts[p.Entity]++
	n := s.counts[p.Entity]
	s.mu.Unlock()
	if _, err := s.tokens.Transition(r.Context(), sig.ID, nil); err != nil {
		w.Header().Set("Retry-After", "1")
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set(httpsignal.HeaderOutcome, httpsignal.OutcomeApplied)
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(bytes.TrimSpace([]byte(`{"count":` + itoa(n) + `}`)))
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }
