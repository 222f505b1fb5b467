package tokenservice_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/batonhq/baton/tokenservice"
)

// RequireObserve lets through only observe systems, authenticated as the
// API authenticates, and refuses the others with the API's problems.
func TestRequireObserve(t *testing.T) {
	t.Parallel()
	opsKey, opsHash := tokenservice.NewAPIKey()
	billingKey, billingHash := tokenservice.NewAPIKey()
	observe, err := tokenservice.RequireObserve([]tokenservice.System{
		{Name: "ops", KeySHA256: opsHash, Observe: true},
		{Name: "billing", KeySHA256: billingHash},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(observe(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "secret")
	})))
	t.Cleanup(srv.Close)
	for _, c := range []struct {
		name, key string
		status    int
		typ       string
	}{
		{"no credentials", "", 401, tokenservice.ProblemUnauthorized},
		{"unknown key", "bk_unknown", 401, tokenservice.ProblemUnauthorized},
		{"system without observe", billingKey, 403, tokenservice.ProblemForbidden},
		{"observe system", opsKey, 200, ""},
	} {
		a := call(t, "GET", srv.URL+"/metrics", c.key, nil)
		if c.status == 200 {
			if a.status != 200 || string(a.body) != "secret" {
				t.Errorf("%s: %d %s, want 200", c.name, a.status, a.body)
			}
			continue
		}
		a.wantProblem(t, c.status, c.typ)
		if string(a.body) == "secret" {
			t.Errorf("%s: got the protected body", c.name)
		}
	}
	if _, err := tokenservice.RequireObserve([]tokenservice.System{{Name: "a b"}}, nil); err == nil {
		t.Error("an invalid system was accepted")
	}
}

// CheckHost refuses names it does not know, so a browser that DNS
// rebinding pointed at the service cannot reach it.
func TestCheckHost(t *testing.T) {
	t.Parallel()
	h := tokenservice.CheckHost([]string{"Tokens.Example.com", "other.example:7451"})(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	for host, ok := range map[string]bool{
		"127.0.0.1:7451":         true,
		"[::1]:7451":             true,
		"[::1]":                  true,
		"10.1.2.3":               true,
		"localhost:7451":         true,
		"LOCALHOST.":             true,
		"tokens.example.com":     true,
		"tokens.example.com.:80": true,
		"other.example":          true,
		"":                       false,
		"evil.example:7451":      false,
		"localhost.evil.example": false,
		"example.com":            false,
		"127.0.0.1.evil.example": false,
	} {
		r := httptest.NewRequest("GET", "/healthz", nil)
		r.Host = host
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		a := answer{status: w.Code, header: w.Header(), body: w.Body.Bytes()}
		if ok {
			if a.status != 200 {
				t.Errorf("Host %q: status %d, want 200", host, a.status)
			}
			continue
		}
		a.wantProblem(t, http.StatusMisdirectedRequest, tokenservice.ProblemWrongHost)
	}
}
