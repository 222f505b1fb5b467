package main

import (
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/batonhq/baton/backend/memory"
	"github.com/batonhq/baton/tokenservice"
)

// The loopback dashboard address serves the dashboard and the metrics
// without credentials, and nothing else.
func TestServeLoopbackDashboardAddress(t *testing.T) {
	t.Parallel()
	systems, k := systemsFile(t, false)
	o := options(t, systems)
	o.dashboardAddr = "127.0.0.1:0"
	s := start(t, o)
	dash, ok := s.stdout.withPrefix("dashboard on ")
	if !ok || !strings.HasPrefix(dash, "http://127.0.0.1:") {
		t.Fatalf("serve printed %q, want a second line \"dashboard on http://127.0.0.1:PORT\"", s.stdout.all)
	}
	root := issueRoot(t, nil, s.url, k.edge)
	for _, path := range []string{"/", "/api/conversations", "/api/tokens", "/api/stats", "/metrics"} {
		if r := request(t, nil, "GET", dash+path, "", "", nil); r.status != http.StatusOK {
			t.Errorf("GET %s on the dashboard address: %d %.200s; want 200", path, r.status, r.body)
		}
	}
	if r := request(t, nil, "GET", dash+"/api/conversations", "", "", nil); !strings.Contains(r.body, root.ID.String()) {
		t.Errorf("the dashboard address lists no conversation: %s", r.body)
	}
	for _, path := range []string{"/v1/tokens/" + root.ID.String(), "/healthz"} {
		if r := request(t, nil, "GET", dash+path, k.ops, "", nil); r.status != http.StatusNotFound {
			t.Errorf("GET %s on the dashboard address: %d, want 404 (the API is on --addr only)", path, r.status)
		}
	}
	if r := request(t, nil, "GET", dash+"/api/stats", "", "rebind.attacker.example", nil); r.status != http.StatusMisdirectedRequest {
		t.Errorf("a foreign Host on the dashboard address: %d, want 421", r.status)
	}
	if r := request(t, nil, "GET", s.url+"/api/stats", "", "", nil); r.status != http.StatusUnauthorized {
		t.Errorf("the API's address with a dashboard address too: %d without credentials, want 401", r.status)
	}
}

func TestServeAddressChecks(t *testing.T) {
	t.Parallel()
	systems, k := systemsFile(t, false)
	for _, c := range []struct {
		name   string
		change func(*serveOptions)
		want   string // in the error; empty: starts
	}{
		{"plain HTTP on every interface, explicitly", func(o *serveOptions) { o.addr, o.insecurePlainHTTP = "0.0.0.0:0", true }, ""},
		{"dashboard on every interface", func(o *serveOptions) { o.dashboardAddr = "0.0.0.0:0" }, "--dashboard-addr 0.0.0.0:0 is not a loopback address"},
		{"dashboard on every interface, plain HTTP allowed", func(o *serveOptions) { o.addr, o.insecurePlainHTTP, o.dashboardAddr = "0.0.0.0:0", true, ":0" },
			"--dashboard-addr :0 is not a loopback address"},
		{"dashboard on localhost", func(o *serveOptions) { o.dashboardAddr = "localhost:0" }, ""},
		{"a URL as allowed host", func(o *serveOptions) { o.allowedHosts = []string{"https://tokens.example"} }, "--allowed-hosts"},
		{"a wildcard as allowed host", func(o *serveOptions) { o.allowedHosts = []string{"*.example"} }, "--allowed-hosts"},
	} {
		o := options(t, systems)
		c.change(&o)
		_, err := tryStart(t, o)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v, want it to start", c.name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: error %v, want one containing %q", c.name, err, c.want)
		}
	}

	o := options(t, systems)
	o.allowedHosts = []string{"tokens.example", "Other.Example."}
	s := start(t, o)
	for host, status := range map[string]int{"tokens.example:7451": 200, "other.example": 200, "third.example": 421} {
		if r := request(t, nil, "GET", s.url+"/metrics", k.ops, host, nil); r.status != status {
			t.Errorf("Host %s with --allowed-hosts: %d, want %d", host, r.status, status)
		}
	}
}

// Without the dashboard there is no recorder at all; with it, the flags
// set its limits.
func TestServeRecorderFollowsTheDashboardFlags(t *testing.T) {
	t.Parallel()
	systems := []tokenservice.System{{Name: "ops", Observe: true}}
	log := slog.New(slog.DiscardHandler)
	h, err := serveHandler(memory.NewTokenStore(), systems, nil, serveOptions{maxBody: 1 << 20}, parkedOps{}, log)
	if err != nil {
		t.Fatal(err)
	}
	if h.recorder != nil {
		t.Error("--dashboard=false created a recorder")
	}
	h, err = serveHandler(memory.NewTokenStore(), systems, nil, serveOptions{maxBody: 1 << 20, dashboard: true,
		dashboardConversations: 7, dashboardMemoryMiB: 64}, parkedOps{}, log)
	if err != nil {
		t.Fatal(err)
	}
	if l := h.recorder.Limits(); l.Conversations != 7 || l.Bytes != 64<<20 {
		t.Errorf("recorder limits %+v, want 7 conversations and 64 MiB", l)
	}
}
