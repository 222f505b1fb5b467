package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/backend/memory"
	"github.com/batonhq/baton/conformance"
	"github.com/batonhq/baton/engine"
	"github.com/batonhq/baton/httpsignal"
	"github.com/batonhq/baton/internal/testenv"
	"github.com/batonhq/baton/store"
	"github.com/batonhq/baton/tokenservice"
	"github.com/batonhq/baton/tokenservice/client"
)

// Settings of TestConversationAcrossLanguages.
const (
	languageOrders     = 60
	languageBurst      = 6
	languageSettleTime = 2 * time.Minute
)

var buildBaton = sync.OnceValues(func() (string, error) { return goBuild("github.com/batonhq/baton/cmd/baton", "baton") })

// language runs a participant written in one language: the command that
// starts it, serving signals at addr for destination with its entities in
// data, passing each counting signal on to forwardTo at forwardURL (none
// when empty). The token service, key and destination are in its
// environment as BATON_TOKEN_SERVICE, BATON_API_KEY and BATON_DESTINATION.
type language struct {
	name    string
	command func(t *testing.T, addr, data, forwardTo, forwardURL string) (bin string, args, env []string)
}

var goParticipant = language{name: "go", command: func(t *testing.T, addr, data, forwardTo, forwardURL string) (string, []string, []string) {
	bin, err := buildBaton()
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"participant", "--addr", addr, "--data", data}
	var env []string
	if forwardTo != "" {
		env = append(env, "BATON_FORWARD="+forwardTo+"="+forwardURL)
	}
	return bin, args, env
}}

// pythonParticipant is clients/python's example participant.
var pythonParticipant = language{name: "python", command: func(t *testing.T, addr, data, forwardTo, forwardURL string) (string, []string, []string) {
	python, err := exec.LookPath("python3")
	if err != nil {
		if testenv.CI() {
			t.Fatal("python3 is not on PATH (CI=true: the cross-language conversation needs it)")
		}
		t.Skip("SKIPPED: python3 is not on PATH; the cross-language conversation needs it")
	}
	root, err := filepath.Abs(filepath.Join("..", "..", "clients", "python"))
	if err != nil {
		t.Fatal(err)
	}
	env := []string{"PYTHONPATH=" + root, "PYTHONDONTWRITEBYTECODE=1", "BATON_ADDR=" + addr, "BATON_DATA=" + data}
	if forwardTo != "" {
		env = append(env, "BATON_FORWARD="+forwardTo+"="+forwardURL)
	}
	return python, []string{"-m", "examples.participant"}, env
}}

// typescriptParticipant is clients/typescript's example participant,
// compiled by .ci/setup-node (or npm run build).
var typescriptParticipant = language{name: "typescript", command: func(t *testing.T, addr, data, forwardTo, forwardURL string) (string, []string, []string) {
	unavailable := func(msg string) {
		if testenv.CI() {
			t.Fatalf("%s (CI=true: .ci/setup-node installs node and builds the client)", msg)
		}
		t.Skipf("SKIPPED: %s; to run it: cd clients/typescript && npm ci && npm run build", msg)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		unavailable("node is not on PATH")
	}
	script, err := filepath.Abs(filepath.Join("..", "..", "clients", "typescript", "dist", "examples", "participant.js"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(script); err != nil {
		unavailable("the compiled TypeScript participant is missing")
	}
	env := []string{"BATON_ADDR=" + addr, "BATON_DATA=" + data}
	if forwardTo != "" {
		env = append(env, "BATON_FORWARD="+forwardTo+"="+forwardURL)
	}
	return node, []string{script}, env
}}

// hop is one participant of the chain, behind a front that duplicates
// requests and loses answers.
type hop struct {
	destination string
	lang        language
	addr        string // where the participant listens
	slot        *workerSlot
	front       *flakyFront
}

func (h *hop) signalsURL() string { return "http://" + h.addr + "/signals" }

// TestConversationAcrossLanguages runs conversations through a chain of
// participants over HTTP: the shop (a Go engine in the test) sends each
// order's charge to billing (Python), which passes it to shipping
// (TypeScript), which passes it to audit (Go); each hop is its own process
// and only uses the token service. Fronts duplicate requests and lose answers, and the test
// SIGKILLs the participants at random and restarts them. Afterwards every
// hop must have applied every order's signal exactly once, and no token
// may be left.
func TestConversationAcrossLanguages(t *testing.T) {
	t.Parallel()
	chain := []struct {
		destination string
		lang        language
	}{{"billing", pythonParticipant}, {"shipping", typescriptParticipant}, {"audit", goParticipant}}
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()

	tokens := memory.NewTokenStore()
	keys := map[string]string{}
	var systems []tokenservice.System
	for _, name := range []string{"shop", "billing", "shipping", "audit"} {
		key, hash := tokenservice.NewAPIKey()
		keys[name] = key
		systems = append(systems, tokenservice.System{Name: name, KeySHA256: hash, IssueRoots: name == "shop"})
	}
	api, err := tokenservice.New(tokenservice.Config{Tokens: tokens, Systems: systems})
	if err != nil {
		t.Fatal(err)
	}
	tokenService := httptest.NewServer(api)
	t.Cleanup(tokenService.Close)

	hops := make([]*hop, len(chain))
	for i, c := range chain {
		hops[i] = &hop{destination: c.destination, lang: c.lang, addr: freeLoopbackAddr(t)}
		hops[i].front = newFlakyFront(t, hops[i].signalsURL())
	}
	// Every hop's command first: one that is unavailable skips the test
	// before any process runs (a process started before the skip would
	// outlive the test).
	for i, h := range hops {
		var forwardTo, forwardURL string
		if i+1 < len(hops) {
			forwardTo, forwardURL = hops[i+1].destination, hops[i+1].front.url
		}
		bin, args, env := h.lang.command(t, h.addr, t.TempDir(), forwardTo, forwardURL)
		env = append(env, "BATON_TOKEN_SERVICE="+tokenService.URL, "BATON_API_KEY="+keys[h.destination], "BATON_DESTINATION="+h.destination)
		h.slot = &workerSlot{t: t, name: h.lang.name + "-" + h.destination, bin: bin, args: args, env: env, listen: h.addr,
			logPath: fmt.Sprintf("%s/%s.log", t.TempDir(), h.destination), ready: make(chan struct{}), done: make(chan struct{})}
	}
	for _, h := range hops {
		go h.slot.loop()
	}
	defer func() {
		for _, h := range hops {
			h.slot.stop(10 * time.Second)
		}
	}()
	for _, h := range hops {
		if _, err := h.slot.waitReady(ctx); err != nil {
			t.Fatalf("%v; its log ends:\n%s", err, tail(h.slot.logPath, 20))
		}
	}

	shop := startShop(t, ctx, tokenService.URL, keys["shop"], hops[0])
	killing, stopKilling := context.WithCancel(ctx)
	var kills atomic.Int64
	go func() {
		for sleepCtx(killing, time.Duration(400+rand.IntN(800))*time.Millisecond) {
			if hops[rand.IntN(len(hops))].slot.kill() {
				kills.Add(1)
			}
		}
	}()
	entities := placeChainOrders(t, ctx, shop)
	settled := waitNoTokens(ctx, tokens, languageSettleTime)
	stopKilling()
	if !settled {
		t.Errorf("tokens still live after %v: %s", languageSettleTime, liveTokens(ctx, tokens))
	}
	for _, h := range hops {
		if _, err := h.slot.waitReady(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// Probe from the end of the chain back, so that what a probe passes on
	// reaches only hops already counted.
	wrong := 0
	for i := len(hops) - 1; i >= 0; i-- {
		h := hops[i]
		for _, entity := range entities {
			n, err := applications(ctx, tokens, h, entity)
			if err != nil {
				t.Fatalf("%s: counting %s: %v; its log ends:\n%s", h.destination, entity, err, tail(h.slot.logPath, 20))
			}
			if n != 1 && wrong < 20 {
				t.Errorf("%s (%s) applied %s %d times, want 1", h.destination, h.lang.name, entity, n)
			}
			if n != 1 {
				wrong++
			}
		}
	}
	var fronts []string
	for _, h := range hops {
		c := h.slot.counts()
		fronts = append(fronts, fmt.Sprintf("%s/%s: %d kills, %d duplicated, %d answers lost",
			h.destination, h.lang.name, c.kills, h.front.duplicated.Load(), h.front.lost.Load()))
	}
	t.Logf("%d orders through %d hops: %d of %d applications wrong; %s", len(entities), len(hops), wrong,
		len(entities)*len(hops), strings.Join(fronts, "; "))
	if kills.Load() == 0 {
		t.Error("no participant was killed: the run proves nothing about crashes")
	}
}

func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startShop runs the shop: a Go engine whose "order" activity sends the
// order's counting signal to the first hop, and whose sweeper resends what
// a dead hop did not take.
func startShop(t *testing.T, ctx context.Context, tokenService, key string, first *hop) *engine.Engine {
	t.Helper()
	tokens, err := client.New(tokenService, key, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	publisher, err := httpsignal.NewPublisher(httpsignal.PublisherConfig{Endpoints: map[string]string{first.destination: first.front.url}})
	if err != nil {
		t.Fatal(err)
	}
	shop, err := engine.New(engine.Config{Destination: "shop", Tokens: tokens, Entities: memory.NewEntityStore(),
		Dispatch: publisher, SweepAfter: time.Second, SweepInterval: 500 * time.Millisecond, CallTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = engine.Register(shop, engine.Activity[struct{}]{Type: "order",
		Entity: func(sig baton.Signal) (string, error) { return "order-" + sig.Conversation.String(), nil },
		Handle: func(_ context.Context, sig baton.Signal, _ *struct{}) (engine.Effects, error) {
			return engine.Effects{Emit: []baton.Emit{{Destination: first.destination, Type: conformance.DefaultType, Payload: sig.Payload}}}, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = shop.Run(ctx); close(done) }()
	t.Cleanup(func() { <-done })
	return shop
}

// placeChainOrders starts languageOrders conversations in bursts and
// returns the entity each one counts at every hop.
func placeChainOrders(t *testing.T, ctx context.Context, shop *engine.Engine) []string {
	t.Helper()
	var entities []string
	var wg sync.WaitGroup
	for i := range languageOrders {
		entity := fmt.Sprintf("order-%03d-%08x", i, rand.Uint32())
		entities = append(entities, entity)
		payload, _ := json.Marshal(map[string]string{"entity": entity})
		sig, err := shop.IssueRoot(ctx, baton.Emit{Destination: "shop", Type: "order", Payload: payload}, 0)
		if err != nil {
			t.Fatalf("issuing order %d: %v", i, err)
		}
		wg.Go(func() {
			// The shop's own processing; a dispatch that fails is left in
			// the outbox for the sweeper, so one try is enough.
			_, _ = shop.Process(ctx, sig)
		})
		if (i+1)%languageBurst == 0 {
			wg.Wait()
			sleepCtx(ctx, 500*time.Millisecond)
		}
	}
	wg.Wait()
	return entities
}

// waitNoTokens waits until the token store holds no live token.
func waitNoTokens(ctx context.Context, tokens *memory.TokenStore, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if liveTokens(ctx, tokens) == "" {
			return true
		}
		if !sleepCtx(ctx, 250*time.Millisecond) {
			return false
		}
	}
	return false
}

// liveTokens describes the live tokens per destination, or "" for none.
func liveTokens(ctx context.Context, tokens *memory.TokenStore) string {
	var parts []string
	for _, d := range []string{"shop", "billing", "shipping", "audit"} {
		page, _ := tokens.ListByDestination(ctx, d, store.Page{Limit: 1000})
		if len(page) > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", d, len(page)))
		}
	}
	return strings.Join(parts, ", ")
}

// applications asks h how often it applied entity's counting activity: it
// sends one more counting signal (a root of its own) straight to the
// participant until it is applied, and reads the count of the reply.
func applications(ctx context.Context, tokens *memory.TokenStore, h *hop, entity string) (int, error) {
	payload, _ := json.Marshal(map[string]string{"entity": entity})
	now := time.Now()
	root, err := tokens.Issue(ctx, baton.Token{Destination: h.destination, Type: conformance.DefaultType,
		Digest: baton.DigestOf(payload), CreatedAt: now, ExpiresAt: now.Add(time.Hour)})
	if err != nil {
		return 0, err
	}
	sig := baton.Signal{ID: root.ID, Conversation: root.Conversation, Destination: h.destination, Type: conformance.DefaultType, Payload: payload}
	deadline := time.Now().Add(30 * time.Second)
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.signalsURL(), nil)
		if err != nil {
			return 0, err
		}
		if err := httpsignal.EncodeRequest(req, sig); err != nil {
			return 0, err
		}
		resp, err := http.DefaultClient.Do(req)
		var body []byte
		if err == nil {
			body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				var reply struct {
					Count int `json:"count"`
				}
				if err := json.Unmarshal(body, &reply); err != nil {
					return 0, fmt.Errorf("reply %q: %w", body, err)
				}
				return reply.Count - 1, nil
			}
			err = fmt.Errorf("answered %d %s", resp.StatusCode, bytes.TrimSpace(body))
		}
		if time.Now().After(deadline) {
			return 0, err
		}
		sleepCtx(ctx, 200*time.Millisecond)
	}
}

// flakyFront stands in front of a participant: it passes requests on, and
// at random sends a second copy at the same time or drops the answer (the
// request was processed; the sender sees a broken connection).
type flakyFront struct {
	upstream   string
	url        string
	client     *http.Client
	duplicated atomic.Int64
	lost       atomic.Int64
}

func newFlakyFront(t *testing.T, upstream string) *flakyFront {
	f := &flakyFront{upstream: upstream, client: &http.Client{Timeout: 30 * time.Second}}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	f.url = srv.URL + "/signals"
	return f
}

func (f *flakyFront) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, baton.MaxPayloadBytes+1))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	forward := func() (*http.Response, []byte, error) {
		req, err := http.NewRequestWithContext(context.WithoutCancel(r.Context()), r.Method, f.upstream, bytes.NewReader(body))
		if err != nil {
			return nil, nil, err
		}
		req.Header = r.Header.Clone()
		resp, err := f.client.Do(req)
		if err != nil {
			return nil, nil, err
		}
		defer resp.Body.Close()
		answer, err := io.ReadAll(resp.Body)
		return resp, answer, err
	}
	dice := rand.Float64()
	if dice < 0.15 {
		f.duplicated.Add(1)
		go func() { _, _, _ = forward() }()
	}
	resp, answer, err := forward()
	if err != nil {
		w.Header().Set("Retry-After", "1")
		http.Error(w, "front: participant unreachable: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	if dice > 0.9 {
		f.lost.Add(1)
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				conn.Close()
				return
			}
		}
	}
	for k, vs := range resp.Header {
		w.Header()[k] = vs
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(answer)
}
