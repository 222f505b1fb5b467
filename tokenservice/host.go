package tokenservice

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// ProblemWrongHost (421): the request's Host header names none of the
// service's names. A browser tricked by DNS rebinding sends the attacker's
// name, so such a request never reaches the API or the dashboard.
const ProblemWrongHost = problemBase + "wrong-host"

// CheckHost returns middleware that answers 421 with a problem document
// (ProblemWrongHost) to a request whose Host header, without its port, is
// not one of:
//
//   - an IP address: DNS rebinding needs a name the attacker controls, and
//     a browser sends an address only when it was pointed at the address
//     itself;
//   - "localhost";
//   - one of names, compared case-insensitively, without a trailing dot.
//
// A request without a Host header is refused too.
func CheckHost(names []string) func(http.Handler) http.Handler {
	allowed := map[string]bool{"localhost": true}
	for _, n := range names {
		if n = normalHost(n); n != "" {
			allowed[n] = true
		}
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			host := normalHost(r.Host)
			if _, err := netip.ParseAddr(host); err != nil && !allowed[host] {
				writeProblem(w, &Problem{Type: ProblemWrongHost, Title: "Misdirected request", Status: http.StatusMisdirectedRequest,
					Detail: fmt.Sprintf("Host %q is none of the names this service answers to (baton serve: --allowed-hosts)", r.Host)})
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// normalHost returns the host of a Host header or a host[:port], in lower
// case, without its port, brackets and trailing dot.
func normalHost(h string) string {
	if host, _, err := net.SplitHostPort(h); err == nil {
		h = host
	}
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	return strings.TrimSuffix(strings.ToLower(h), ".")
}
