package nats

import (
	"fmt"

	"github.com/batonhq/baton"
	"github.com/nats-io/nats.go"
)

// Header names of the wire format. A signal travels as one JetStream
// message: these headers, the payload as the body, and the destination in
// the subject (<prefix>.sig.<destination>).
const (
	HeaderToken        = "Baton-Token"
	HeaderConversation = "Baton-Conversation"
	HeaderCausation    = "Baton-Causation"
	HeaderType         = "Baton-Type"
	HeaderTraceParent  = "traceparent"
	HeaderTraceState   = "tracestate"

	// HeaderParkReason says why a message was moved to the parked subject.
	HeaderParkReason = "Baton-Park-Reason"
	// HeaderParkAttempt is the delivery count of the message when it was
	// parked.
	HeaderParkAttempt = "Baton-Park-Attempt"
)

// maxTraceBytes bounds each trace header. W3C asks to propagate at least
// 512 bytes of tracestate; 4 KiB leaves room and still bounds a message.
const maxTraceBytes = 4096

// headerAllowance is the room a message's headers may take beside the
// payload: the baton headers above at their limits (about 9 KiB), the
// Nats-Msg-Id header and a park reason.
const headerAllowance = 16 << 10

// encodeHeaders returns the headers that carry sig's fields. sig must
// already be valid (sig.Validate); trace values are checked here because
// they end up in a header line.
func encodeHeaders(sig baton.Signal) (nats.Header, error) {
	if err := checkTrace(HeaderTraceParent, sig.Trace.Parent); err != nil {
		return nil, err
	}
	if err := checkTrace(HeaderTraceState, sig.Trace.State); err != nil {
		return nil, err
	}
	h := nats.Header{}
	h.Set(HeaderToken, sig.ID.String())
	h.Set(HeaderConversation, sig.Conversation.String())
	if !sig.Causation.IsZero() {
		h.Set(HeaderCausation, sig.Causation.String())
	}
	h.Set(HeaderType, sig.Type)
	if sig.Trace.Parent != "" {
		h.Set(HeaderTraceParent, sig.Trace.Parent)
	}
	if sig.Trace.State != "" {
		h.Set(HeaderTraceState, sig.Trace.State)
	}
	return h, nil
}

// decodeSignal rebuilds the signal that a message addressed to destination
// carries. It reads outside input: it never panics, and it returns an error
// wrapping baton.ErrInvalidSignal for anything that is not a well-formed
// signal, so such a message is never handed to the engine.
func decodeSignal(h nats.Header, destination string, body []byte) (baton.Signal, error) {
	var sig baton.Signal
	var err error
	if sig.ID, err = tokenHeader(h, HeaderToken, true); err != nil {
		return baton.Signal{}, err
	}
	if sig.Conversation, err = tokenHeader(h, HeaderConversation, true); err != nil {
		return baton.Signal{}, err
	}
	if sig.Causation, err = tokenHeader(h, HeaderCausation, false); err != nil {
		return baton.Signal{}, err
	}
	if sig.Type, err = singleHeader(h, HeaderType); err != nil {
		return baton.Signal{}, err
	}
	if sig.Trace.Parent, err = traceHeader(h, HeaderTraceParent); err != nil {
		return baton.Signal{}, err
	}
	if sig.Trace.State, err = traceHeader(h, HeaderTraceState); err != nil {
		return baton.Signal{}, err
	}
	sig.Destination = destination
	if len(body) > 0 {
		sig.Payload = body
	}
	if err := sig.Validate(); err != nil {
		return baton.Signal{}, err
	}
	return sig, nil
}

// singleHeader returns the value of key, "" when absent. A header given
// more than once is refused: which copy counts would be ambiguous.
func singleHeader(h nats.Header, key string) (string, error) {
	values := h.Values(key)
	switch len(values) {
	case 0:
		return "", nil
	case 1:
		return values[0], nil
	default:
		return "", fmt.Errorf("%w: header %s given %d times", baton.ErrInvalidSignal, key, len(values))
	}
}

func tokenHeader(h nats.Header, key string, required bool) (baton.TokenID, error) {
	v, err := singleHeader(h, key)
	if err != nil {
		return baton.TokenID{}, err
	}
	if v == "" {
		if required {
			return baton.TokenID{}, fmt.Errorf("%w: missing header %s", baton.ErrInvalidSignal, key)
		}
		return baton.TokenID{}, nil
	}
	id, err := baton.ParseTokenID(v)
	if err != nil {
		return baton.TokenID{}, fmt.Errorf("%w: header %s: %w", baton.ErrInvalidSignal, key, err)
	}
	if id.IsZero() {
		return baton.TokenID{}, fmt.Errorf("%w: header %s is the zero id", baton.ErrInvalidSignal, key)
	}
	return id, nil
}

func traceHeader(h nats.Header, key string) (string, error) {
	v, err := singleHeader(h, key)
	if err != nil {
		return "", err
	}
	if err := checkTrace(key, v); err != nil {
		return "", err
	}
	return v, nil
}

// checkTrace accepts printable ASCII up to maxTraceBytes, which is all that
// W3C trace context uses, and keeps header lines free of line breaks.
func checkTrace(key, v string) error {
	if len(v) > maxTraceBytes {
		return fmt.Errorf("%w: %s longer than %d bytes", baton.ErrInvalidSignal, key, maxTraceBytes)
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 || c > 0x7e {
			return fmt.Errorf("%w: %s contains byte %#x", baton.ErrInvalidSignal, key, c)
		}
	}
	return nil
}
