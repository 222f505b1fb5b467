package conformance

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/httpsignal"
)

// answer is what the participant answered to one signal request.
type answer struct {
	status       int
	outcome      string // Baton-Outcome
	token        string // Baton-Token
	problem      string // the problem type's name, after "#problem-"
	retryAfter   string
	cacheControl string
	allow        string
	body         []byte
}

func (a answer) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d", a.status)
	if a.outcome != "" {
		fmt.Fprintf(&b, " %s", a.outcome)
	}
	if a.problem != "" {
		fmt.Fprintf(&b, " (%s)", a.problem)
	}
	return b.String()
}

// is reports whether a has the status and, if given, the problem type.
func (a answer) is(status int, problem string) bool {
	return a.status == status && (problem == "" || a.problem == problem)
}

// count is the count the participant's activity replied.
func (a answer) count() (int, error) {
	var reply struct {
		Count *int `json:"count"`
	}
	if err := json.Unmarshal(a.body, &reply); err != nil || reply.Count == nil {
		return 0, fmt.Errorf("the reply %q is not the counting activity's {\"count\": n}", clip(a.body))
	}
	return *reply.Count, nil
}

// request builds the HTTP request that carries sig, then lets change alter
// it (to tamper with it).
func (r *run) request(ctx context.Context, sig baton.Signal, change func(*http.Request)) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.participant, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if err := httpsignal.EncodeRequest(req, sig); err != nil {
		return nil, err
	}
	if change != nil {
		change(req)
	}
	return req, nil
}

// send sends sig once and reads the answer. change, if not nil, alters the
// request first.
func (r *run) send(ctx context.Context, sig baton.Signal, change func(*http.Request)) (answer, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	req, err := r.request(ctx, sig, change)
	if err != nil {
		return answer{}, err
	}
	return r.do(req)
}

func (r *run) do(req *http.Request) (answer, error) {
	resp, err := r.client.Do(req)
	if err != nil {
		return answer{}, fmt.Errorf("no answer: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return answer{}, fmt.Errorf("reading the answer: %w", err)
	}
	a := answer{status: resp.StatusCode, body: body,
		outcome:      resp.Header.Get(httpsignal.HeaderOutcome),
		token:        resp.Header.Get(httpsignal.HeaderToken),
		retryAfter:   resp.Header.Get("Retry-After"),
		cacheControl: resp.Header.Get("Cache-Control"),
		allow:        resp.Header.Get("Allow")}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), httpsignal.ProblemContentType) {
		var p httpsignal.Problem
		if json.Unmarshal(body, &p) == nil {
			_, a.problem, _ = strings.Cut(p.Type, "#problem-")
		}
	}
	return a, nil
}

// settle sends sig until the participant is done with it: an answer that
// is neither 503 nor 409 in-progress. It returns that answer.
func (r *run) settle(ctx context.Context, sig baton.Signal) (answer, error) {
	deadline := time.Now().Add(r.cfg.Timeout)
	for {
		a, err := r.send(ctx, sig, nil)
		retry := err != nil || a.status == http.StatusServiceUnavailable || a.outcome == httpsignal.OutcomeInProgress
		if !retry {
			return a, nil
		}
		if time.Now().After(deadline) {
			if err != nil {
				return answer{}, err
			}
			return a, fmt.Errorf("still %s after %s of retries", a, r.cfg.Timeout)
		}
		select {
		case <-ctx.Done():
			return answer{}, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// clip shortens b for a message.
func clip(b []byte) string {
	const most = 120
	b = bytes.TrimSpace(b)
	if len(b) > most {
		return string(b[:most]) + "..."
	}
	return string(b)
}
