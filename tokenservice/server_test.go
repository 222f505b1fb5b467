package tokenservice_test

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/backend/memory"
	"github.com/batonhq/baton/internal/strictjson"
	"github.com/batonhq/baton/tokenservice"
)

func TestIssueGetTransition(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	template := rootToken("orders")
	template.ExpiresAt = template.CreatedAt.Add(time.Hour)
	request := rootBody(template)
	request.CreatedAt = "2001-01-01T00:00:00.000000Z" // a client's clock is ignored
	a := call(t, "POST", f.url+"/v1/roots", f.orders, request)
	var issued tokenservice.Token
	a.decode(t, http.StatusCreated, &issued)
	root, err := issued.Decode()
	if err != nil {
		t.Fatal(err)
	}
	if loc := a.header.Get("Location"); loc != "/v1/tokens/"+root.ID.String() {
		t.Errorf("Location %q", loc)
	}
	want := template
	want.ID, want.Conversation, want.CreatedAt = root.ID, root.ID, root.CreatedAt
	if issued != tokenservice.EncodeToken(want) {
		t.Errorf("issued %+v, want %+v", issued, tokenservice.EncodeToken(want))
	}
	if time.Since(root.CreatedAt) > time.Minute {
		t.Errorf("created_at %s: the client's time was taken", root.CreatedAt)
	}
	// Times are RFC 3339 in UTC with microseconds.
	if !strings.HasSuffix(issued.CreatedAt, "Z") || len(issued.CreatedAt) != len("2006-01-02T15:04:05.000000Z") {
		t.Errorf("created_at %q is not RFC 3339 UTC with microseconds", issued.CreatedAt)
	}

	var got tokenservice.Token
	call(t, "GET", f.url+"/v1/tokens/"+root.ID.String(), f.orders, nil).decode(t, http.StatusOK, &got)
	if got != issued {
		t.Errorf("GET = %+v, want %+v", got, issued)
	}

	// A child without created_at gets the service's time.
	child := childOf(root, "billing")
	body := transitionBody(root.ID, child)
	body.Create[0].CreatedAt = ""
	var tr tokenservice.TransitionResponse
	call(t, "POST", f.url+"/v1/transitions", f.orders, body).decode(t, http.StatusOK, &tr)
	if !tr.Consumed {
		t.Fatal("the transition did not consume the root")
	}
	stored, err := f.tokens.Get(t.Context(), child.ID)
	if err != nil || stored.CreatedAt.IsZero() || time.Since(stored.CreatedAt) > time.Minute {
		t.Errorf("child = %+v, %v; want a created_at of now", stored, err)
	}
	// Consuming it again is the protocol's duplicate: consumed=false.
	call(t, "POST", f.url+"/v1/transitions", f.orders, transitionBody(root.ID, childOf(root, "billing"))).decode(t, http.StatusOK, &tr)
	if tr.Consumed {
		t.Error("a second transition of the same token consumed it")
	}
	call(t, "GET", f.url+"/v1/tokens/"+root.ID.String(), f.orders, nil).wantProblem(t, 404, tokenservice.ProblemNotFound)
	if f.tokens.Len() != 1 {
		t.Errorf("store holds %d tokens, want the one child", f.tokens.Len())
	}
}

func TestAuthentication(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	target := f.url + "/v1/tokens/" + baton.NewTokenID().String()
	for name, header := range map[string]string{
		"none":         "",
		"wrong key":    "Bearer bk_wrong",
		"basic scheme": "Basic " + f.orders,
		"empty bearer": "Bearer ",
		"hash as key":  "Bearer " + tokenservice.HashAPIKey(f.orders),
	} {
		req, _ := http.NewRequestWithContext(t.Context(), "GET", target, nil)
		if header != "" {
			req.Header.Set("Authorization", header)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") == "" || resp.Header.Get("Content-Type") != tokenservice.ProblemContentType {
			t.Errorf("%s: status %d, WWW-Authenticate %q, Content-Type %q; want a 401 problem", name, resp.StatusCode,
				resp.Header.Get("WWW-Authenticate"), resp.Header.Get("Content-Type"))
		}
	}
	// The scheme is case-insensitive (RFC 9110 11.1).
	req, _ := http.NewRequestWithContext(t.Context(), "GET", target, nil)
	req.Header.Set("Authorization", "bearer "+f.orders)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Errorf("lowercase bearer: status %d, want 404 (authenticated, token absent)", resp.StatusCode)
	}
	// Two Authorization headers are refused.
	req, _ = http.NewRequestWithContext(t.Context(), "GET", target, nil)
	req.Header.Add("Authorization", "Bearer "+f.orders)
	req.Header.Add("Authorization", "Bearer "+f.billing)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Errorf("two Authorization headers: status %d, want 401", resp.StatusCode)
	}
	// Public routes need no credentials.
	if a := call(t, "GET", f.url+"/healthz", "", nil); a.status != 200 {
		t.Errorf("/healthz: %d %s", a.status, a.body)
	}
	if a := call(t, "GET", f.url+"/v1/openapi.yaml", "", nil); a.status != 200 || !strings.HasPrefix(string(a.body), "openapi: 3.1") {
		t.Errorf("/v1/openapi.yaml: %d", a.status)
	}
}

// Only a token's destination consumes or reads it; only children of the
// consumed token are created; permissions gate roots, listings, expiry.
func TestAuthorization(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	root := issueRoot(t, f.url, f.orders, rootToken("orders"))

	// billing may not issue roots.
	call(t, "POST", f.url+"/v1/roots", f.billing, rootBody(rootToken("billing"))).
		wantProblem(t, 403, tokenservice.ProblemForbidden)
	// billing may neither consume nor read orders' token.
	p := call(t, "POST", f.url+"/v1/transitions", f.billing, transitionBody(root.ID, childOf(root, "billing"))).
		wantProblem(t, 403, tokenservice.ProblemNotYourToken)
	if p.Token != root.ID.String() {
		t.Errorf("problem names token %q, want %s", p.Token, root.ID)
	}
	call(t, "GET", f.url+"/v1/tokens/"+root.ID.String(), f.billing, nil).wantProblem(t, 403, tokenservice.ProblemNotYourToken)
	// ops observes: it may read it.
	call(t, "GET", f.url+"/v1/tokens/"+root.ID.String(), f.ops, nil).decode(t, 200, new(tokenservice.Token))

	// orders may not plant a token in another conversation, nor one whose
	// causation is not the consumed token.
	foreign := childOf(root, "billing")
	foreign.Conversation = baton.NewTokenID()
	call(t, "POST", f.url+"/v1/transitions", f.orders, transitionBody(root.ID, childOf(root, "billing"), foreign)).
		wantProblem(t, 403, tokenservice.ProblemNotAChild)
	stepchild := childOf(root, "billing")
	stepchild.Causation = baton.NewTokenID()
	call(t, "POST", f.url+"/v1/transitions", f.orders, transitionBody(root.ID, stepchild)).
		wantProblem(t, 403, tokenservice.ProblemNotAChild)
	if _, err := f.tokens.Get(ctx, root.ID); err != nil || f.tokens.Len() != 1 {
		t.Fatalf("refused transitions changed the store: root %v, %d tokens", err, f.tokens.Len())
	}

	// Listings: conversations need observe; a destination's own list is
	// open to it.
	call(t, "GET", f.url+"/v1/conversations/"+root.Conversation.String()+"/tokens", f.orders, nil).
		wantProblem(t, 403, tokenservice.ProblemForbidden)
	var list tokenservice.TokenList
	call(t, "GET", f.url+"/v1/conversations/"+root.Conversation.String()+"/tokens", f.ops, nil).decode(t, 200, &list)
	if len(list.Tokens) != 1 {
		t.Errorf("ops lists %d tokens, want 1", len(list.Tokens))
	}
	call(t, "GET", f.url+"/v1/destinations/orders/tokens", f.orders, nil).decode(t, 200, &list)
	call(t, "GET", f.url+"/v1/destinations/orders/tokens", f.billing, nil).wantProblem(t, 403, tokenservice.ProblemForbidden)
	// Expiry needs expire_roots.
	limit := 10
	exp := tokenservice.ExpirationRequest{Before: tokenservice.FormatTime(time.Now().Add(1000 * time.Hour)), Limit: &limit}
	call(t, "POST", f.url+"/v1/expirations", f.orders, exp).wantProblem(t, 403, tokenservice.ProblemForbidden)
	var er tokenservice.ExpirationResponse
	call(t, "POST", f.url+"/v1/expirations", f.ops, exp).decode(t, 200, &er)
	if er.Expired != 0 {
		t.Errorf("expired %d roots without expiry", er.Expired)
	}
}

func TestMalformedRequests(t *testing.T) {
	t.Parallel()
	f := newFixture(t, func(c *tokenservice.Config) { c.MaxBodyBytes = 4096 })
	root := issueRoot(t, f.url, f.orders, rootToken("orders"))
	id := root.ID.String()
	child := tokenservice.EncodeToken(childOf(root, "billing"))
	childJSON := `{"id":"` + child.ID + `","conversation":"` + child.Conversation + `","causation":"` + id +
		`","destination":"billing","type":"t","digest":"` + child.Digest + `"}`
	for name, body := range map[string]string{
		"not JSON":            `{"consume":`,
		"unknown field":       `{"consume":"` + id + `","creates":[]}`,
		"two values":          `{"consume":"` + id + `"} {"consume":"` + id + `"}`,
		"trailing garbage":    `{"consume":"` + id + `"} x`,
		"array":               `[]`,
		"null":                `null`,
		"uppercase id":        `{"consume":"` + strings.ToUpper(id) + `"}`,
		"short id":            `{"consume":"` + id[:30] + `"}`,
		"zero id":             `{"consume":"00000000000000000000000000000000"}`,
		"missing consume":     `{"create":[]}`,
		"child unknown field": `{"consume":"` + id + `","create":[` + strings.Replace(childJSON, `{`, `{"payload":"x",`, 1) + `]}`,
		"child bad digest":    `{"consume":"` + id + `","create":[` + strings.Replace(childJSON, child.Digest, "abc", 1) + `]}`,
		"child bad time":      `{"consume":"` + id + `","create":[` + strings.Replace(childJSON, `"type":"t"`, `"type":"t","created_at":"yesterday"`, 1) + `]}`,
		"child expires":       `{"consume":"` + id + `","create":[` + strings.Replace(childJSON, `"type":"t"`, `"type":"t","expires_at":"2030-01-01T00:00:00Z"`, 1) + `]}`,
		"child twice":         `{"consume":"` + id + `","create":[` + childJSON + `,` + childJSON + `]}`,
		"child no type":       `{"consume":"` + id + `","create":[` + strings.Replace(childJSON, `"type":"t"`, `"type":""`, 1) + `]}`,
	} {
		a := call(t, "POST", f.url+"/v1/transitions", f.orders, body)
		if a.status != 400 {
			t.Errorf("%s: status %d, want 400; body %s", name, a.status, a.body)
			continue
		}
		if p := a.problem(t); p.Type != tokenservice.ProblemInvalid {
			t.Errorf("%s: type %q", name, p.Type)
		}
	}
	// A root with a causation is refused.
	withCause := rootBody(rootToken("orders"))
	withCause.Causation = id
	call(t, "POST", f.url+"/v1/roots", f.orders, withCause).wantProblem(t, 400, tokenservice.ProblemInvalid)
	// So is one that names its id: the service chooses it, so that no
	// client can issue a consumed root's id again.
	withID := rootBody(rootToken("orders"))
	withID.ID = id
	call(t, "POST", f.url+"/v1/roots", f.orders, withID).wantProblem(t, 400, tokenservice.ProblemInvalid)
	// Oversized: by Content-Length and by a body that lies about none.
	big := `{"consume":"` + id + `","create":[` + strings.Repeat(childJSON+",", 40) + childJSON + `]}`
	call(t, "POST", f.url+"/v1/transitions", f.orders, big).wantProblem(t, 413, tokenservice.ProblemTooLarge)
	req, _ := http.NewRequestWithContext(t.Context(), "POST", f.url+"/v1/transitions", strings.NewReader(big))
	req.ContentLength = -1 // chunked: the limit applies while reading
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+f.orders)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 413 {
		t.Errorf("chunked oversized body: status %d, want 413", resp.StatusCode)
	}
	// Not JSON by media type.
	req, _ = http.NewRequestWithContext(t.Context(), "POST", f.url+"/v1/transitions", strings.NewReader(`{"consume":"`+id+`"}`))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", "Bearer "+f.orders)
	if resp, err = http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 415 {
		t.Errorf("form body: status %d, want 415", resp.StatusCode)
	}
	// Path and query.
	call(t, "GET", f.url+"/v1/tokens/xyz", f.orders, nil).wantProblem(t, 400, tokenservice.ProblemInvalid)
	call(t, "GET", f.url+"/v1/tokens/"+id+"?x=1", f.orders, nil).wantProblem(t, 400, tokenservice.ProblemInvalid)
	call(t, "GET", f.url+"/v1/destinations/orders/tokens?limit=-1", f.orders, nil).wantProblem(t, 400, tokenservice.ProblemInvalid)
	call(t, "GET", f.url+"/v1/destinations/orders/tokens?after=zz", f.orders, nil).wantProblem(t, 400, tokenservice.ProblemInvalid)
	call(t, "GET", f.url+"/v1/destinations/orders/tokens?cursor=1", f.orders, nil).wantProblem(t, 400, tokenservice.ProblemInvalid)
	call(t, "GET", f.url+"/v1/destinations/orders/tokens?limit=1&limit=2", f.orders, nil).wantProblem(t, 400, tokenservice.ProblemInvalid)
	call(t, "GET", f.url+"/v1/nothing", f.orders, nil).wantProblem(t, 404, tokenservice.ProblemNoRoute)
	a := call(t, "DELETE", f.url+"/v1/tokens/"+id, f.orders, nil)
	a.wantProblem(t, 405, tokenservice.ProblemMethod)
	if a.header.Get("Allow") != "GET" {
		t.Errorf("405 Allow %q, want GET", a.header.Get("Allow"))
	}
	// None of this changed the store.
	if _, err := f.tokens.Get(t.Context(), root.ID); err != nil || f.tokens.Len() != 1 {
		t.Errorf("malformed requests changed the store: %v, %d tokens", err, f.tokens.Len())
	}
}

// A body whose keys encoding/json alone would match loosely is refused: a
// key in another case (or with a KELVIN SIGN or a long s, which fold to k
// and s), or a key twice, of which encoding/json keeps the last value
// while a proxy or firewall may read the first. Nested objects too.
func TestBodyKeysAreExactAndOnce(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	root := issueRoot(t, f.url, f.orders, rootToken("orders"))
	id := root.ID.String()
	billing := childOf(root, "billing")
	child := tokenservice.EncodeToken(billing)
	childJSON := `{"id":"` + child.ID + `","conversation":"` + child.Conversation + `","causation":"` + id +
		`","destination":"billing","type":"t","digest":"` + child.Digest + `"}`
	withChild := func(child string) string { return `{"consume":"` + id + `","create":[` + child + `]}` }
	inBatch := func(transition string) string { return `{"transitions":[` + transition + `]}` }
	rootJSON := `{"destination":"orders","type":"t"`
	for _, c := range []struct{ name, path, key, body, says string }{
		{"a key twice", "/v1/transitions", f.orders, `{"consume":"` + baton.NewTokenID().String() + `","consume":"` + id + `"}`, `key "consume" at line 1, column 47 appears twice`},
		{"a key in another case", "/v1/transitions", f.orders, `{"Consume":"` + id + `"}`, `key "Consume" at line 1, column 2 is not a field name`},
		{"a key in capitals", "/v1/transitions", f.orders, `{"CONSUME":"` + id + `"}`, `key "CONSUME"`},
		{"a long s", "/v1/transitions", f.orders, "{\"con\u017fume\":\"" + id + `"}`, `key "con\u017fume"`},
		{"a child's key twice", "/v1/transitions", f.orders, withChild(strings.Replace(childJSON, `"type":"t"`, `"type":"t","destination":"orders"`, 1)), `key "destination"`},
		{"a child's key in another case", "/v1/transitions", f.orders, withChild(strings.Replace(childJSON, `"type":"t"`, `"type":"t","Destination":"orders"`, 1)), `key "Destination"`},
		{"a child's long s", "/v1/transitions", f.orders, withChild(strings.Replace(childJSON, `"destination"`, "\"de\u017ftination\"", 1)), `key "de\u017ftination"`},
		{"a batch's key twice", "/v1/transitions/batch", f.orders, `{"transitions":[],"transitions":[{"consume":"` + id + `"}]}`, `key "transitions"`},
		{"a batched child's key in another case", "/v1/transitions/batch", f.orders, inBatch(withChild(strings.Replace(childJSON, `"type"`, `"TYPE"`, 1))), `key "TYPE"`},
		{"a batched child's key twice", "/v1/transitions/batch", f.orders, inBatch(withChild(strings.Replace(childJSON, `"type":"t"`, `"type":"t","type":"u"`, 1))), `key "type"`},
		{"a root's destination twice", "/v1/roots", f.orders, rootJSON + `,"destination":"billing"}`, `key "destination"`},
		{"a root's destination in another case", "/v1/roots", f.orders, rootJSON + `,"Destination":"billing"}`, `key "Destination"`},
		{"a read's ids twice", "/v1/tokens/read", f.orders, `{"ids":[],"ids":["` + id + `"]}`, `key "ids"`},
		{"a read's ids in capitals", "/v1/tokens/read", f.orders, `{"IDS":["` + id + `"]}`, `key "IDS"`},
		{"an expiration's limit twice", "/v1/expirations", f.ops, `{"before":"2030-01-01T00:00:00Z","limit":0,"limit":100}`, `key "limit"`},
		{"not UTF-8", "/v1/transitions", f.orders, withChild(strings.Replace(childJSON, "billing", "bill\xffing", 1)), `not UTF-8 at line 1, column `},
	} {
		p := call(t, "POST", f.url+c.path, c.key, c.body).wantProblem(t, 400, tokenservice.ProblemInvalid)
		if !strings.Contains(p.Detail, c.says) {
			t.Errorf("%s: the refusal says %q, want it to say %q", c.name, p.Detail, c.says)
		}
	}
	if _, err := f.tokens.Get(t.Context(), root.ID); err != nil || f.tokens.Len() != 1 {
		t.Fatalf("refused bodies changed the store: %v, %d tokens", err, f.tokens.Len())
	}
	// The same bodies with exact keys, once each, are taken; so is a key
	// written with an escape, which every JSON parser reads alike.
	var consumed tokenservice.TransitionResponse
	call(t, "POST", f.url+"/v1/transitions", f.orders, strings.Replace(withChild(childJSON), `"consume"`, `"\u0063onsume"`, 1)).decode(t, 200, &consumed)
	if !consumed.Consumed {
		t.Error("a transition with exact keys did not consume its token")
	}
	if got, err := f.tokens.Get(t.Context(), billing.ID); err != nil || got.Destination != "billing" {
		t.Errorf("the child %+v, %v: want it live at billing", got, err)
	}
}

// A name that decodes to U+FFFD is refused wherever names come in: an
// escaped lone surrogate ("\ud800") reads as U+FFFD, and a token for a name
// its sender never wrote would be stored.
func TestNamesWithReplacementCharacterAreRefused(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	root := issueRoot(t, f.url, f.orders, rootToken("orders"))
	id := root.ID.String()
	child := tokenservice.EncodeToken(childOf(root, "billing"))
	childJSON := `{"id":"` + child.ID + `","conversation":"` + child.Conversation + `","causation":"` + id +
		`","destination":"billing","type":"t","digest":"` + child.Digest + `"}`
	for _, c := range []struct{ path, body string }{
		{"/v1/roots", `{"destination":"orders","type":"\ud800"}`},
		{"/v1/roots", `{"destination":"orders","type":"order.\udc00place"}`},
		{"/v1/roots", `{"destination":"orders","type":"order.\ufffdplace"}`},
		{"/v1/transitions", `{"consume":"` + id + `","create":[` + strings.Replace(childJSON, `"billing"`, `"bill\ud800ing"`, 1) + `]}`},
		{"/v1/transitions/batch", `{"transitions":[{"consume":"` + id + `","create":[` + strings.Replace(childJSON, `"type":"t"`, `"type":"\ud83d"`, 1) + `]}]}`},
	} {
		p := call(t, "POST", f.url+c.path, f.orders, c.body).wantProblem(t, 400, tokenservice.ProblemInvalid)
		if !strings.Contains(p.Detail, "U+FFFD") {
			t.Errorf("%s %s: the refusal says %q, want it to name U+FFFD", c.path, c.body, p.Detail)
		}
	}
	if _, err := f.tokens.Get(t.Context(), root.ID); err != nil || f.tokens.Len() != 1 {
		t.Errorf("refused bodies changed the store: %v, %d tokens", err, f.tokens.Len())
	}
	if _, err := tokenservice.ParseSystem([]byte(`{"name":"bill\ud800ing"}`)); !errors.Is(err, tokenservice.ErrInvalidConfig) || !strings.Contains(err.Error(), "U+FFFD") {
		t.Errorf("ParseSystem of a name with a lone surrogate = %v, want ErrInvalidConfig that names U+FFFD", err)
	}
	if _, err := tokenservice.ParseSystem([]byte(`{"name":"ops","destinations":["\ud800"]}`)); !errors.Is(err, tokenservice.ErrInvalidConfig) || !strings.Contains(err.Error(), "U+FFFD") {
		t.Errorf("ParseSystem of a destination with a lone surrogate = %v, want ErrInvalidConfig that names U+FFFD", err)
	}
}

// Every key of a request body and of a systems file is a struct field's
// name, which strictjson.Check can hold to the exact snake_case form: no
// map keyed by user data (such as destination names) is among them.
func TestDecodedTypesHaveOnlyWireNames(t *testing.T) {
	t.Parallel()
	for _, v := range []any{
		tokenservice.SystemsFile{}, tokenservice.System{}, tokenservice.Token{},
		tokenservice.TransitionRequest{}, tokenservice.TransitionBatchRequest{},
		tokenservice.TokenReadRequest{}, tokenservice.ExpirationRequest{},
	} {
		if err := strictjson.Fits(reflect.TypeOf(v)); err != nil {
			t.Error(err)
		}
	}
}

// Listings page by id, and destinations with any characters round-trip
// through the path.
func TestListing(t *testing.T) {
	t.Parallel()
	f := newFixture(t, func(c *tokenservice.Config) { c.Systems[2].Destinations = []string{tokenservice.AnyDestination} })
	ctx := t.Context()
	odd := "a/b%c?d#e"
	root, err := f.tokens.Issue(ctx, rootToken("orders"))
	if err != nil {
		t.Fatal(err)
	}
	var children []baton.Token
	for range 5 {
		children = append(children, childOf(root, odd))
	}
	if ok, err := f.tokens.Transition(ctx, root.ID, children); err != nil || !ok {
		t.Fatal(ok, err)
	}
	var all []tokenservice.Token
	after := ""
	for pages := 0; ; pages++ {
		var list tokenservice.TokenList
		call(t, "GET", f.url+"/v1/destinations/"+url.PathEscape(odd)+"/tokens?limit=2&after="+after, f.ops, nil).decode(t, 200, &list)
		all = append(all, list.Tokens...)
		if list.NextAfter == "" {
			if len(list.Tokens) == 2 {
				t.Error("a full page without next_after")
			}
			break
		}
		after = list.NextAfter
		if pages > 5 {
			t.Fatal("paging does not end")
		}
	}
	if len(all) != 5 {
		t.Fatalf("paged %d tokens, want 5", len(all))
	}
	for i := 1; i < len(all); i++ {
		if all[i-1].ID >= all[i].ID {
			t.Errorf("not in ascending id order: %s, %s", all[i-1].ID, all[i].ID)
		}
	}
	if all[0].Destination != odd {
		t.Errorf("destination %q, want %q", all[0].Destination, odd)
	}
}

// root_destinations bounds the roots an edge may issue: a root admits its
// signal at its destination, so an edge's key could otherwise start any
// system's work.
func TestRootDestinationsBoundTheRootsASystemIssues(t *testing.T) {
	t.Parallel()
	f := newFixture(t, func(c *tokenservice.Config) {
		for i := range c.Systems {
			if c.Systems[i].Name == "orders" {
				c.Systems[i].RootDestinations = []string{"orders"}
			}
		}
	})
	issueRoot(t, f.url, f.orders, rootToken("orders"))
	call(t, "POST", f.url+"/v1/roots", f.orders, rootBody(rootToken("billing"))).wantProblem(t, 403, tokenservice.ProblemForbidden)
	if n := f.tokens.Len(); n != 1 {
		t.Errorf("%d tokens after a root for orders and a refused one for billing; want 1", n)
	}
}

// A token addressed to the wildcard of systems' destinations is refused
// (400) and changes nothing (found in review). A root issued expired is
// not: stores take one (storetest), and so the service.
func TestTokensNoSystemCouldUseAreRefused(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	call(t, "POST", f.url+"/v1/roots", f.orders, rootBody(rootToken(tokenservice.AnyDestination))).wantProblem(t, 400, tokenservice.ProblemInvalid)
	root := issueRoot(t, f.url, f.orders, rootToken("orders"))
	call(t, "POST", f.url+"/v1/transitions", f.orders, transitionBody(root.ID, childOf(root, tokenservice.AnyDestination))).
		wantProblem(t, 400, tokenservice.ProblemInvalid)
	if _, err := f.tokens.Get(t.Context(), root.ID); err != nil || f.tokens.Len() != 1 {
		t.Fatalf("refused requests changed the store: root %v, %d tokens; want the root alone", err, f.tokens.Len())
	}
}

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	_, hash := tokenservice.NewAPIKey()
	tokens := memory.NewTokenStore()
	for name, cfg := range map[string]tokenservice.Config{
		"no store":        {Systems: []tokenservice.System{{Name: "a", KeySHA256: hash}}},
		"no systems":      {Tokens: tokens},
		"bad name":        {Tokens: tokens, Systems: []tokenservice.System{{Name: "a b", KeySHA256: hash}}},
		"bad hash":        {Tokens: tokens, Systems: []tokenservice.System{{Name: "a", KeySHA256: "bk_plaintextkey"}}},
		"same name":       {Tokens: tokens, Systems: []tokenservice.System{{Name: "a"}, {Name: "a"}}},
		"same key":        {Tokens: tokens, Systems: []tokenservice.System{{Name: "a", KeySHA256: hash}, {Name: "b", KeySHA256: hash}}},
		"bad destination": {Tokens: tokens, Systems: []tokenservice.System{{Name: "a", Destinations: []string{""}}}},
		// Its default destination, its own name, would be every one.
		"named *":                               {Tokens: tokens, Systems: []tokenservice.System{{Name: tokenservice.AnyDestination, KeySHA256: hash}}},
		"negative maxbody":                      {Tokens: tokens, Systems: []tokenservice.System{{Name: "a"}}, MaxBodyBytes: -1},
		"root destinations without issue_roots": {Tokens: tokens, Systems: []tokenservice.System{{Name: "a", RootDestinations: []string{"a"}}}},
		"bad root destination":                  {Tokens: tokens, Systems: []tokenservice.System{{Name: "a", IssueRoots: true, RootDestinations: []string{"a b"}}}},
	} {
		if _, err := tokenservice.New(cfg); !errors.Is(err, tokenservice.ErrInvalidConfig) {
			t.Errorf("%s: New = %v, want ErrInvalidConfig", name, err)
		}
	}
}

func TestLoadSystems(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_, hash := tokenservice.NewAPIKey()
	good := filepath.Join(dir, "good.json")
	os.WriteFile(good, []byte(`{"systems":[{"name":"billing","key_sha256":"`+hash+`"},{"name":"ops","destinations":["*"],"observe":true}]}`), 0o600)
	systems, err := tokenservice.LoadSystems(good)
	if err != nil || len(systems) != 2 || systems[1].Name != "ops" || !systems[1].Observe {
		t.Fatalf("LoadSystems = %+v, %v", systems, err)
	}
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte(`{"systems":[{"name":"billing","obsreve":true}]}`), 0o600)
	if _, err := tokenservice.LoadSystems(bad); !errors.Is(err, tokenservice.ErrInvalidConfig) || !strings.Contains(err.Error(), "obsreve") {
		t.Errorf("LoadSystems with a misspelt field = %v", err)
	}
	if _, err := tokenservice.LoadSystems(filepath.Join(dir, "missing.json")); !errors.Is(err, tokenservice.ErrInvalidConfig) {
		t.Errorf("LoadSystems of a missing file = %v", err)
	}
	s, err := tokenservice.ParseSystem([]byte(` {"name":"ops","key_sha256":"` + hash + `","issue_roots":true} `))
	if err != nil || s.Name != "ops" || !s.IssueRoots {
		t.Errorf("ParseSystem = %+v, %v", s, err)
	}
	if _, err := tokenservice.ParseSystem([]byte(`{"name":"ops","key":"bk_x"}`)); !errors.Is(err, tokenservice.ErrInvalidConfig) {
		t.Errorf("ParseSystem with a plaintext key field = %v", err)
	}
}

// A systems file whose keys encoding/json alone would match loosely is an
// error at startup, as a misspelt permission is: a key in another case (or
// with a KELVIN SIGN, which folds to k), or a key twice. The error names
// the key and where it is.
func TestSystemsFileKeysAreExactAndOnce(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_, hash := tokenservice.NewAPIKey()
	for i, c := range []struct{ file, says string }{
		{`{"systems":[{"name":"x","Key_SHA256":"` + hash + `","OBSERVE":true}]}`, `key "Key_SHA256" at line 1, column 25 is not a field name`},
		{"{\"systems\":[{\"name\":\"x\",\"\u212aey_sha256\":\"" + hash + `"}]}`, `key "\u212aey_sha256" at line 1, column 25`},
		{`{"systems":[{"name":"x","observe":false,"observe":true}]}`, `key "observe" at line 1, column 41 appears twice`},
		{`{"systems":[{"name":"x"}],"systems":[{"name":"y","observe":true}]}`, `key "systems" at line 1, column 27 appears twice`},
		{"{\"systems\": [\n  {\"name\": \"ops\",\n   \"destinations\": [\"*\"],\n   \"Observe\": true}\n]}\n", `key "Observe" at line 4, column 4`},
		{"{\"systems\":[{\"name\":\"bill\xffing\"}]}", `not UTF-8 at line 1, column 26`},
	} {
		path := filepath.Join(dir, fmt.Sprintf("systems-%d.json", i))
		if err := os.WriteFile(path, []byte(c.file), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := tokenservice.LoadSystems(path)
		if !errors.Is(err, tokenservice.ErrInvalidConfig) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), c.says) {
			t.Errorf("LoadSystems(%q) = %v, want ErrInvalidConfig that names the file and says %q", c.file, err, c.says)
		}
	}
	for _, c := range []struct{ system, says string }{
		{`{"name":"ops","ISSUE_ROOTS":true}`, `key "ISSUE_ROOTS"`},
		{`{"name":"ops","name":"billing"}`, `key "name" at line 1, column 15 appears twice`},
	} {
		if _, err := tokenservice.ParseSystem([]byte(c.system)); !errors.Is(err, tokenservice.ErrInvalidConfig) || !strings.Contains(err.Error(), c.says) {
			t.Errorf("ParseSystem(%s) = %v, want ErrInvalidConfig that says %q", c.system, err, c.says)
		}
	}
}

func TestAPIKeys(t *testing.T) {
	t.Parallel()
	k1, h1 := tokenservice.NewAPIKey()
	k2, h2 := tokenservice.NewAPIKey()
	if k1 == k2 || h1 == h2 || len(h1) != 64 || tokenservice.HashAPIKey(k1) != h1 || !strings.HasPrefix(k1, "bk_") || len(k1) != 3+43 {
		t.Errorf("keys %q %q hashes %q %q", k1, k2, h1, h2)
	}
}

// A store that is down makes the health check fail.
func TestHealthzStoreDown(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.tokens.Close()
	call(t, "GET", f.url+"/healthz", "", nil).wantProblem(t, 503, tokenservice.ProblemNotApplied)
	a := call(t, "POST", f.url+"/v1/roots", f.orders, rootBody(rootToken("orders")))
	a.wantProblem(t, 503, tokenservice.ProblemNotApplied)
	if a.header.Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
}

// A client that sends no id gets one drawn by the service, and the root
// starts its own conversation.
func TestIssueRootWithoutID(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	var issued tokenservice.Token
	call(t, "POST", f.url+"/v1/roots", f.orders, map[string]string{"destination": "orders", "type": "order.place"}).
		decode(t, http.StatusCreated, &issued)
	id, err := baton.ParseTokenID(issued.ID)
	if err != nil || issued.Conversation != issued.ID || issued.Digest != baton.DigestOf(nil).String() {
		t.Fatalf("issued %+v (%v): want a fresh id that is also the conversation, and the empty payload's digest", issued, err)
	}
	if _, err := f.tokens.Get(t.Context(), id); err != nil {
		t.Fatalf("the issued root is not in the store: %v", err)
	}
}
