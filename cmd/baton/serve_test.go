package main

import (
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/tokenservice"
)

// The dashboard and the metrics show every in-flight token id, and ids
// are capabilities: on the API's address they answer only systems with
// the observe permission.
func TestServeDashboardAndMetricsNeedObserve(t *testing.T) {
	t.Parallel()
	systems, k := systemsFile(t, false)
	s := start(t, options(t, systems))
	root := issueRoot(t, nil, s.url, k.edge)
	for _, path := range []string{"/metrics", "/", "/api/conversations", "/api/conversations/" + root.ID.String(),
		"/api/tokens", "/api/stats"} {
		for _, c := range []struct {
			who, key string
			status   int
			problem  string
		}{
			{"no credentials", "", http.StatusUnauthorized, tokenservice.ProblemUnauthorized},
			{"an unknown key", "bk_" + strings.Repeat("x", 43), http.StatusUnauthorized, tokenservice.ProblemUnauthorized},
			{"billing, without observe", k.billing, http.StatusForbidden, tokenservice.ProblemForbidden},
			{"edge, without observe", k.edge, http.StatusForbidden, tokenservice.ProblemForbidden},
			{"ops, with observe", k.ops, http.StatusOK, ""},
		} {
			r := request(t, nil, "GET", s.url+path, c.key, "", nil)
			if r.status != c.status || r.problemType() != c.problem {
				t.Errorf("GET %s as %s: %d %.200s; want %d %s", path, c.who, r.status, r.body, c.status, c.problem)
			}
			if c.problem != "" && strings.Contains(r.body, root.ID.String()) {
				t.Errorf("GET %s as %s shows the root's id", path, c.who)
			}
		}
	}
	if r := request(t, nil, "GET", s.url+"/api/conversations", k.ops, "", nil); !strings.Contains(r.body, root.ID.String()) {
		t.Errorf("ops does not see the conversation: %s", r.body)
	}
	if r := request(t, nil, "GET", s.url+"/healthz", "", "", nil); r.status != http.StatusOK {
		t.Errorf("/healthz: %d, want 200 without credentials", r.status)
	}
}

// /healthz's probe tokens (written when no write of the service's traffic
// vouches for the store) do not reach the dashboard: recorded, an idle
// service's probes would push real conversations out of it (review).
func TestServeHealthProbesAreNotConversations(t *testing.T) {
	t.Parallel()
	systems, k := systemsFile(t, false)
	s := start(t, options(t, systems))
	if r := request(t, nil, "GET", s.url+"/healthz", "", "", nil); r.status != http.StatusOK {
		t.Fatalf("/healthz: %d %s", r.status, r.body)
	}
	if r := request(t, nil, "GET", s.url+"/api/conversations", k.ops, "", nil); r.status != http.StatusOK || strings.Contains(r.body, "baton.healthz") {
		t.Errorf("the dashboard after a health probe: %d %s; want no probe in it", r.status, r.body)
	}
}

// Client certificates authenticate for the dashboard and the metrics as
// they do for the API: a certificate of an observe system is let in, one
// of another system is forbidden, and no certificate is no credential.
func TestServeDashboardAndMetricsTakeClientCertificates(t *testing.T) {
	t.Parallel()
	ca := newAuthority(t)
	ca.server(t)
	systems, k := systemsFile(t, true)
	o := options(t, systems)
	o.tlsCert, o.tlsKey, o.clientCA = ca.path("server.pem"), ca.path("server-key.pem"), ca.path("ca.pem")
	s := start(t, o)
	if !strings.HasPrefix(s.url, "https://") {
		t.Fatalf("serving %s, want https", s.url)
	}
	issueRoot(t, ca.client(t, ""), s.url, k.edge)
	for _, c := range []struct {
		who     string
		client  *http.Client
		status  int
		problem string
	}{
		{"no certificate", ca.client(t, ""), http.StatusUnauthorized, tokenservice.ProblemUnauthorized},
		{"billing's certificate", ca.client(t, "billing"), http.StatusForbidden, tokenservice.ProblemForbidden},
		{"a certificate of no system", ca.client(t, "stranger"), http.StatusUnauthorized, tokenservice.ProblemUnauthorized},
		{"ops' certificate", ca.client(t, "ops"), http.StatusOK, ""},
	} {
		for _, path := range []string{"/metrics", "/api/stats", "/"} {
			r := request(t, c.client, "GET", s.url+path, "", "", nil)
			if r.status != c.status || r.problemType() != c.problem {
				t.Errorf("GET %s with %s: %d %.200s; want %d %s", path, c.who, r.status, r.body, c.status, c.problem)
			}
		}
	}
	// The certificate's names are the service's names.
	port := s.url[strings.LastIndex(s.url, ":")+1:]
	ops := ca.client(t, "ops")
	for host, status := range map[string]int{"tokens.test:" + port: http.StatusOK, "other.test:" + port: http.StatusMisdirectedRequest} {
		if r := request(t, ops, "GET", s.url+"/metrics", "", host, nil); r.status != status {
			t.Errorf("GET /metrics with Host %s: %d, want %d", host, r.status, status)
		}
	}
}

// A browser that DNS rebinding pointed at the service sends the
// attacker's name as Host: every route refuses it, the API's too.
func TestServeRefusesForeignHostNames(t *testing.T) {
	t.Parallel()
	systems, k := systemsFile(t, false)
	s := start(t, options(t, systems))
	port := s.url[strings.LastIndex(s.url, ":")+1:]
	root := issueRoot(t, nil, s.url, k.edge)
	for _, host := range []string{"rebind.attacker.example:" + port, "rebind.attacker.example", "localhost.attacker.example:" + port} {
		for _, c := range []struct{ method, path, key string }{
			{"GET", "/", ""}, {"GET", "/api/conversations", ""}, {"GET", "/metrics", k.ops}, {"GET", "/api/tokens", k.ops},
			{"GET", "/healthz", ""}, {"GET", "/v1/openapi.yaml", ""}, {"GET", "/v1/tokens/" + root.ID.String(), k.ops},
		} {
			r := request(t, nil, c.method, s.url+c.path, c.key, host, nil)
			if r.status != http.StatusMisdirectedRequest || r.problemType() != tokenservice.ProblemWrongHost {
				t.Errorf("%s %s with Host %s: %d %.200s; want 421 %s", c.method, c.path, host, r.status, r.body, tokenservice.ProblemWrongHost)
			}
		}
		id := baton.NewTokenID()
		tok := baton.Token{ID: id, Conversation: id, Destination: "billing", Type: "order.place", CreatedAt: time.Now().UTC()}
		if r := request(t, nil, "POST", s.url+"/v1/roots", k.edge, host, tokenservice.EncodeToken(tok)); r.status != http.StatusMisdirectedRequest {
			t.Errorf("POST /v1/roots with Host %s: %d, want 421", host, r.status)
		}
	}
	for _, host := range []string{"127.0.0.1:" + port, "localhost:" + port, "LOCALHOST", "[::1]:" + port} {
		if r := request(t, nil, "GET", s.url+"/metrics", k.ops, host, nil); r.status != http.StatusOK {
			t.Errorf("GET /metrics with Host %s: %d %.200s; want 200", host, r.status, r.body)
		}
	}
}

// Plain HTTP on an address other than loopback would send API keys in
// clear: serve refuses to start, with one line that names the way out.
func TestServeRefusesPlainHTTPOffLoopback(t *testing.T) {
	t.Parallel()
	systems, _ := systemsFile(t, false)
	for _, addr := range []string{"0.0.0.0:0", ":0", "[::]:0"} {
		o := options(t, systems)
		o.addr = addr
		s, err := tryStart(t, o)
		if err == nil {
			t.Errorf("--addr %s without TLS: serve started on %s; want it refused", addr, s.url)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, "--insecure-plain-http") || strings.Contains(msg, "\n") {
			t.Errorf("--addr %s: error %q; want one line that names --insecure-plain-http", addr, msg)
		}
	}
}

// heapAfterGC returns the live heap.
func heapAfterGC() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

// One ordinary system that fans a conversation out into 60 × 1,000
// children costs the service a bounded amount of memory for the
// dashboard's recorder, and nothing with --dashboard=false.
func TestServeRecorderIsBoundedAndOffWithoutDashboard(t *testing.T) {
	// Not parallel: it measures the heap of this process.
	for _, dashboard := range []bool{true, false} {
		systems, k := systemsFile(t, false)
		o := options(t, systems)
		o.dashboard = dashboard
		s := start(t, o)
		root := issueRoot(t, nil, s.url, k.edge)
		before := heapAfterGC()
		consume := root
		for i := range 60 {
			req := tokenservice.TransitionRequest{Consume: consume.ID.String()}
			var first baton.Token
			for j := range 1000 {
				id := baton.NewTokenID()
				child := baton.Token{ID: id, Conversation: root.ID, Causation: consume.ID, Destination: "billing",
					Type: "charge", CreatedAt: time.Now().UTC()}
				if j == 0 {
					first = child
				}
				req.Create = append(req.Create, tokenservice.EncodeToken(child))
			}
			if r := request(t, nil, "POST", s.url+"/v1/transitions", k.edge, "", req); r.status != http.StatusOK || !strings.Contains(r.body, "true") {
				t.Fatalf("transition %d: %d %s", i, r.status, r.body)
			}
			consume = first
		}
		grown := heapAfterGC() - before
		t.Logf("--dashboard=%v: the heap grew by %.1f MB for 60,000 tokens", dashboard, float64(grown)/1e6)
		if grown > 8<<20 {
			t.Errorf("--dashboard=%v: the heap grew by %.1f MB for one system's 60,000 tokens; want at most 8 MiB", dashboard, float64(grown)/1e6)
		}
		if !dashboard {
			if r := request(t, nil, "GET", s.url+"/api/stats", k.ops, "", nil); r.status != http.StatusNotFound {
				t.Errorf("--dashboard=false: /api/stats answers %d, want 404", r.status)
			}
		}
	}
}

// keygen refuses an invalid system or destination name in one line that
// says what a name may be, not with the token service's config error about
// an invalid signal (found in review).
func TestKeygenRefusesInvalidNamesInOneLine(t *testing.T) {
	t.Parallel()
	cases := []refusal{
		{[]string{"serve", "keygen", "--system", "bad name!"}, `--system "bad name!": invalid system name: a name has 1 to 200 bytes of UTF-8 and no space, control character or U+FFFD`},
		{[]string{"serve", "keygen", "--system", strings.Repeat("x", 201)}, "invalid system name"},
		{[]string{"serve", "keygen", "--system", "billing", "--destination", "a b"}, `--destination "a b": invalid destination`},
	}
	refusals(t, cases)
	for _, c := range cases {
		if _, err := runBaton(t, c.args...); err != nil && (strings.Contains(err.Error(), "signal") || strings.Contains(err.Error(), "tokenservice")) {
			t.Errorf("%v: %v; want no word of signals or of the token service's config", c.args, err)
		}
	}
}

// --stuck-after of zero or less is refused at start, naming the flag: it
// was taken silently for the default of 10m, so an operator who meant
// "count everything" or mistyped a sign got a threshold they did not set.
func TestServeRefusesNonPositiveStuckAfter(t *testing.T) {
	t.Parallel()
	systems, _ := systemsFile(t, false)
	for _, d := range []time.Duration{0, -5 * time.Minute} {
		o := options(t, systems)
		o.stuckAfter = d
		if _, err := tryStart(t, o); err == nil || !strings.Contains(err.Error(), "--stuck-after must be positive") {
			t.Errorf("--stuck-after %s: %v, want a refusal naming the flag", d, err)
		}
	}
}
