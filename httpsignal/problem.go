package httpsignal

import (
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"time"
)

// ProblemContentType is the media type of RFC 9457 problem documents.
const ProblemContentType = "application/problem+json"

// problemBase prefixes every problem type; each type is an anchor in the
// protocol document, so a person who meets one can read what it means.
const problemBase = "https://github.com/batonhq/baton/blob/main/docs/protocol.md#problem-"

// Problem types of the answers to signal requests, form posts and root
// token requests (RFC 9457 "type"). Clients match on these, not on titles.
const (
	ProblemAlreadyProcessed = problemBase + "already-processed"
	ProblemInProgress       = problemBase + "in-progress"
	ProblemMalformed        = problemBase + "malformed-signal"
	ProblemTooLarge         = problemBase + "payload-too-large"
	ProblemMisaddressed     = problemBase + "misaddressed"
	ProblemExpired          = problemBase + "expired"
	ProblemUnknownType      = problemBase + "unknown-type"
	ProblemUnroutable       = problemBase + "unroutable"
	ProblemDigestMismatch   = problemBase + "digest-mismatch"
	ProblemRejected         = problemBase + "rejected"
	ProblemUnavailable      = problemBase + "unavailable"
	ProblemMethod           = problemBase + "method-not-allowed"
	ProblemRateLimited      = problemBase + "rate-limited"
	ProblemUnauthorized     = problemBase + "unauthorized"
	ProblemForbidden        = problemBase + "forbidden"
)

// Problem is an RFC 9457 problem document. Token is an extension member
// naming the signal's token, when it is known.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
	Token  string `json:"token,omitempty"`
}

func (p *Problem) Error() string {
	if p.Detail == "" {
		return fmt.Sprintf("%d %s", p.Status, p.Title)
	}
	return fmt.Sprintf("%d %s: %s", p.Status, p.Title, p.Detail)
}

// writeProblem writes p with a Retry-After header when retryAfter > 0.
func writeProblem(w http.ResponseWriter, p *Problem, retryAfter time.Duration) {
	h := w.Header()
	h.Set("Content-Type", ProblemContentType)
	h.Set("Cache-Control", "no-store")
	if retryAfter > 0 {
		h.Set("Retry-After", retryAfterSeconds(retryAfter))
	}
	body, _ := json.Marshal(p) // cannot fail: strings and an int
	w.WriteHeader(p.Status)
	_, _ = w.Write(append(body, '\n'))
}

// retryAfterSeconds renders d as Retry-After delay-seconds, rounded up and
// at least one second.
func retryAfterSeconds(d time.Duration) string {
	return strconv.FormatInt(int64(max((d+time.Second-1)/time.Second, 1)), 10)
}

// maxProblemBytes bounds how much of an error answer a client reads.
const maxProblemBytes = 64 << 10

// readProblem reads the problem document of an error answer. An answer that
// is not a problem document (a proxy's page) yields a problem with the
// status text as title and no type.
func readProblem(resp *http.Response) *Problem {
	p := &Problem{Status: resp.StatusCode, Title: http.StatusText(resp.StatusCode)}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxProblemBytes))
	if mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type")); err != nil || mt != ProblemContentType {
		return p
	}
	var doc Problem
	if json.Unmarshal(body, &doc) != nil {
		return p
	}
	doc.Status = resp.StatusCode // the status line is authoritative (RFC 9457 3.1.2)
	if doc.Title == "" {
		doc.Title = p.Title
	}
	return &doc
}
