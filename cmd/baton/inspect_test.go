package main

import (
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
)

// The dashboard reader sends an observe key only to the server it is
// given. http.DefaultClient, following a redirect, kept Authorization for
// another port or scheme of the same host, so a redirect took the key in
// clear to another listener; a redirect is now an error.
func TestDashboardReaderFollowsNoRedirect(t *testing.T) {
	t.Parallel()
	var leaked atomic.Bool
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		leaked.Store(r.Header.Get("Authorization") != "")
		_, _ = w.Write([]byte("{}"))
	}))
	t.Cleanup(elsewhere.Close)
	redirecting := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, elsewhere.URL+r.URL.Path, http.StatusFound)
	}))
	t.Cleanup(redirecting.Close)
	var into map[string]any
	if err := getJSONWithKey(t.Context(), redirecting.URL, "bk_secret", "/api/stats", &into); err == nil {
		t.Error("a redirect was followed to an answer")
	}
	if leaked.Load() {
		t.Error("the key was sent to the redirect's target")
	}
}
