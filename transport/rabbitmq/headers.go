package rabbitmq

import (
	"fmt"
	"math"

	"github.com/batonhq/baton"
	amqp "github.com/rabbitmq/amqp091-go"
)

// Header names of the wire format: the same as the NATS transport's, in
// the message's AMQP headers table, with the payload as the body and the
// destination given by the queue the message is in.
const (
	HeaderToken        = "Baton-Token"
	HeaderConversation = "Baton-Conversation"
	HeaderCausation    = "Baton-Causation"
	HeaderType         = "Baton-Type"
	HeaderTraceParent  = "traceparent"
	HeaderTraceState   = "tracestate"

	// HeaderAttempts is the number of deliveries a signal had before this
	// copy of it was published. A delayed Nack publishes a copy, and the
	// queue counts the copy's deliveries from zero, so Attempt adds the two.
	HeaderAttempts = "Baton-Attempts"

	// HeaderParkReason says why a message was moved to the parked queue.
	HeaderParkReason = "Baton-Park-Reason"
	// HeaderParkAttempt is the delivery attempt of the message when it was
	// parked.
	HeaderParkAttempt = "Baton-Park-Attempt"
	// HeaderParkDropped replaces the headers of a parked message that could
	// not be copied, saying why.
	HeaderParkDropped = "Baton-Park-Dropped"

	// headerDeliveryCount is set by quorum queues on a redelivered message:
	// how many times it was returned to the queue (rejected, requeued, or
	// held by a consumer whose channel closed). From RabbitMQ 4.3 it counts
	// only failed deliveries, not explicit requeues; headerAcquiredCount,
	// new in 4.3, counts every earlier delivery.
	headerDeliveryCount = "x-delivery-count"
	headerAcquiredCount = "x-acquired-count"
)

// maxTraceBytes bounds each trace header. W3C asks to propagate at least
// 512 bytes of tracestate; 4 KiB leaves room and still bounds a message.
const maxTraceBytes = 4096

// maxAttempts bounds the attempt count read from headers, so that adding
// the queue's own count never overflows.
const maxAttempts = math.MaxInt32 / 2

// encodeHeaders returns the headers that carry sig's fields. sig must
// already be valid (sig.Validate); trace values are checked here because
// other clients may print them as header lines.
func encodeHeaders(sig baton.Signal) (amqp.Table, error) {
	if err := checkTrace(HeaderTraceParent, sig.Trace.Parent); err != nil {
		return nil, err
	}
	if err := checkTrace(HeaderTraceState, sig.Trace.State); err != nil {
		return nil, err
	}
	h := amqp.Table{
		HeaderToken:        sig.ID.String(),
		HeaderConversation: sig.Conversation.String(),
		HeaderType:         sig.Type,
	}
	if !sig.Causation.IsZero() {
		h[HeaderCausation] = sig.Causation.String()
	}
	if sig.Trace.Parent != "" {
		h[HeaderTraceParent] = sig.Trace.Parent
	}
	if sig.Trace.State != "" {
		h[HeaderTraceState] = sig.Trace.State
	}
	return h, nil
}

// decodeSignal rebuilds the signal that a message in destination's queue
// carries, and the number of deliveries before this one: those a delayed
// copy records (HeaderAttempts) plus the queue's own count. It reads outside
// input: it never panics, and it returns an error wrapping
// baton.ErrInvalidSignal for anything that is not a well-formed signal, so
// such a message is never handed to the engine. Unknown headers (such as
// the x-death of a dead-lettered message) are ignored.
func decodeSignal(h amqp.Table, destination string, body []byte) (sig baton.Signal, previous int, err error) {
	if sig.ID, err = tokenHeader(h, HeaderToken, true); err != nil {
		return baton.Signal{}, 0, err
	}
	if sig.Conversation, err = tokenHeader(h, HeaderConversation, true); err != nil {
		return baton.Signal{}, 0, err
	}
	if sig.Causation, err = tokenHeader(h, HeaderCausation, false); err != nil {
		return baton.Signal{}, 0, err
	}
	if sig.Type, err = stringHeader(h, HeaderType); err != nil {
		return baton.Signal{}, 0, err
	}
	if sig.Trace.Parent, err = traceHeader(h, HeaderTraceParent); err != nil {
		return baton.Signal{}, 0, err
	}
	if sig.Trace.State, err = traceHeader(h, HeaderTraceState); err != nil {
		return baton.Signal{}, 0, err
	}
	sig.Destination = destination
	if len(body) > 0 {
		sig.Payload = body
	}
	if err := sig.Validate(); err != nil {
		return baton.Signal{}, 0, err
	}
	earlier, err := countHeader(h, HeaderAttempts)
	if err != nil {
		return baton.Signal{}, 0, err
	}
	returned, err := countHeader(h, headerDeliveryCount)
	if err != nil {
		return baton.Signal{}, 0, err
	}
	acquired, err := countHeader(h, headerAcquiredCount)
	if err != nil {
		return baton.Signal{}, 0, err
	}
	return sig, earlier + max(returned, acquired), nil
}

// stringHeader returns the value of key, "" when absent. AMQP tables hold
// typed values: a string (or the byte array some clients send for one) is
// accepted, anything else is refused.
func stringHeader(h amqp.Table, key string) (string, error) {
	switch v := h[key].(type) {
	case nil:
		return "", nil
	case string:
		return v, nil
	case []byte:
		return string(v), nil
	default:
		return "", fmt.Errorf("%w: header %s holds a %T, not a string", baton.ErrInvalidSignal, key, v)
	}
}

func tokenHeader(h amqp.Table, key string, required bool) (baton.TokenID, error) {
	v, err := stringHeader(h, key)
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

func traceHeader(h amqp.Table, key string) (string, error) {
	v, err := stringHeader(h, key)
	if err != nil {
		return "", err
	}
	if err := checkTrace(key, v); err != nil {
		return "", err
	}
	return v, nil
}

// countHeader reads a non-negative count, 0 when absent. The broker sends
// x-delivery-count as a long; other integer types are accepted too.
func countHeader(h amqp.Table, key string) (int, error) {
	var n int64
	switch v := h[key].(type) {
	case nil:
		return 0, nil
	case int64:
		n = v
	case int32:
		n = int64(v)
	case int16:
		n = int64(v)
	case int8:
		n = int64(v)
	case int:
		n = int64(v)
	case uint8:
		n = int64(v)
	case uint16:
		n = int64(v)
	case uint32:
		n = int64(v)
	default:
		return 0, fmt.Errorf("%w: header %s holds a %T, not an integer", baton.ErrInvalidSignal, key, v)
	}
	if n < 0 || n > maxAttempts {
		return 0, fmt.Errorf("%w: header %s is %d, outside 0 to %d", baton.ErrInvalidSignal, key, n, maxAttempts)
	}
	return int(n), nil
}

// checkTrace accepts printable ASCII up to maxTraceBytes, which is all that
// W3C trace context uses, and keeps header values free of line breaks.
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
