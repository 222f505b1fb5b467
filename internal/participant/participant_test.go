package participant

import (
	"net/http"
	"testing"
)

// The participant's server bounds every phase of a connection. With only
// a header timeout, a client that sent a signal's body a byte a second, or
// kept a connection idle, held it for ever (tried: still open after 95 s
// and 150 s).
func TestServerBoundsSlowClients(t *testing.T) {
	srv := newServer(http.NotFoundHandler())
	if srv.ReadHeaderTimeout <= 0 || srv.ReadTimeout <= 0 || srv.WriteTimeout <= 0 || srv.IdleTimeout <= 0 || srv.MaxHeaderBytes <= 0 {
		t.Errorf("server without a bound: read header %v, read %v, write %v, idle %v, header bytes %d",
			srv.ReadHeaderTimeout, srv.ReadTimeout, srv.WriteTimeout, srv.IdleTimeout, srv.MaxHeaderBytes)
	}
}
