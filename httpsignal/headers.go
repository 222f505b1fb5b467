package httpsignal

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/batonhq/baton"
)

// Header names of a signal request and of the answers to it.
const (
	HeaderToken          = "Baton-Token"
	HeaderConversation   = "Baton-Conversation"
	HeaderCausation      = "Baton-Causation"
	HeaderType           = "Baton-Type"
	HeaderDestination    = "Baton-Destination"
	HeaderIdempotencyKey = "Idempotency-Key"
	HeaderTraceparent    = "Traceparent"
	HeaderTracestate     = "Tracestate"
	// HeaderOutcome is set on answers: one of the Outcome constants.
	HeaderOutcome = "Baton-Outcome"
)

// Values of the Baton-Outcome answer header.
const (
	// OutcomeApplied: this request ran the activity; the body is its reply.
	OutcomeApplied = "applied"
	// OutcomeReplayed: an earlier copy ran the activity; the body is the
	// reply that copy produced.
	OutcomeReplayed = "replayed"
	// OutcomeDuplicate: the token was already consumed (or never existed);
	// the signal counts as delivered, but no reply is held any more.
	OutcomeDuplicate = "duplicate"
	// OutcomeInProgress: another copy is being processed right now in this
	// process; retry after the Retry-After delay.
	OutcomeInProgress = "in-progress"
)

// Errors of DecodeRequest. Every error it returns matches ErrMalformed or
// ErrTooLarge (a request without a Baton-Token header matches both
// ErrMalformed and ErrNoSignal).
var (
	ErrMalformed = errors.New("httpsignal: malformed signal request")
	ErrNoSignal  = errors.New("httpsignal: request carries no Baton-Token header")
	ErrTooLarge  = errors.New("httpsignal: payload too large")
)

// maxTracestate bounds the tracestate kept from a request; W3C asks
// propagators to keep at least 512 characters.
const maxTracestate = 512

// EncodeRequest turns req into the request that carries sig: method POST,
// body the payload, and the Baton headers, the W3C trace context and an
// Idempotency-Key equal to the token id (for services that do not take part
// in baton but deduplicate by that key). It validates sig first. The body
// can be replayed (GetBody is set), so a Transport may retry the request.
func EncodeRequest(req *http.Request, sig baton.Signal) error {
	if err := sig.Validate(); err != nil {
		return err
	}
	if req.Header == nil {
		req.Header = make(http.Header)
	}
	h := req.Header
	req.Method = http.MethodPost
	h.Set(HeaderToken, sig.ID.String())
	h.Set(HeaderConversation, sig.Conversation.String())
	h.Del(HeaderCausation)
	if !sig.Causation.IsZero() {
		h.Set(HeaderCausation, sig.Causation.String())
	}
	h.Set(HeaderType, sig.Type)
	h.Set(HeaderDestination, sig.Destination)
	h.Set(HeaderIdempotencyKey, idempotencyKey(sig.ID))
	h.Del(HeaderTraceparent)
	h.Del(HeaderTracestate)
	if validTraceparent(sig.Trace.Parent) {
		h.Set(HeaderTraceparent, sig.Trace.Parent)
		if validTracestate(sig.Trace.State) && sig.Trace.State != "" {
			h.Set(HeaderTracestate, sig.Trace.State)
		}
	}
	if h.Get("Content-Type") == "" {
		h.Set("Content-Type", "application/octet-stream")
	}
	payload := bytes.Clone(sig.Payload)
	req.ContentLength = int64(len(payload))
	req.GetBody = func() (io.ReadCloser, error) {
		if len(payload) == 0 {
			return http.NoBody, nil
		}
		return io.NopCloser(bytes.NewReader(payload)), nil
	}
	req.Body, _ = req.GetBody()
	return nil
}

// idempotencyKey renders a token id as the IETF Idempotency-Key header
// value, a Structured Field string (RFC 8941), so it is quoted.
func idempotencyKey(id baton.TokenID) string { return `"` + id.String() + `"` }

// unquote strips the quotes of a Structured Field string; a bare key (as
// many services send it) is taken as it is.
func unquote(key string) string {
	if len(key) >= 2 && key[0] == '"' && key[len(key)-1] == '"' {
		return key[1 : len(key)-1]
	}
	return key
}

// DecodeRequest reads the signal that r carries. It accepts only POST, each
// Baton header at most once, token ids as 32 lowercase hex digits, an
// Idempotency-Key (optional, quoted or bare) equal to the token id, and a
// body of at most maxBody bytes (maxBody <= 0 or above baton.MaxPayloadBytes
// means baton.MaxPayloadBytes). The signal must pass Signal.Validate. An
// invalid traceparent or tracestate is dropped rather than refused, as W3C
// Trace Context asks: the trace restarts, the signal is still good.
func DecodeRequest(r *http.Request, maxBody int64) (baton.Signal, error) {
	var sig baton.Signal
	if r.Method != http.MethodPost {
		return sig, fmt.Errorf("%w: method %s, want POST", ErrMalformed, r.Method)
	}
	token, ok, err := single(r.Header, HeaderToken)
	if err != nil {
		return sig, err
	}
	if !ok {
		return sig, fmt.Errorf("%w: %w", ErrMalformed, ErrNoSignal)
	}
	if sig.ID, err = parseID(HeaderToken, token); err != nil {
		return sig, err
	}
	conversation, ok, err := single(r.Header, HeaderConversation)
	if err != nil {
		return sig, err
	}
	if !ok {
		return sig, fmt.Errorf("%w: missing %s header", ErrMalformed, HeaderConversation)
	}
	if sig.Conversation, err = parseID(HeaderConversation, conversation); err != nil {
		return sig, err
	}
	causation, ok, err := single(r.Header, HeaderCausation)
	if err != nil {
		return sig, err
	}
	if ok {
		if sig.Causation, err = parseID(HeaderCausation, causation); err != nil {
			return sig, err
		}
	}
	var hasType, hasDestination bool
	if sig.Type, hasType, err = single(r.Header, HeaderType); err != nil {
		return sig, err
	}
	if sig.Destination, hasDestination, err = single(r.Header, HeaderDestination); err != nil {
		return sig, err
	}
	if !hasType || !hasDestination {
		return sig, fmt.Errorf("%w: %s and %s headers are required", ErrMalformed, HeaderType, HeaderDestination)
	}
	key, ok, err := single(r.Header, HeaderIdempotencyKey)
	if err != nil {
		return sig, err
	}
	if ok && unquote(key) != token {
		return sig, fmt.Errorf("%w: %s %q differs from %s %s", ErrMalformed, HeaderIdempotencyKey, key, HeaderToken, token)
	}
	sig.Trace = decodeTrace(r.Header)
	if sig.Payload, err = readBody(r, maxBody); err != nil {
		return baton.Signal{}, err
	}
	if err := sig.Validate(); err != nil {
		return baton.Signal{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return sig, nil
}

// single returns the one value of header name. More than one value is
// refused: two copies of a token header would leave it open which one the
// signal means.
func single(h http.Header, name string) (string, bool, error) {
	values := h.Values(name)
	switch len(values) {
	case 0:
		return "", false, nil
	case 1:
		return values[0], true, nil
	}
	return "", false, fmt.Errorf("%w: %d %s headers, want one", ErrMalformed, len(values), name)
}

func parseID(header, value string) (baton.TokenID, error) {
	id, err := baton.ParseTokenID(value)
	if err != nil {
		return id, fmt.Errorf("%w: %s: %w", ErrMalformed, header, err)
	}
	if id.IsZero() {
		return id, fmt.Errorf("%w: %s is the zero id", ErrMalformed, header)
	}
	return id, nil
}

func readBody(r *http.Request, maxBody int64) ([]byte, error) {
	if maxBody <= 0 || maxBody > baton.MaxPayloadBytes {
		maxBody = baton.MaxPayloadBytes
	}
	if r.ContentLength > maxBody {
		return nil, fmt.Errorf("%w: Content-Length %d exceeds %d bytes", ErrTooLarge, r.ContentLength, maxBody)
	}
	if r.Body == nil || r.Body == http.NoBody {
		return nil, nil
	}
	payload, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, maxBody))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return nil, fmt.Errorf("%w: body exceeds %d bytes", ErrTooLarge, maxBody)
	case err != nil:
		return nil, fmt.Errorf("%w: read body: %w", ErrMalformed, err)
	case len(payload) == 0:
		return nil, nil
	}
	return payload, nil
}

// decodeTrace keeps a valid traceparent (version 00) and, with it, a valid
// tracestate; list headers that arrive split are joined as RFC 9110 allows.
func decodeTrace(h http.Header) baton.TraceContext {
	parents := h.Values(HeaderTraceparent)
	if len(parents) != 1 || !validTraceparent(parents[0]) {
		return baton.TraceContext{}
	}
	tc := baton.TraceContext{Parent: parents[0]}
	if state := strings.Join(h.Values(HeaderTracestate), ","); validTracestate(state) {
		tc.State = state
	}
	return tc
}

// validTraceparent accepts version 00 of W3C Trace Context:
// 00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>, lowercase, with
// neither id all zeros.
func validTraceparent(s string) bool {
	if len(s) != 55 || s[2] != '-' || s[35] != '-' || s[52] != '-' || s[:2] != "00" {
		return false
	}
	return lowerHex(s[3:35]) && lowerHex(s[36:52]) && lowerHex(s[53:55]) &&
		strings.Trim(s[3:35], "0") != "" && strings.Trim(s[36:52], "0") != ""
}

// validTracestate accepts printable ASCII up to maxTracestate bytes; the
// member syntax is the tracer's concern, which ignores what it cannot parse.
func validTracestate(s string) bool {
	if len(s) > maxTracestate {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

func lowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
