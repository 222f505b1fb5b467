package tokenservice_test

import (
	"context"
	"errors"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/backend/memory"
	"github.com/batonhq/baton/backend/split"
	"github.com/batonhq/baton/store"
	"github.com/batonhq/baton/tokenservice"
)

// oneByOneStore hides the memory store's store.TokenBatcher, so that the
// service runs a batch one operation after another.
type oneByOneStore struct{ store.TokenStore }

// storeKinds runs a test over a store with store.TokenBatcher and over one
// without.
var storeKinds = []struct {
	name   string
	mutate func(*tokenservice.Config)
}{
	{"batcher", func(*tokenservice.Config) {}},
	{"one by one", func(c *tokenservice.Config) { c.Tokens = oneByOneStore{c.Tokens} }},
}

// Each id of a read gets the token, or the problem GET /v1/tokens/{id}
// answers for it.
func TestReadTokens(t *testing.T) {
	t.Parallel()
	for _, kind := range storeKinds {
		t.Run(kind.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, kind.mutate)
			ctx := t.Context()
			orders := issueRoot(t, f.url, f.orders, rootToken("orders"))
			gone := issueRoot(t, f.url, f.orders, rootToken("orders"))
			billing := childOf(gone, "billing")
			if ok, err := f.tokens.Transition(ctx, gone.ID, []baton.Token{billing}); err != nil || !ok {
				t.Fatal(ok, err)
			}
			never := baton.NewTokenID()
			ids := []baton.TokenID{billing.ID, orders.ID, gone.ID, never, billing.ID}
			for _, c := range []struct {
				system, key string
				live        []bool // whether each id is answered with its token
			}{
				{"billing", f.billing, []bool{true, false, false, false, true}},
				{"ops (observer)", f.ops, []bool{true, true, false, false, true}},
			} {
				var answer tokenservice.TokenReadResponse
				call(t, "POST", f.url+"/v1/tokens/read", c.key, readBody(ids...)).decode(t, 200, &answer)
				if len(answer.Results) != len(ids) {
					t.Fatalf("%s: %d results for %d ids", c.system, len(answer.Results), len(ids))
				}
				for i, id := range ids {
					res := answer.Results[i]
					single := call(t, "GET", f.url+"/v1/tokens/"+id.String(), c.key, nil)
					if c.live[i] {
						var want tokenservice.Token
						single.decode(t, 200, &want)
						if res.Problem != nil || res.Token == nil || *res.Token != want {
							t.Errorf("%s: result %d = %+v, want token %+v", c.system, i, res, want)
						}
						continue
					}
					want := single.problem(t)
					if res.Token != nil || res.Problem == nil || *res.Problem != want {
						t.Errorf("%s: result %d = %+v, want the problem GET answers, %+v", c.system, i, res, want)
					}
				}
			}
		})
	}
}

// Each transition of a batch is answered as POST /v1/transitions answers
// it alone; the refused ones stop none of the others.
func TestTransitionBatch(t *testing.T) {
	t.Parallel()
	for _, kind := range storeKinds {
		t.Run(kind.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, kind.mutate)
			ctx := t.Context()
			var roots []baton.Token
			for range 6 {
				roots = append(roots, issueRoot(t, f.url, f.orders, rootToken("orders")))
			}
			live, gone, foreign, clashing, existing, bare := roots[0], roots[1], roots[2], roots[3], roots[4], roots[5]
			billing := childOf(gone, "billing")
			if ok, err := f.tokens.Transition(ctx, gone.ID, []baton.Token{billing}); err != nil || !ok {
				t.Fatal(ok, err)
			}
			liveChild := childOf(live, "billing")
			liveChild.CreatedAt = time.Time{} // the service's time
			stray := childOf(foreign, "billing")
			stray.Conversation = baton.NewTokenID()
			clash := childOf(clashing, "billing")
			clash.ID = existing.ID

			body := batchBody(
				transitionBody(live.ID, liveChild),
				transitionBody(gone.ID, childOf(gone, "billing")),
				transitionBody(billing.ID),
				transitionBody(foreign.ID, stray),
				transitionBody(clashing.ID, clash),
				transitionBody(bare.ID),
			)
			var answer tokenservice.TransitionBatchResponse
			call(t, "POST", f.url+"/v1/transitions/batch", f.orders, body).decode(t, 200, &answer)
			want := []struct {
				consumed bool
				problem  string // type, or empty for consumed
				status   int
			}{
				{consumed: true},
				{consumed: false},
				{problem: tokenservice.ProblemNotYourToken, status: 403},
				{problem: tokenservice.ProblemNotAChild, status: 403},
				{problem: tokenservice.ProblemExists, status: 409},
				{consumed: true},
			}
			if len(answer.Results) != len(want) {
				t.Fatalf("%d results for %d transitions: %+v", len(answer.Results), len(want), answer.Results)
			}
			for i, w := range want {
				res := answer.Results[i]
				switch {
				case w.problem == "":
					if res.Problem != nil || res.Consumed == nil || *res.Consumed != w.consumed {
						t.Errorf("result %d = %+v, want consumed=%t", i, res, w.consumed)
					}
				case res.Consumed != nil || res.Problem == nil:
					t.Errorf("result %d = %+v, want a problem %s", i, res, w.problem)
				case res.Problem.Type != w.problem || res.Problem.Status != w.status || res.Problem.Token != body.Transitions[i].Consume:
					t.Errorf("result %d: problem %+v, want type %s, status %d, token %s", i, *res.Problem, w.problem, w.status, body.Transitions[i].Consume)
				}
			}
			requireAbsent(t, f, live.ID, bare.ID, stray.ID)
			requireLive(t, f, liveChild.ID, billing.ID, foreign.ID, clashing.ID, existing.ID)
			if f.tokens.Len() != 5 {
				t.Errorf("the store holds %d tokens, want 5", f.tokens.Len())
			}
			if stored, _ := f.tokens.Get(ctx, liveChild.ID); time.Since(stored.CreatedAt) > time.Minute {
				t.Errorf("a child sent without created_at has %s, want the service's time", stored.CreatedAt)
			}
		})
	}
}

// failingTransitions fails the transitions of chosen tokens, and runs a
// batch one transition after another.
type failingTransitions struct {
	store.TokenStore
	fail map[baton.TokenID]error
}

func (s failingTransitions) Transition(ctx context.Context, consume baton.TokenID, create []baton.Token) (bool, error) {
	if err := s.fail[consume]; err != nil {
		return false, err
	}
	return s.TokenStore.Transition(ctx, consume, create)
}

// A store error is the problem of its transition alone, with the status
// that keeps its meaning.
func TestTransitionBatchStoreErrors(t *testing.T) {
	t.Parallel()
	fail := make(map[baton.TokenID]error)
	f := newFixture(t, func(c *tokenservice.Config) { c.Tokens = failingTransitions{c.Tokens, fail} })
	unavailable := issueRoot(t, f.url, f.orders, rootToken("orders"))
	unknown := issueRoot(t, f.url, f.orders, rootToken("orders"))
	fine := issueRoot(t, f.url, f.orders, rootToken("orders"))
	fail[unavailable.ID] = store.ErrNotApplied
	fail[unknown.ID] = errors.New("connection reset after the command was sent")

	var answer tokenservice.TransitionBatchResponse
	call(t, "POST", f.url+"/v1/transitions/batch", f.orders,
		batchBody(transitionBody(unavailable.ID), transitionBody(unknown.ID), transitionBody(fine.ID))).decode(t, 200, &answer)
	if len(answer.Results) != 3 {
		t.Fatalf("%d results, want 3", len(answer.Results))
	}
	for i, want := range []string{tokenservice.ProblemNotApplied, tokenservice.ProblemOutcomeUnknown} {
		if p := answer.Results[i].Problem; p == nil || p.Type != want {
			t.Errorf("result %d = %+v, want problem %s", i, answer.Results[i], want)
		}
	}
	if c := answer.Results[2].Consumed; c == nil || !*c {
		t.Errorf("result 2 = %+v, want consumed", answer.Results[2])
	}
	requireAbsent(t, f, fine.ID)
}

// A store that is down refuses a batch whole: nothing was applied.
func TestBatchStoreDown(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	root := issueRoot(t, f.url, f.orders, rootToken("orders"))
	f.tokens.Close()
	call(t, "POST", f.url+"/v1/tokens/read", f.orders, readBody(root.ID)).wantProblem(t, 503, tokenservice.ProblemNotApplied)
	call(t, "POST", f.url+"/v1/transitions/batch", f.orders, batchBody(transitionBody(root.ID))).wantProblem(t, 503, tokenservice.ProblemNotApplied)
}

// A batch that is invalid as a whole is refused whole: nothing is applied,
// its valid transitions included.
func TestBatchRefusedWhole(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	p := issueRoot(t, f.url, f.orders, rootToken("orders"))
	q := issueRoot(t, f.url, f.orders, rootToken("orders"))
	pKid := childOf(p, "billing")
	valid := transitionBody(p.ID, pKid)
	repeated := childOf(q, "billing")
	repeated.ID = pKid.ID
	tooMany := batchBody(valid)
	for range tokenservice.MaxBatch {
		tooMany.Transitions = append(tooMany.Transitions, transitionBody(baton.NewTokenID()))
	}
	for name, body := range map[string]any{
		"a token consumed twice":      batchBody(valid, transitionBody(p.ID)),
		"a child created twice":       batchBody(valid, transitionBody(q.ID, repeated)),
		"a child consumed":            batchBody(valid, transitionBody(pKid.ID)),
		"too many transitions":        tooMany,
		"a malformed id":              `{"transitions":[{"consume":"` + p.ID.String() + `"},{"consume":"xyz"}]}`,
		"no transitions":              `{}`,
		"null transitions":            `{"transitions":null}`,
		"an unknown field":            `{"transitions":[],"atomic":true}`,
		"an unknown transition field": `{"transitions":[{"consume":"` + p.ID.String() + `","consumed":true}]}`,
	} {
		a := call(t, "POST", f.url+"/v1/transitions/batch", f.orders, body)
		if a.status != 400 || a.problem(t).Type != tokenservice.ProblemInvalid {
			t.Errorf("%s: status %d, body %s; want 400 %s", name, a.status, a.body, tokenservice.ProblemInvalid)
		}
	}
	requireLive(t, f, p.ID, q.ID)
	if f.tokens.Len() != 2 {
		t.Errorf("refused batches changed the store: %d tokens, want 2", f.tokens.Len())
	}

	tooManyIDs := make([]baton.TokenID, tokenservice.MaxBatch+1)
	for i := range tooManyIDs {
		tooManyIDs[i] = p.ID
	}
	for name, body := range map[string]any{
		"too many ids":     readBody(tooManyIDs...),
		"a malformed id":   `{"ids":["` + p.ID.String() + `","xyz"]}`,
		"the zero id":      `{"ids":["00000000000000000000000000000000"]}`,
		"no ids":           `{}`,
		"an unknown field": `{"ids":[],"limit":1}`,
	} {
		a := call(t, "POST", f.url+"/v1/tokens/read", f.orders, body)
		if a.status != 400 || a.problem(t).Type != tokenservice.ProblemInvalid {
			t.Errorf("read with %s: status %d, body %s; want 400 %s", name, a.status, a.body, tokenservice.ProblemInvalid)
		}
	}
	// MaxBatch items are not too many.
	var answer tokenservice.TokenReadResponse
	call(t, "POST", f.url+"/v1/tokens/read", f.orders, readBody(tooManyIDs[1:]...)).decode(t, 200, &answer)
	if len(answer.Results) != tokenservice.MaxBatch {
		t.Errorf("%d results for %d ids", len(answer.Results), tokenservice.MaxBatch)
	}
}

// An empty batch is answered with no results.
func TestBatchEmpty(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	for path, body := range map[string]string{
		"/v1/tokens/read":       `{"ids":[]}`,
		"/v1/transitions/batch": `{"transitions":[]}`,
	} {
		a := call(t, "POST", f.url+path, f.billing, body)
		if a.status != 200 || strings.TrimSpace(string(a.body)) != `{"results":[]}` {
			t.Errorf("%s with %s: %d %s, want 200 {\"results\":[]}", path, body, a.status, a.body)
		}
	}
}

// The batch routes need credentials as every other route does.
func TestBatchUnauthenticated(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	root := issueRoot(t, f.url, f.orders, rootToken("orders"))
	for path, body := range map[string]any{
		"/v1/tokens/read":       readBody(root.ID),
		"/v1/transitions/batch": batchBody(transitionBody(root.ID)),
	} {
		for _, key := range []string{"", "bk_not-a-registered-key"} {
			call(t, "POST", f.url+path, key, body).wantProblem(t, 401, tokenservice.ProblemUnauthorized)
		}
	}
	requireLive(t, f, root.ID)
}

func readBody(ids ...baton.TokenID) tokenservice.TokenReadRequest {
	req := tokenservice.TokenReadRequest{IDs: []string{}}
	for _, id := range ids {
		req.IDs = append(req.IDs, id.String())
	}
	return req
}

func batchBody(transitions ...tokenservice.TransitionRequest) tokenservice.TransitionBatchRequest {
	return tokenservice.TransitionBatchRequest{Transitions: transitions}
}

func requireLive(t *testing.T, f *fixture, ids ...baton.TokenID) {
	t.Helper()
	for _, id := range ids {
		if _, err := f.tokens.Get(t.Context(), id); err != nil {
			t.Errorf("token %s: %v, want it live", id, err)
		}
	}
}

func requireAbsent(t *testing.T, f *fixture, ids ...baton.TokenID) {
	t.Helper()
	for _, id := range ids {
		if _, err := f.tokens.Get(t.Context(), id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("token %s: %v, want it not live", id, err)
		}
	}
}

// countingPart is a part of a split store that counts the calls it gets:
// batch calls and single reads or transitions.
type countingPart struct {
	*memory.TokenStore
	single, batches *atomic.Int64
}

func (c countingPart) Get(ctx context.Context, id baton.TokenID) (baton.Token, error) {
	c.single.Add(1)
	return c.TokenStore.Get(ctx, id)
}

func (c countingPart) Transition(ctx context.Context, id baton.TokenID, create []baton.Token) (bool, error) {
	c.single.Add(1)
	return c.TokenStore.Transition(ctx, id, create)
}

func (c countingPart) GetTokens(ctx context.Context, ids []baton.TokenID) ([]baton.Token, []error, error) {
	c.batches.Add(1)
	return c.TokenStore.GetTokens(ctx, ids)
}

func (c countingPart) TransitionTokens(ctx context.Context, ts []store.TokenTransition) ([]bool, []error, error) {
	c.batches.Add(1)
	return c.TokenStore.TransitionTokens(ctx, ts)
}

// overCountedParts is a service over a store split over three parts that
// count their calls of one token and of a batch.
func overCountedParts(t *testing.T) (f *fixture, parts int, single, batches *atomic.Int64) {
	single, batches = new(atomic.Int64), new(atomic.Int64)
	var stores []store.TokenStore
	for range 3 {
		stores = append(stores, countingPart{memory.NewTokenStore(), single, batches})
	}
	tokens, err := split.Open(t.Context(), stores...)
	if err != nil {
		t.Fatal(err)
	}
	return newFixture(t, func(c *tokenservice.Config) { c.Tokens = tokens }), len(stores), single, batches
}

// The service knows each consumed token's conversation once it read it, and
// names it to the store: over a store split by conversation, a batch of
// leaf transitions (which have no children to tell their conversation by)
// then costs one call per part, not a search of every part for each.
func TestTransitionBatchNamesConversations(t *testing.T) {
	t.Parallel()
	f, parts, single, batches := overCountedParts(t)
	var leaves []tokenservice.TransitionRequest
	for range 60 {
		root := issueRoot(t, f.url, f.orders, rootToken("billing"))
		leaves = append(leaves, transitionBody(root.ID))
	}
	single.Store(0)
	batches.Store(0)
	var answer tokenservice.TransitionBatchResponse
	call(t, "POST", f.url+"/v1/transitions/batch", f.billing, batchBody(leaves...)).decode(t, 200, &answer)
	for i, res := range answer.Results {
		if res.Consumed == nil || !*res.Consumed {
			t.Fatalf("result %d = %+v, want consumed", i, res)
		}
	}
	// One read and one transition call per part, at most.
	if single.Load() != 0 || batches.Load() > 2*int64(parts) {
		t.Errorf("60 leaf transitions over %d parts made %d batch calls and %d single calls; want at most %d batch calls and no single one",
			parts, batches.Load(), single.Load(), 2*parts)
	}
}

// A body within the size limit but full of tiny items is refused as soon
// as a list passes its limit, before the rest is built: before, a couple of
// megabytes of "{}" cost hundreds of megabytes to refuse. Not parallel, so
// that other tests' allocations do not count.
func TestLongListsAreRefusedEarly(t *testing.T) {
	f := newFixture(t)
	fill := func(prefix, item, suffix string) string {
		n := (tokenservice.DefaultMaxBodyBytes - len(prefix) - len(suffix)) / (len(item) + 1)
		return prefix + strings.TrimSuffix(strings.Repeat(item+",", n), ",") + suffix
	}
	for _, c := range []struct {
		name, path, body, says string
	}{
		{"transitions", "/v1/transitions/batch", fill(`{"transitions":[`, `{}`, `]}`), "more than 100 transitions"},
		{"children in a batch", "/v1/transitions/batch", fill(`{"transitions":[{"consume":"`+baton.NewTokenID().String()+`","create":[`, `{}`, `]}]}`), "more than 1000 tokens"},
		{"children", "/v1/transitions", fill(`{"consume":"`+baton.NewTokenID().String()+`","create":[`, `{}`, `]}`), "more than 1000 tokens"},
		{"ids", "/v1/tokens/read", fill(`{"ids":[`, `""`, `]}`), "more than 100 ids"},
	} {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		p := call(t, "POST", f.url+c.path, f.billing, c.body).wantProblem(t, 400, tokenservice.ProblemInvalid)
		runtime.ReadMemStats(&after)
		if !strings.Contains(p.Detail, c.says) {
			t.Errorf("%s: the refusal says %q, want it to say %q", c.name, p.Detail, c.says)
		}
		// The body itself is 2 MiB, and is copied a few times on its way.
		if allocated := after.TotalAlloc - before.TotalAlloc; allocated > 32<<20 {
			t.Errorf("%s: refusing a body of %d bytes allocated %d MiB", c.name, len(c.body), allocated>>20)
		}
	}
}

// Batch reads and transitions that name their tokens' conversations are
// read from those conversations' parts only: the tokens of one
// conversation cost one read of one part, where without the hints every
// part is read. Answers are the same either way, also for a wrong hint.
func TestBatchHintsReadOnePart(t *testing.T) {
	t.Parallel()
	f, parts, single, batches := overCountedParts(t)
	root := issueRoot(t, f.url, f.orders, rootToken("billing"))
	var children []baton.Token
	for range 5 {
		c := rootToken("billing")
		c.ID, c.Conversation, c.Causation = baton.NewTokenID(), root.Conversation, root.ID
		children = append(children, c)
	}
	var consumed tokenservice.TransitionResponse
	call(t, "POST", f.url+"/v1/transitions", f.billing, transitionBody(root.ID, children...)).decode(t, 200, &consumed)
	if !consumed.Consumed {
		t.Fatal("the root was not consumed")
	}
	wrong := baton.NewTokenID()
	for split.PartOf(wrong, parts) == split.PartOf(root.Conversation, parts) {
		wrong = baton.NewTokenID()
	}
	read := tokenservice.TokenReadRequest{}
	for _, c := range children {
		read.IDs = append(read.IDs, c.ID.String())
	}
	hints := func(conversation baton.TokenID) http.Header {
		if conversation.IsZero() {
			return nil
		}
		return http.Header{tokenservice.ConversationsHeader: {strings.TrimSuffix(strings.Repeat(conversation.String()+",", len(children)), ",")}}
	}
	for _, c := range []struct {
		name   string
		header http.Header
		reads  int64
	}{
		{"hinted", hints(root.Conversation), 1},
		{"unhinted", nil, 3},
		{"wrongly hinted", hints(wrong), 3},
	} {
		batches.Store(0)
		var answer tokenservice.TokenReadResponse
		callWithHeader(t, "POST", f.url+"/v1/tokens/read", f.billing, c.header, read).decode(t, 200, &answer)
		for i, res := range answer.Results {
			if res.Token == nil || res.Token.ID != children[i].ID.String() {
				t.Errorf("%s: result %d = %+v, want token %s", c.name, i, res, children[i].ID)
			}
		}
		if n := batches.Load(); n != c.reads {
			t.Errorf("%s: reading one conversation's %d tokens made %d batch calls, want %d", c.name, len(children), n, c.reads)
		}
	}

	// A transition batch's hints: one read of one part, one transition call.
	var leaves []tokenservice.TransitionRequest
	for _, c := range children {
		leaves = append(leaves, transitionBody(c.ID))
	}
	single.Store(0)
	batches.Store(0)
	var answer tokenservice.TransitionBatchResponse
	callWithHeader(t, "POST", f.url+"/v1/transitions/batch", f.billing, hints(root.Conversation), batchBody(leaves...)).decode(t, 200, &answer)
	for i, res := range answer.Results {
		if res.Consumed == nil || !*res.Consumed {
			t.Errorf("transition %d = %+v, want consumed", i, res)
		}
	}
	if single.Load() != 0 || batches.Load() != 2 {
		t.Errorf("a hinted batch of one conversation's leaves made %d batch and %d single calls, want 2 and 0", batches.Load(), single.Load())
	}

	// A header that does not give one entry for each item is refused.
	for _, header := range []http.Header{
		{tokenservice.ConversationsHeader: {root.Conversation.String()}},
		{tokenservice.ConversationsHeader: {"x" + strings.Repeat(",", len(children)-1)}},
		{tokenservice.ConversationsHeader: {strings.Repeat(",", len(children)-1), strings.Repeat(",", len(children)-1)}},
	} {
		callWithHeader(t, "POST", f.url+"/v1/tokens/read", f.billing, header, read).wantProblem(t, 400, tokenservice.ProblemInvalid)
	}
}

// A list that is not an array is refused in a line that names what it is,
// rather than one that holds the whole value: a megabyte in its place made
// a refusal of a megabyte.
func TestListThatIsNoArrayIsNotEchoed(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	big := strings.Repeat("A", 1<<20)
	for _, c := range []struct{ path, body, says string }{
		{"/v1/transitions", `{"consume":"` + baton.NewTokenID().String() + `","create":{"x":"` + big + `"}}`, "got an object"},
		{"/v1/transitions/batch", `{"transitions":"` + big + `"}`, "got a string"},
		{"/v1/tokens/read", `{"ids":12}`, "got a number"},
	} {
		p := call(t, "POST", f.url+c.path, f.billing, c.body).wantProblem(t, 400, tokenservice.ProblemInvalid)
		if len(p.Detail) > 200 || !strings.Contains(p.Detail, c.says) {
			t.Errorf("%s: the refusal says %d bytes, %.200q; want it to say %q", c.path, len(p.Detail), p.Detail, c.says)
		}
	}
}
