package rabbitmq

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/batonhq/baton"
	amqp "github.com/rabbitmq/amqp091-go"
)

// headerBlock renders header lines, the fuzz input's readable form of an
// AMQP headers table: "Key: value" is a string, "Key#: 12" an integer
// (a long, as the broker sends x-delivery-count), "Key%: value" a byte
// array. A later line for a key replaces an earlier one.
func headerBlock(lines ...string) string { return strings.Join(lines, "\n") }

func parseHeaderBlock(raw string) amqp.Table {
	h := amqp.Table{}
	for line := range strings.SplitSeq(raw, "\n") {
		key, value, ok := strings.Cut(line, ": ")
		if !ok {
			continue
		}
		switch {
		case strings.HasSuffix(key, "#"):
			n, err := strconv.ParseInt(value, 10, 64)
			if err != nil {
				continue
			}
			h[strings.TrimSuffix(key, "#")] = n
		case strings.HasSuffix(key, "%"):
			h[strings.TrimSuffix(key, "%")] = []byte(value)
		default:
			h[key] = value
		}
	}
	return h
}

const (
	idA = "0123456789abcdef0123456789abcdef"
	idB = "fedcba9876543210fedcba9876543210"
	idC = "00000000000000000000000000000001"
)

// FuzzDecodeHeaders feeds the decoder arbitrary header tables, bodies and
// destinations. Seeds are below and in testdata/fuzz/FuzzDecodeHeaders.
// Run it with: go test -run '^$' -fuzz FuzzDecodeHeaders ./transport/rabbitmq/
func FuzzDecodeHeaders(f *testing.F) {
	valid := []string{"Baton-Token: " + idA, "Baton-Conversation: " + idB, "Baton-Causation: " + idC, "Baton-Type: order.placed",
		"traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "tracestate: congo=t61rcWkgMzE"}
	seeds := []struct {
		raw  string
		body []byte
	}{
		{headerBlock(valid...), []byte(`{"order":1}`)},
		{headerBlock(valid[:4]...), nil},                             // no trace
		{headerBlock(valid[0], valid[1], valid[3]), []byte{0, 0xff}}, // root: no causation
		{"", []byte("no headers at all")},
		{headerBlock(valid[1:]...), nil},                                                        // no token
		{headerBlock("Baton-Token: 0123456789ABCDEF0123456789ABCDEF", valid[1], valid[3]), nil}, // uppercase hex
		{headerBlock("Baton-Token: 0123", valid[1], valid[3]), nil},                             // short
		{headerBlock("Baton-Token: 00000000000000000000000000000000", valid[1], valid[3]), nil}, // zero id
		{headerBlock("Baton-Token#: 12", valid[1], valid[3]), nil},                              // wrong type
		{headerBlock("Baton-Token%: "+idA, valid[1], valid[3]), nil},                            // bytes for a string
		{headerBlock(valid[0], valid[1], "Baton-Causation: zz", valid[3]), nil},                 // bad causation
		{headerBlock(valid[0], valid[1]), nil},                                                  // no type
		{headerBlock(valid[0], valid[1], "Baton-Type: has space"), nil},                         // bad type
		{headerBlock(valid[0], valid[1], "Baton-Type: "+strings.Repeat("t", 201)), nil},
		{headerBlock(valid[0], valid[1], valid[3], "traceparent: a\x00b"), nil},
		{headerBlock(valid[0], valid[1], valid[3], "tracestate: "+strings.Repeat("s", maxTraceBytes+1)), nil},
		{headerBlock(valid[0], valid[1], "Baton-Type: тип"), []byte("unicode type")},
		{headerBlock(append(valid, "x-delivery-count#: 3", "Baton-Attempts#: 4")...), nil},
		{headerBlock(append(valid, "x-delivery-count#: -1")...), nil},
		{headerBlock(append(valid, "x-delivery-count#: 9223372036854775807")...), nil},
		{headerBlock(append(valid, "Baton-Attempts: 4")...), nil}, // a string count
		{headerBlock(append(valid, "x-death: ignored", "x-first-death-reason: expired")...), nil},
		{headerBlock(append(valid, "x-delivery-count#: 1", "x-acquired-count#: 5")...), nil},
		{headerBlock(append(valid, "x-acquired-count: five")...), nil},
	}
	for _, s := range seeds {
		f.Add(s.raw, s.body, "orders")
	}
	f.Add(headerBlock(valid...), []byte("x"), "")        // no destination
	f.Add(headerBlock(valid...), []byte("x"), "a.b.*.#") // odd but valid destination

	f.Fuzz(func(t *testing.T, raw string, body []byte, destination string) {
		h := parseHeaderBlock(raw)
		sig, previous, err := decodeSignal(h, destination, body)
		if err != nil {
			if !errors.Is(err, baton.ErrInvalidSignal) {
				t.Fatalf("decode error %v does not wrap baton.ErrInvalidSignal", err)
			}
			return
		}
		if err := sig.Validate(); err != nil {
			t.Fatalf("decoded an invalid signal: %v", err)
		}
		if previous < 0 || previous > 2*maxAttempts {
			t.Fatalf("previous deliveries %d out of bounds", previous)
		}
		if sig.Destination != destination || !bytes.Equal(sig.Payload, body) {
			t.Fatalf("decoded destination %q and %d payload bytes from %q and %d bytes", sig.Destination, len(sig.Payload), destination, len(body))
		}
		if got, _ := stringHeader(h, HeaderToken); got != sig.ID.String() {
			t.Fatalf("token %s decoded from header %q", sig.ID, got)
		}
		// What decodes must encode and decode to the same signal.
		again, err := encodeHeaders(sig)
		if err != nil {
			t.Fatalf("encode a decoded signal: %v", err)
		}
		if err := again.Validate(); err != nil {
			t.Fatalf("encoded headers are not a valid AMQP table: %v", err)
		}
		back, n, err := decodeSignal(again, destination, body)
		if err != nil {
			t.Fatalf("decode of re-encoded signal: %v", err)
		}
		if n != 0 || signalDiffers(back, sig) {
			t.Fatalf("round trip changed the signal: %+v became %+v (%d previous)", sig, back, n)
		}
	})
}

// The oversized payload is checked here rather than seeded: a 1 MiB seed
// slows the fuzzer's mutations to a crawl.
func TestDecodeRefusesOversizedPayload(t *testing.T) {
	t.Parallel()
	h := parseHeaderBlock(headerBlock("Baton-Token: "+idA, "Baton-Conversation: "+idB, "Baton-Type: t"))
	if _, _, err := decodeSignal(h, "d", make([]byte, baton.MaxPayloadBytes)); err != nil {
		t.Errorf("payload of exactly MaxPayloadBytes refused: %v", err)
	}
	if _, _, err := decodeSignal(h, "d", make([]byte, baton.MaxPayloadBytes+1)); !errors.Is(err, baton.ErrInvalidSignal) {
		t.Errorf("payload over MaxPayloadBytes = %v, want ErrInvalidSignal", err)
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	t.Parallel()
	sig := baton.Signal{
		ID: baton.NewTokenID(), Conversation: baton.NewTokenID(), Causation: baton.NewTokenID(),
		Destination: "billing", Type: "invoice.requested", Payload: []byte("{}"),
		Trace: baton.TraceContext{Parent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", State: "a=b"},
	}
	h, err := encodeHeaders(sig)
	if err != nil {
		t.Fatal(err)
	}
	got, previous, err := decodeSignal(h, "billing", sig.Payload)
	if err != nil || previous != 0 || signalDiffers(got, sig) {
		t.Fatalf("round trip: got %+v, %d, %v; want %+v", got, previous, err, sig)
	}
	root := sig
	root.Causation = baton.TokenID{}
	root.Trace = baton.TraceContext{}
	h, _ = encodeHeaders(root)
	for _, key := range []string{HeaderCausation, HeaderTraceParent, HeaderTraceState} {
		if _, ok := h[key]; ok {
			t.Errorf("a root signal without trace carries %s", key)
		}
	}
	if got, _, err := decodeSignal(h, "billing", nil); err != nil || !got.Causation.IsZero() || got.Payload != nil {
		t.Errorf("root signal decoded as %+v, %v", got, err)
	}
	h[HeaderAttempts] = int64(3)
	h[headerDeliveryCount] = int64(2)
	if _, previous, err := decodeSignal(h, "billing", nil); err != nil || previous != 5 {
		t.Errorf("previous deliveries = %d, %v; want 3 recorded + 2 returns", previous, err)
	}
	// RabbitMQ 4.3 counts explicit requeues only in x-acquired-count.
	h[headerAcquiredCount] = int64(4)
	if _, previous, err := decodeSignal(h, "billing", nil); err != nil || previous != 7 {
		t.Errorf("previous deliveries = %d, %v; want 3 recorded + 4 acquired", previous, err)
	}
}

func TestEncodeRefusesUnsafeTrace(t *testing.T) {
	t.Parallel()
	sig := baton.Signal{ID: baton.NewTokenID(), Conversation: baton.NewTokenID(), Destination: "d", Type: "t"}
	for _, trace := range []baton.TraceContext{
		{Parent: "00-x\r\nBaton-Token: " + idA},
		{State: "a=\x01"},
		{State: strings.Repeat("s", maxTraceBytes+1)},
	} {
		sig.Trace = trace
		if _, err := encodeHeaders(sig); !errors.Is(err, baton.ErrInvalidSignal) {
			t.Errorf("encode with trace %q = %v, want ErrInvalidSignal", trace, err)
		}
	}
}
