package tokenservice_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/backend/memory"
	"github.com/batonhq/baton/tokenservice"
)

// fixture is a service over a memory store with three systems: orders
// (issues roots), billing (an ordinary participant) and ops (observes and
// expires roots).
type fixture struct {
	url                   string
	tokens                *memory.TokenStore
	orders, billing, ops  string // API keys
	ordersSys, billingSys tokenservice.System
}

func newFixture(t *testing.T, mutate ...func(*tokenservice.Config)) *fixture {
	t.Helper()
	f := &fixture{tokens: memory.NewTokenStore()}
	var ordersHash, billingHash, opsHash string
	f.orders, ordersHash = tokenservice.NewAPIKey()
	f.billing, billingHash = tokenservice.NewAPIKey()
	f.ops, opsHash = tokenservice.NewAPIKey()
	f.ordersSys = tokenservice.System{Name: "orders", KeySHA256: ordersHash, IssueRoots: true}
	f.billingSys = tokenservice.System{Name: "billing", KeySHA256: billingHash}
	cfg := tokenservice.Config{Tokens: f.tokens, Systems: []tokenservice.System{
		f.ordersSys, f.billingSys,
		{Name: "ops", KeySHA256: opsHash, Observe: true, ExpireRoots: true},
	}}
	for _, m := range mutate {
		m(&cfg)
	}
	h, err := tokenservice.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	f.url = srv.URL
	return f
}

// answer is a decoded response.
type answer struct {
	status int
	header http.Header
	body   []byte
}

func (a answer) problem(t *testing.T) tokenservice.Problem {
	t.Helper()
	if ct := a.header.Get("Content-Type"); ct != tokenservice.ProblemContentType {
		t.Fatalf("status %d with Content-Type %q, want a problem document; body %s", a.status, ct, a.body)
	}
	var p tokenservice.Problem
	if err := json.Unmarshal(a.body, &p); err != nil {
		t.Fatalf("problem document %s: %v", a.body, err)
	}
	if p.Status != a.status || p.Title == "" || p.Detail == "" {
		t.Errorf("problem document %s: want status %d, a title and a detail", a.body, a.status)
	}
	return p
}

// wantProblem fails t unless a is a problem document of the given status
// and type.
func (a answer) wantProblem(t *testing.T, status int, typ string) tokenservice.Problem {
	t.Helper()
	if a.status != status {
		t.Fatalf("status %d, want %d; body %s", a.status, status, a.body)
	}
	p := a.problem(t)
	if p.Type != typ {
		t.Fatalf("problem type %q, want %q (detail %q)", p.Type, typ, p.Detail)
	}
	return p
}

func (a answer) decode(t *testing.T, status int, v any) {
	t.Helper()
	if a.status != status {
		t.Fatalf("status %d, want %d; body %s", a.status, status, a.body)
	}
	dec := json.NewDecoder(bytes.NewReader(a.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("answer %s: %v", a.body, err)
	}
}

// call sends a request with an optional bearer key and JSON body (a string
// is sent as it is).
func call(t *testing.T, method, url, key string, body any) answer {
	t.Helper()
	return callWithHeader(t, method, url, key, nil, body)
}

// callWithHeader is call with header's fields added to the request's.
func callWithHeader(t *testing.T, method, url, key string, header http.Header, body any) answer {
	t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	case []byte:
		r = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	for name, values := range header {
		req.Header[name] = values
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{resp.StatusCode, resp.Header, data}
}

// rootToken returns a root to issue: the store or the service chooses its
// id, and the root starts its own conversation.
func rootToken(destination string) baton.Token {
	return baton.Token{Destination: destination, Type: "order.place",
		Digest: baton.DigestOf([]byte("payload")), CreatedAt: time.Now().UTC().Truncate(time.Microsecond)}
}

// rootBody is root as a request to POST /v1/roots.
func rootBody(root baton.Token) tokenservice.Token {
	j := tokenservice.EncodeToken(root)
	j.ID, j.CreatedAt = "", ""
	return j
}

// issueRoot issues root through the API, which must succeed, and returns
// the token the service created.
func issueRoot(t *testing.T, url, key string, root baton.Token) baton.Token {
	t.Helper()
	var issued tokenservice.Token
	call(t, "POST", url+"/v1/roots", key, rootBody(root)).decode(t, 201, &issued)
	tok, err := issued.Decode()
	if err != nil {
		t.Fatalf("issued root %+v: %v", issued, err)
	}
	return tok
}

func childOf(parent baton.Token, destination string) baton.Token {
	c := rootToken(destination)
	c.ID, c.Conversation, c.Causation = baton.NewTokenID(), parent.Conversation, parent.ID
	return c
}

func transitionBody(consume baton.TokenID, create ...baton.Token) tokenservice.TransitionRequest {
	req := tokenservice.TransitionRequest{Consume: consume.String()}
	for _, c := range create {
		req.Create = append(req.Create, tokenservice.EncodeToken(c))
	}
	return req
}
