package demo

import (
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/batonhq/baton/backend/embedded"
)

// The demo's dashboard needs no credentials because only this machine
// reaches it; a web page that DNS rebinding points at it sends a foreign
// Host and is refused.
func TestServicesRefuseForeignHostNames(t *testing.T) {
	t.Parallel()
	tokens, err := embedded.Open(filepath.Join(t.TempDir(), "tokens.db"), embedded.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tokens.Close() })
	d := &demo{opts: Options{Addr: DefaultAddr}, tokens: tokens}
	_, h, err := d.services()
	if err != nil {
		t.Fatal(err)
	}
	for host, want := range map[string]int{
		"127.0.0.1:7450": http.StatusOK, "localhost:7450": http.StatusOK,
		"rebind.attacker.example:7450": http.StatusMisdirectedRequest,
	} {
		for _, path := range []string{"/api/stats", "/v1/openapi.yaml"} { // the dashboard's and the API's
			r := httptest.NewRequest("GET", path, nil)
			r.Host = host
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != want {
				t.Errorf("GET %s with Host %s: %d, want %d", path, host, w.Code, want)
			}
		}
	}
}
