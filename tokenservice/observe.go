package tokenservice

import (
	"log/slog"
	"net/http"
)

// RequireObserve returns middleware that serves a request only to a
// registered system with the observe permission, authenticated exactly as
// the API authenticates its callers: a bearer API key, a verified client
// certificate, or both naming the same system. Others get the API's
// problem documents: 401 unauthorized without valid credentials, 403
// forbidden for a system without observe. `baton serve` puts the dashboard
// and /metrics behind it, because they show every in-flight token id, and
// ids are capabilities.
//
// log receives one line per refused request, never its credentials; nil
// discards.
func RequireObserve(systems []System, log *slog.Logger) (func(http.Handler) http.Handler, error) {
	registered, err := registerAll(systems)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := newCallers(registered)
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			caller, p := c.authenticate(r)
			if p == nil && !caller.Observe {
				p = problem(ProblemForbidden, "system %q may not observe: the dashboard and metrics need the observe permission", caller.Name)
			}
			if p != nil {
				log.Info("request refused", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr, "reason", p.Detail)
				writeProblem(w, p)
				return
			}
			next.ServeHTTP(w, r)
		})
	}, nil
}

// Authenticator returns a function that finds the registered system a
// request comes from, with exactly the credentials the API accepts (see
// RequireObserve). Its error, a *Problem, is a 401 for missing or unknown
// credentials. `baton serve` uses it to admit the dashboard's replay and
// discard requests only from systems with the operate permission.
func Authenticator(systems []System) (func(*http.Request) (System, error), error) {
	registered, err := registerAll(systems)
	if err != nil {
		return nil, err
	}
	c := newCallers(registered)
	return func(r *http.Request) (System, error) {
		caller, p := c.authenticate(r)
		if p != nil {
			return System{}, p
		}
		return caller.System, nil
	}, nil
}
