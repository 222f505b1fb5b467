package main

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/internal/testenv/redisserver"
)

// When the token store goes away, baton serve says so once in its log (not
// once per request, and not in the words of the store's client library),
// answers /healthz with 503, counts the failed calls on /metrics, and
// recovers by itself when the store comes back, saying so once.
func TestServeStoreOutage(t *testing.T) {
	t.Parallel()
	r := redisserver.Start(t, redisserver.DurableArgs...)
	systems, k := systemsFile(t, false)
	o := options(t, systems)
	o.store, o.redisURLs, o.logLevel = "redis", []string{r.URL()}, "info"
	s := start(t, o)
	issueRoot(t, nil, s.url, k.edge)

	r.Kill()
	const requests = 30
	for range requests {
		if rep := request(t, nil, "POST", s.url+"/v1/roots", k.edge, "", map[string]any{"destination": "billing", "type": "charge"}); rep.status < 500 {
			t.Fatalf("issue with the store down: %d %s", rep.status, rep.body)
		}
	}
	if rep := request(t, nil, "GET", s.url+"/healthz", "", "", nil); rep.status != http.StatusServiceUnavailable {
		t.Fatalf("/healthz with the store down: %d", rep.status)
	}
	metrics := request(t, nil, "GET", s.url+"/metrics", k.ops, "", nil)
	for _, want := range []string{"baton_token_store_errors_total{", "baton_token_store_duration_seconds_bucket{"} {
		if !strings.Contains(metrics.body, want) {
			t.Errorf("/metrics has no %s", want)
		}
	}
	if n := strings.Count(s.stderr.String(), "\n"); n > 3 {
		t.Errorf("%d requests met the store down: %d log lines, want the start and one about the store:\n%s", requests+1, n, s.stderr.String())
	}

	if err := r.TryRestart(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for request(t, nil, "GET", s.url+"/healthz", "", "", nil).status != http.StatusOK {
		if time.Now().After(deadline) {
			t.Fatal("/healthz stays 503 after the store came back")
		}
		time.Sleep(100 * time.Millisecond)
	}
	issueRoot(t, nil, s.url, k.edge)
	if !strings.Contains(s.stderr.String(), "token store answers") {
		t.Errorf("no line says that the store answers again:\n%s", s.stderr.String())
	}
}
