// Package typescript_test runs the TypeScript client's tests from go test:
// its unit tests under node's test runner, and an end-to-end conversation
// in which a Node service built with the client takes part alongside Go
// services. Both need node and the compiled client (.ci/setup-node builds
// it); without them the tests skip loudly, and fail under CI=true.
package typescript_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/backend/memory"
	"github.com/batonhq/baton/engine"
	"github.com/batonhq/baton/httpsignal"
	"github.com/batonhq/baton/internal/testenv"
	"github.com/batonhq/baton/store"
	"github.com/batonhq/baton/tokenservice"
	"github.com/batonhq/baton/tokenservice/client"
)

var (
	buildOnce sync.Once
	buildErr  error
	buildLog  string
)

// requireNode returns the node binary once the client is compiled: it runs
// the TypeScript compiler if node_modules has it (so the test never runs a
// stale build), else uses the dist/ that .ci/setup-node built. Without
// node or dist it skips loudly, or fails under CI=true.
func requireNode(t *testing.T) string {
	t.Helper()
	unavailable := func(format string, args ...any) {
		t.Helper()
		msg := fmt.Sprintf(format, args...)
		if testenv.CI() {
			t.Fatalf("%s (CI=true: .ci/setup-node must install node and build the client)", msg)
		}
		t.Skipf("SKIPPED: %s; to run it: cd clients/typescript && npm ci && npm run build", msg)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		unavailable("node is not on PATH")
	}
	buildOnce.Do(func() {
		tsc := filepath.Join("node_modules", "typescript", "bin", "tsc")
		if _, err := os.Stat(tsc); err != nil {
			buildLog = "node_modules has no TypeScript compiler; using the existing dist/"
			return
		}
		out, err := exec.Command(node, tsc, "-p", "tsconfig.json").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("tsc: %v\n%s", err, out)
		}
		buildLog = "compiled the TypeScript client with tsc"
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	for _, f := range []string{"dist/src/index.js", "dist/src/participant.js", "dist/examples/billing-service.js", "dist/examples/participant.js", "dist/test/client.test.js"} {
		if _, err := os.Stat(f); err != nil {
			unavailable("the compiled client (%s) is missing", f)
		}
	}
	t.Log(buildLog)
	return node
}

// The TypeScript client's own unit tests, under node's test runner.
func TestTypeScriptUnitTests(t *testing.T) {
	t.Parallel()
	node := requireNode(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, node, "--test", "dist/test/").CombinedOutput()
	if err != nil {
		t.Fatalf("node --test dist/test/: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "# ") {
			t.Log(line)
		}
	}
}

// nodeService is the example billing service running under node.
type nodeService struct {
	url    string
	mu     sync.Mutex
	output bytes.Buffer
}

func (n *nodeService) lines() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.output.String()
}

func startNodeService(t *testing.T, node string, env ...string) *nodeService {
	t.Helper()
	cmd := exec.Command(node, "dist/examples/billing-service.js")
	cmd.Env = append(os.Environ(), env...)
	n := &nodeService{}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	listening := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			n.mu.Lock()
			n.output.WriteString(line + "\n")
			n.mu.Unlock()
			if url, ok := strings.CutPrefix(line, "listening on "); ok {
				listening <- url
			}
		}
	}()
	select {
	case n.url = <-listening:
	case err := <-exited:
		t.Fatalf("the node service exited before listening: %v\n%s", err, n.lines())
	case <-time.After(20 * time.Second):
		t.Fatalf("the node service did not listen within 20s\n%s", n.lines())
	}
	return n
}

// answer is one answer of the node service to a signal.
type answer struct {
	status  int
	outcome string
	body    string
}

// sendSignal posts sig as an HTTP signal, as httpsignal encodes it.
func sendSignal(ctx context.Context, url string, sig baton.Signal) (answer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, nil)
	if err != nil {
		return answer{}, err
	}
	if err := httpsignal.EncodeRequest(req, sig); err != nil {
		return answer{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, resp.Header.Get(httpsignal.HeaderOutcome), string(body)}, nil
}

// copiesPublisher delivers each signal over HTTP as `copies` concurrent
// requests, as an at-least-once medium may, and records the answers.
type copiesPublisher struct {
	url    string
	mu     sync.Mutex
	copies int
	seen   []answer
}

func (p *copiesPublisher) setCopies(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.copies, p.seen = n, nil
}

func (p *copiesPublisher) answers() []answer {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]answer(nil), p.seen...)
}

func (p *copiesPublisher) Publish(ctx context.Context, sig baton.Signal) error {
	p.mu.Lock()
	copies := max(p.copies, 1)
	p.mu.Unlock()
	answers := make([]answer, copies)
	errs := make([]error, copies)
	var wg sync.WaitGroup
	for i := range copies {
		wg.Go(func() { answers[i], errs[i] = sendSignal(ctx, p.url, sig) })
	}
	wg.Wait()
	p.mu.Lock()
	p.seen = append(p.seen, answers...)
	p.mu.Unlock()
	for i, a := range answers {
		if errs[i] != nil {
			return errs[i]
		}
		if a.status/100 != 2 && a.outcome != httpsignal.OutcomeDuplicate {
			return fmt.Errorf("node service answered %d: %s", a.status, a.body)
		}
	}
	return nil
}

// signalHandler serves a Go engine over HTTP: one signal per request.
func signalHandler(eng *engine.Engine) http.Handler {
	outcomes := map[engine.Outcome]string{engine.Applied: httpsignal.OutcomeApplied,
		engine.Completed: httpsignal.OutcomeReplayed, engine.Duplicate: httpsignal.OutcomeDuplicate}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sig, err := httpsignal.DecodeRequest(r, 0)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		res, err := eng.Process(r.Context(), sig)
		switch {
		case engine.IsPermanent(err):
			http.Error(w, err.Error(), http.StatusUnprocessableEntity)
			return
		case err != nil:
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set(httpsignal.HeaderOutcome, outcomes[res.Outcome])
		w.WriteHeader(http.StatusOK)
		w.Write(res.Reply)
	})
}

type order struct {
	Placed bool   `json:"placed"`
	ID     string `json:"id"`
}

type shipment struct {
	Shipments int    `json:"shipments"`
	Invoice   string `json:"invoice"`
}

// A conversation across three systems and two languages: a Go engine
// (orders) emits a signal over HTTP to the Node billing service, which
// consumes its token through the token service in the transition that
// creates the next signal's token, and sends that signal over HTTP to a Go
// engine (shipping). Duplicates sent to the Node service are dropped.
func TestNodeServiceInConversation(t *testing.T) {
	t.Parallel()
	node := requireNode(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	// The token service, over a memory store the test inspects.
	tokens := memory.NewTokenStore()
	keys := map[string]string{}
	var systems []tokenservice.System
	for _, name := range []string{"orders", "billing", "shipping"} {
		key, hash := tokenservice.NewAPIKey()
		keys[name] = key
		systems = append(systems, tokenservice.System{Name: name, KeySHA256: hash, IssueRoots: name == "orders"})
	}
	svc, err := tokenservice.New(tokenservice.Config{Tokens: tokens, Systems: systems})
	if err != nil {
		t.Fatal(err)
	}
	tokenServer := httptest.NewServer(svc)
	defer tokenServer.Close()
	tokenClient := func(system string) *client.Client {
		c, err := client.New(tokenServer.URL, keys[system], client.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}

	// shipping: a Go engine behind HTTP.
	shippingEntities := memory.NewEntityStore()
	shipping, err := engine.New(engine.Config{Destination: "shipping", Tokens: tokenClient("shipping"),
		Entities: shippingEntities, Dispatch: engine.Routes{}})
	if err != nil {
		t.Fatal(err)
	}
	err = engine.Register(shipping, engine.Activity[shipment]{
		Type:   "invoice.issued",
		Entity: func(sig baton.Signal) (string, error) { return "shipment-" + sig.Conversation.String(), nil },
		Handle: func(_ context.Context, sig baton.Signal, s *shipment) (engine.Effects, error) {
			var inv struct{ Invoice string }
			if err := json.Unmarshal(sig.Payload, &inv); err != nil {
				return engine.Effects{}, engine.Permanent(err)
			}
			s.Shipments++
			s.Invoice = inv.Invoice
			return engine.Effects{Reply: []byte(`{"shipped":true}`)}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	shippingServer := httptest.NewServer(signalHandler(shipping))
	defer shippingServer.Close()

	// billing: the Node service.
	billing := startNodeService(t, node, "BATON_TOKEN_SERVICE_URL="+tokenServer.URL, "BATON_API_KEY="+keys["billing"],
		"SHIPPING_URL="+shippingServer.URL, "PORT=0")
	defer func() { t.Logf("node service output:\n%s", billing.lines()) }()
	billingURL := billing.url + "/signals"

	// orders: a Go engine that dispatches to billing over HTTP.
	toBilling := &copiesPublisher{url: billingURL}
	orders, err := engine.New(engine.Config{Destination: "orders", Tokens: tokenClient("orders"),
		Entities: memory.NewEntityStore(), Dispatch: engine.Routes{"billing": toBilling}})
	if err != nil {
		t.Fatal(err)
	}
	err = engine.Register(orders, engine.Activity[order]{
		Type:   "order.place",
		Entity: func(sig baton.Signal) (string, error) { return "order-" + sig.Conversation.String(), nil },
		Handle: func(_ context.Context, sig baton.Signal, o *order) (engine.Effects, error) {
			o.Placed, o.ID = true, "o-"+sig.Conversation.String()[:8]
			payload, _ := json.Marshal(map[string]any{"order": o.ID, "amount": 42})
			return engine.Effects{Emit: []baton.Emit{{Destination: "billing", Type: "invoice.request", Payload: payload}}}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}

	shipmentOf := func(conversation baton.TokenID) shipment {
		t.Helper()
		ent, err := shippingEntities.Load(ctx, "shipment-"+conversation.String())
		if err != nil {
			t.Fatal(err)
		}
		var s shipment
		if len(ent.State) > 0 {
			if err := json.Unmarshal(ent.State, &s); err != nil {
				t.Fatal(err)
			}
		}
		if len(ent.Outbox) != 0 {
			t.Errorf("shipping's entity still has %d outbox entries", len(ent.Outbox))
		}
		return s
	}
	quiet := func(when string) {
		t.Helper()
		if n := tokens.Len(); n != 0 {
			live, _ := tokens.ListByDestination(ctx, "shipping", store.Page{})
			t.Fatalf("%s: %d tokens still live (%d for shipping), want none", when, n, len(live))
		}
	}
	place := func(copies int) (baton.Signal, []answer) {
		t.Helper()
		toBilling.setCopies(copies)
		root, err := orders.IssueRoot(ctx, baton.Emit{Destination: "orders", Type: "order.place"}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		res, err := orders.Process(ctx, root)
		if err != nil || res.Outcome != engine.Applied || len(res.Emitted) != 1 {
			t.Fatalf("orders.Process(root) = %+v, %v", res, err)
		}
		return res.Emitted[0], toBilling.answers()
	}

	// One conversation, one copy of each signal.
	invoiceRequest, answers := place(1)
	conversation := invoiceRequest.Conversation
	if len(answers) != 1 || answers[0].outcome != httpsignal.OutcomeApplied {
		t.Fatalf("the node service answered %+v, want applied", answers)
	}
	t.Logf("orders -> billing (node): %d %s %s", answers[0].status, answers[0].outcome, strings.TrimSpace(answers[0].body))
	if s := shipmentOf(conversation); s.Shipments != 1 || s.Invoice != "INV-"+conversation.String()[:8] {
		t.Fatalf("shipping state %+v, want one shipment of invoice INV-%s", s, conversation.String()[:8])
	}
	quiet("after the conversation")

	// Duplicates of the signal the node service already processed are
	// dropped: its token is gone.
	for i := range 3 {
		a, err := sendSignal(ctx, billingURL, invoiceRequest)
		if err != nil {
			t.Fatal(err)
		}
		if a.status != http.StatusConflict || a.outcome != httpsignal.OutcomeDuplicate || !strings.Contains(a.body, httpsignal.ProblemAlreadyProcessed) {
			t.Fatalf("duplicate %d: %d %q %s, want 409 duplicate with problem type already-processed (docs/protocol.md 5.2)", i, a.status, a.outcome, a.body)
		}
		if i == 0 {
			t.Logf("duplicate -> billing (node): %d %s %s", a.status, a.outcome, strings.TrimSpace(a.body))
		}
	}
	// The root again: orders drops it itself.
	if res, err := orders.Process(ctx, baton.Signal{ID: conversation, Conversation: conversation, Destination: "orders", Type: "order.place"}); err != nil || res.Outcome != engine.Duplicate {
		t.Errorf("orders processing its root again = %+v, %v; want Duplicate", res, err)
	}
	// A forged signal (a well-formed token id nobody issued) is dropped too.
	forged := invoiceRequest
	forged.ID = baton.NewTokenID()
	if a, err := sendSignal(ctx, billingURL, forged); err != nil || a.outcome != httpsignal.OutcomeDuplicate {
		t.Errorf("forged signal to node: %+v, %v; want duplicate", a, err)
	}
	// A signal carrying another destination's token: the token service
	// refuses the node service (403), and the token stays live.
	foreign := baton.Signal{Destination: "billing", Type: "invoice.request", Payload: []byte(`{}`)}
	ordersToken := foreign.Token()
	ordersToken.Destination = "orders"
	ordersToken, err = tokens.Issue(ctx, ordersToken)
	if err != nil {
		t.Fatal(err)
	}
	foreign.ID, foreign.Conversation = ordersToken.ID, ordersToken.Conversation
	if a, err := sendSignal(ctx, billingURL, foreign); err != nil || a.status != http.StatusForbidden {
		t.Errorf("signal with orders' token to node: %+v, %v; want 403", a, err)
	} else {
		t.Logf("orders' token -> billing (node): %d %s", a.status, strings.TrimSpace(a.body))
	}
	if _, err := tokens.Get(ctx, ordersToken.ID); err != nil {
		t.Errorf("orders' token was consumed by the node service: %v", err)
	}
	tokens.Transition(ctx, ordersToken.ID, nil)
	if s := shipmentOf(conversation); s.Shipments != 1 {
		t.Fatalf("after duplicates shipping has %d shipments, want 1", s.Shipments)
	}
	quiet("after the duplicates")

	// A second conversation whose signal reaches the node service as four
	// concurrent copies: exactly one is applied.
	invoiceRequest, answers = place(4)
	applied := 0
	var outcomes []string
	for _, a := range answers {
		outcomes = append(outcomes, a.outcome)
		if a.outcome == httpsignal.OutcomeApplied {
			applied++
		} else if a.outcome != httpsignal.OutcomeDuplicate {
			t.Errorf("copy answered %d %q %s", a.status, a.outcome, a.body)
		}
	}
	t.Logf("4 concurrent copies -> billing (node): %v", outcomes)
	if applied != 1 {
		t.Fatalf("%d of 4 concurrent copies were applied, want 1", applied)
	}
	if s := shipmentOf(invoiceRequest.Conversation); s.Shipments != 1 {
		t.Fatalf("shipping has %d shipments for the second conversation, want 1", s.Shipments)
	}
	quiet("after the second conversation")
}
