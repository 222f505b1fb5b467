package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/tokenservice"
)

// TestServeRootLatencyUnderPollers measures what pollers of the dashboard
// and /metrics cost the API: the latency of POST /v1/roots, alone and
// while pollers read a large conversation (one system's 200 transitions
// of 1,000 children each) as fast as they can. It runs `baton serve` as a
// process, built from this tree, and side by side the binary named by
// BATON_SERVE_LATENCY_BASELINE, if set (an older baton, for instance). It
// asserts nothing about time; it prints the numbers. Opt in with
// BATON_SERVE_LATENCY=1:
//
//	git archive OLD | tar -x -C /tmp/old && (cd /tmp/old && go build -o /tmp/baton-old ./cmd/baton)
//	BATON_SERVE_LATENCY=1 BATON_SERVE_LATENCY_BASELINE=/tmp/baton-old go test -run ServeRootLatency -v ./cmd/baton
//
// BATON_SERVE_LATENCY_POLLERS sets the number of pollers (default 3);
// BATON_SERVE_LATENCY_POLL_EVERY makes each poller wait that long between
// requests (default 0: as fast as the server answers);
// BATON_SERVE_LATENCY_POLL names what they poll, in turn, from
// conversation (the large one), list, tokens, stats and metrics (default
// all five).
func TestServeRootLatencyUnderPollers(t *testing.T) {
	if os.Getenv("BATON_SERVE_LATENCY") != "1" {
		t.Skip("a measurement, not a check: set BATON_SERVE_LATENCY=1 to run it")
	}
	pollers := 3
	if s := os.Getenv("BATON_SERVE_LATENCY_POLLERS"); s != "" {
		if _, err := fmt.Sscan(s, &pollers); err != nil {
			t.Fatalf("BATON_SERVE_LATENCY_POLLERS=%q: %v", s, err)
		}
	}
	var every time.Duration
	if s := os.Getenv("BATON_SERVE_LATENCY_POLL_EVERY"); s != "" {
		var err error
		if every, err = time.ParseDuration(s); err != nil {
			t.Fatalf("BATON_SERVE_LATENCY_POLL_EVERY=%q: %v", s, err)
		}
	}
	polled := []string{"conversation", "list", "tokens", "stats", "metrics"}
	if s := os.Getenv("BATON_SERVE_LATENCY_POLL"); s != "" {
		polled = strings.Split(s, ",")
	}
	bin := filepath.Join(t.TempDir(), "baton")
	if out, err := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	binaries := [][2]string{{"this tree", bin}}
	if base := os.Getenv("BATON_SERVE_LATENCY_BASELINE"); base != "" {
		binaries = append([][2]string{{"baseline", base}}, binaries...)
	}
	var results []latencyResult
	for _, b := range binaries {
		r := measureRootLatency(t, b[1], pollers, every, polled)
		r.name = b[0]
		results = append(results, r)
	}
	var out strings.Builder
	fmt.Fprintf(&out, "POST /v1/roots latency, %d roots per row; %d pollers (of %s, pausing %s) of a conversation of %d tokens (GOMAXPROCS %d)\n",
		latencyRoots, pollers, strings.Join(polled, ","), every, latencyDepth*latencyWidth+1, runtime.GOMAXPROCS(0))
	fmt.Fprintf(&out, "%-10s %-8s %10s %10s %10s %10s %14s %12s\n", "binary", "pollers", "median", "p90", "p99", "max", "polls/s", "server RSS")
	for _, r := range results {
		for _, row := range []struct {
			label string
			lat   []time.Duration
			polls float64
		}{{"none", r.alone, 0}, {fmt.Sprint(pollers), r.polled, r.pollsPerSecond}} {
			fmt.Fprintf(&out, "%-10s %-8s %10s %10s %10s %10s %14.1f %10.0f MB\n", r.name, row.label, pct(row.lat, 50), pct(row.lat, 90),
				pct(row.lat, 99), pct(row.lat, 100), row.polls, float64(r.rssKB)/1024)
		}
	}
	for _, r := range results {
		fmt.Fprintf(&out, "%s, mean time of one poll:", r.name)
		for _, p := range r.polls {
			fmt.Fprintf(&out, " %s %s;", p.path, p.mean.Round(10*time.Microsecond))
		}
		out.WriteString("\n")
	}
	if len(results) == 2 {
		base, now := results[0], results[1]
		for _, p := range []int{50, 90, 99} {
			fmt.Fprintf(&out, "p%d with pollers: baseline %s, this tree %s: ratio %.2f\n", p, pct(base.polled, p), pct(now.polled, p),
				float64(pct(base.polled, p))/float64(pct(now.polled, p)))
		}
	}
	t.Log("\n" + out.String())
}

const (
	latencyDepth = 200  // transitions in the large conversation
	latencyWidth = 1000 // children of each
	latencyRoots = 300  // roots measured per row
)

type latencyResult struct {
	name           string
	alone, polled  []time.Duration
	pollsPerSecond float64
	polls          []pollTime
	rssKB          int64
}

type pollTime struct {
	path string
	mean time.Duration
}

// measureRootLatency starts bin, builds the large conversation, and times
// roots without and then with pollers.
func measureRootLatency(t *testing.T, bin string, pollers int, every time.Duration, polled []string) latencyResult {
	t.Helper()
	dir := t.TempDir()
	edgeKey, edgeHash := tokenservice.NewAPIKey()
	opsKey, opsHash := tokenservice.NewAPIKey()
	_, billingHash := tokenservice.NewAPIKey()
	systems, _ := json.Marshal(tokenservice.SystemsFile{Systems: []tokenservice.System{
		{Name: "edge", KeySHA256: edgeHash, IssueRoots: true, Destinations: []string{tokenservice.AnyDestination}},
		{Name: "billing", KeySHA256: billingHash},
		{Name: "ops", KeySHA256: opsHash, Observe: true},
	}})
	if err := os.WriteFile(filepath.Join(dir, "systems.json"), systems, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", "--addr", "127.0.0.1:0", "--data-dir", filepath.Join(dir, "data"),
		"--systems", filepath.Join(dir, "systems.json"), "--log-level", "warn")
	// BATON_DASHBOARD_ADDR keeps this tree's binary off port 7452; an older
	// one ignores it.
	cmd.Env = append(os.Environ(), "BATON_SYSTEM=", "BATON_DASHBOARD_ADDR=127.0.0.1:0")
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stopServer := func() {
		if !stopped {
			stopped = true
			cmd.Process.Kill()
			cmd.Wait()
		}
	}
	t.Cleanup(stopServer)
	sc := bufio.NewScanner(stdout)
	if !sc.Scan() {
		t.Fatalf("%s printed no address", bin)
	}
	url, ok := strings.CutPrefix(sc.Text(), "listening on ")
	if !ok {
		t.Fatalf("%s printed %q", bin, sc.Text())
	}
	go io.Copy(io.Discard, stdout)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: pollers + 2}, Timeout: time.Minute}
	post := func(path, key string, body any) {
		data, _ := json.Marshal(body)
		req, _ := http.NewRequest("POST", url+path, bytes.NewReader(data))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+key)
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		msg, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode >= 300 {
			t.Fatalf("POST %s: %d %s", path, res.StatusCode, msg)
		}
	}
	newRoot := func() baton.Token {
		id := baton.NewTokenID()
		return baton.Token{ID: id, Conversation: id, Destination: "billing", Type: "order.place", CreatedAt: time.Now().UTC()}
	}

	// The large conversation: a root, consumed with 1,000 children, of
	// which the first 199 are consumed with 1,000 children each.
	root := newRoot()
	post("/v1/roots", edgeKey, tokenservice.EncodeToken(root))
	var first []baton.Token
	consume := root
	for d := range latencyDepth {
		req := tokenservice.TransitionRequest{Consume: consume.ID.String()}
		var children []baton.Token
		for range latencyWidth {
			id := baton.NewTokenID()
			c := baton.Token{ID: id, Conversation: root.ID, Causation: consume.ID, Destination: "billing", Type: "charge",
				CreatedAt: time.Now().UTC()}
			children = append(children, c)
			req.Create = append(req.Create, tokenservice.EncodeToken(c))
		}
		post("/v1/transitions", edgeKey, req)
		if d == 0 {
			first = children
		}
		consume = first[d]
	}

	timeRoots := func() []time.Duration {
		var lat []time.Duration
		for range latencyRoots {
			tok := tokenservice.EncodeToken(newRoot())
			started := time.Now()
			post("/v1/roots", edgeKey, tok)
			lat = append(lat, time.Since(started))
		}
		return lat
	}
	var r latencyResult
	r.alone = timeRoots()

	known := map[string]string{"conversation": "/api/conversations/" + root.ID.String(), "list": "/api/conversations?limit=50",
		"tokens": "/api/tokens", "stats": "/api/stats", "metrics": "/metrics"}
	var paths []string
	for _, p := range polled {
		path, ok := known[p]
		if !ok {
			t.Fatalf("BATON_SERVE_LATENCY_POLL: %q is none of conversation, list, tokens, stats and metrics", p)
		}
		paths = append(paths, path)
	}
	var polls atomic.Int64
	spent := make([]atomic.Int64, len(paths)) // nanoseconds
	count := make([]atomic.Int64, len(paths))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for p := range pollers {
		wg.Go(func() {
			for i := p; ; i++ {
				select {
				case <-stop:
					return
				case <-time.After(every):
				}
				path := i % len(paths)
				req, _ := http.NewRequest("GET", url+paths[path], nil)
				req.Header.Set("Authorization", "Bearer "+opsKey) // an older baton ignores it
				started := time.Now()
				res, err := client.Do(req)
				if err != nil {
					continue
				}
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
				spent[path].Add(int64(time.Since(started)))
				count[path].Add(1)
				polls.Add(1)
			}
		})
	}
	time.Sleep(time.Second) // let the pollers get going
	polls.Store(0)
	started := time.Now()
	r.polled = timeRoots()
	r.pollsPerSecond = float64(polls.Load()) / time.Since(started).Seconds()
	close(stop)
	wg.Wait()
	for i, p := range paths {
		if n := count[i].Load(); n > 0 {
			r.polls = append(r.polls, pollTime{strings.SplitN(p, "?", 2)[0], time.Duration(spent[i].Load() / n)})
		}
	}
	r.rssKB = rssKB(cmd.Process.Pid)
	stopServer()
	return r
}

// pct returns the p-th percentile of lat.
func pct(lat []time.Duration, p int) time.Duration {
	s := slices.Sorted(slices.Values(lat))
	i := min(len(s)*p/100, len(s)-1)
	return s[i].Round(10 * time.Microsecond)
}

// rssKB returns the resident memory of process pid in KiB (Linux), or 0.
func rssKB(pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			var kb int64
			fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), &kb)
			return kb
		}
	}
	return 0
}
