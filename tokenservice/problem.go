package tokenservice

import (
	"fmt"
	"net/http"
)

// ProblemContentType is the media type of RFC 9457 problem documents.
const ProblemContentType = "application/problem+json"

// problemBase prefixes every problem type: each is an anchor in the token
// service's documentation, so whoever meets one can read what it means.
const problemBase = "https://github.com/batonhq/baton/blob/main/docs/token-service.md#problem-"

// Problem types (RFC 9457 "type"). They are stable: clients match on them,
// never on titles or details.
const (
	// ProblemInvalid (400): the request is malformed: bad JSON, an unknown
	// field, a malformed token id, an invalid token. Nothing was applied.
	ProblemInvalid = problemBase + "invalid-request"
	// ProblemUnauthorized (401): no credentials, or credentials that name
	// no registered system.
	ProblemUnauthorized = problemBase + "unauthorized"
	// ProblemForbidden (403): the calling system lacks the permission the
	// request needs (issue roots, observe, expire roots).
	ProblemForbidden = problemBase + "forbidden"
	// ProblemNotYourToken (403): the token is addressed to a destination
	// the calling system may not consume.
	ProblemNotYourToken = problemBase + "not-your-token"
	// ProblemNotAChild (403): a transition would create a token outside the
	// consumed token's conversation, or whose causation is not the consumed
	// token.
	ProblemNotAChild = problemBase + "not-a-child"
	// ProblemNotFound (404): the token is not live.
	ProblemNotFound = problemBase + "not-found"
	// ProblemNoRoute (404): no API route has this path.
	ProblemNoRoute = problemBase + "no-such-route"
	// ProblemMethod (405): the route exists but not for this method.
	ProblemMethod = problemBase + "method-not-allowed"
	// ProblemExists (409): a token with this id already exists.
	ProblemExists = problemBase + "token-exists"
	// ProblemExpired (410): the root token expired before it was claimed.
	// Nothing was applied; the signal it was issued for is refused.
	ProblemExpired = problemBase + "expired"
	// ProblemTooLarge (413): the request body exceeds the service's limit.
	ProblemTooLarge = problemBase + "body-too-large"
	// ProblemMediaType (415): a request body that is not application/json.
	ProblemMediaType = problemBase + "unsupported-media-type"
	// ProblemOutcomeUnknown (500): the token store failed in a way that
	// leaves the outcome unknown. Retrying is safe.
	ProblemOutcomeUnknown = problemBase + "outcome-unknown"
	// ProblemNotApplied (503): the token store is unavailable and nothing
	// was applied. Retry later.
	ProblemNotApplied = problemBase + "not-applied"
)

// Problem is an RFC 9457 problem document. Token is an extension member
// naming the token concerned, when there is one.
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

// titles are the fixed, human-readable summaries of each type.
var titles = map[string]string{
	ProblemInvalid:        "Invalid request",
	ProblemUnauthorized:   "Unauthorized",
	ProblemForbidden:      "Forbidden",
	ProblemNotYourToken:   "Token addressed to another destination",
	ProblemNotAChild:      "Token is not a child of the consumed token",
	ProblemNotFound:       "Token not live",
	ProblemNoRoute:        "No such route",
	ProblemMethod:         "Method not allowed",
	ProblemExists:         "Token exists",
	ProblemExpired:        "Root token expired",
	ProblemTooLarge:       "Request body too large",
	ProblemMediaType:      "Unsupported media type",
	ProblemOutcomeUnknown: "Token store outcome unknown",
	ProblemNotApplied:     "Token store unavailable",
}

var statuses = map[string]int{
	ProblemInvalid:        http.StatusBadRequest,
	ProblemUnauthorized:   http.StatusUnauthorized,
	ProblemForbidden:      http.StatusForbidden,
	ProblemNotYourToken:   http.StatusForbidden,
	ProblemNotAChild:      http.StatusForbidden,
	ProblemNotFound:       http.StatusNotFound,
	ProblemNoRoute:        http.StatusNotFound,
	ProblemMethod:         http.StatusMethodNotAllowed,
	ProblemExists:         http.StatusConflict,
	ProblemExpired:        http.StatusGone,
	ProblemTooLarge:       http.StatusRequestEntityTooLarge,
	ProblemMediaType:      http.StatusUnsupportedMediaType,
	ProblemOutcomeUnknown: http.StatusInternalServerError,
	ProblemNotApplied:     http.StatusServiceUnavailable,
}

// problem builds the problem document of one of the types above.
func problem(typ string, format string, args ...any) *Problem {
	return &Problem{Type: typ, Title: titles[typ], Status: statuses[typ], Detail: fmt.Sprintf(format, args...)}
}

// writeProblem writes p. A 401 carries WWW-Authenticate (RFC 6750) and a
// 503 a Retry-After.
func writeProblem(w http.ResponseWriter, p *Problem) {
	h := w.Header()
	h.Set("Content-Type", ProblemContentType)
	h.Set("Cache-Control", "no-store")
	switch p.Status {
	case http.StatusUnauthorized:
		h.Set("WWW-Authenticate", `Bearer realm="baton"`)
	case http.StatusServiceUnavailable:
		h.Set("Retry-After", "1")
	}
	w.WriteHeader(p.Status)
	_, _ = w.Write(marshal(p))
}
