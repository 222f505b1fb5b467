package nats

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/batonhq/baton"
	"github.com/nats-io/nats.go"
)

// headerBlock renders "Key: value" lines, the fuzz input's form of a
// header map, so the corpus is readable and can repeat or omit keys.
func headerBlock(lines ...string) string { return strings.Join(lines, "\n") }

func parseHeaderBlock(raw string) nats.Header {
	h := nats.Header{}
	for line := range strings.SplitSeq(raw, "\n") {
		key, value, ok := strings.Cut(line, ": ")
		if !ok {
			continue
		}
		h.Add(key, value)
	}
	return h
}

const (
	idA = "0123456789abcdef0123456789abcdef"
	idB = "fedcba9876543210fedcba9876543210"
	idC = "00000000000000000000000000000001"
)

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
		{headerBlock(append([]string{"Baton-Token: " + idB}, valid...)...), nil},                // token twice
		{headerBlock("Baton-Token: 0123456789ABCDEF0123456789ABCDEF", valid[1], valid[3]), nil}, // uppercase hex
		{headerBlock("Baton-Token: 0123", valid[1], valid[3]), nil},                             // short
		{headerBlock("Baton-Token: 00000000000000000000000000000000", valid[1], valid[3]), nil}, // zero id
		{headerBlock(valid[0], valid[1], "Baton-Causation: zz", valid[3]), nil},                 // bad causation
		{headerBlock(valid[0], valid[1]), nil},                                                  // no type
		{headerBlock(valid[0], valid[1], "Baton-Type: has space"), nil},                         // bad type
		{headerBlock(valid[0], valid[1], "Baton-Type: "+strings.Repeat("t", 201)), nil},
		{headerBlock(valid[0], valid[1], valid[3], "traceparent: a\x00b"), nil},
		{headerBlock(valid[0], valid[1], valid[3], "tracestate: "+strings.Repeat("s", maxTraceBytes+1)), nil},
		{headerBlock(valid[0], valid[1], valid[3], "traceparent: x", "traceparent: y"), nil},
		{headerBlock(valid[0], valid[1], "Baton-Type: тип"), []byte("unicode type")},
	}
	for _, s := range seeds {
		f.Add(s.raw, s.body, "orders")
	}
	f.Add(headerBlock(valid...), []byte("x"), "")        // no destination
	f.Add(headerBlock(valid...), []byte("x"), "a.b.*.>") // odd but valid destination

	f.Fuzz(func(t *testing.T, raw string, body []byte, destination string) {
		h := parseHeaderBlock(raw)
		sig, err := decodeSignal(h, destination, body)
		if err != nil {
			if !errors.Is(err, baton.ErrInvalidSignal) {
				t.Fatalf("decode error %v does not wrap baton.ErrInvalidSignal", err)
			}
			return
		}
		if err := sig.Validate(); err != nil {
			t.Fatalf("decoded an invalid signal: %v", err)
		}
		if sig.Destination != destination || !bytes.Equal(sig.Payload, body) {
			t.Fatalf("decoded destination %q and %d payload bytes from %q and %d bytes", sig.Destination, len(sig.Payload), destination, len(body))
		}
		if h.Get(HeaderToken) != sig.ID.String() {
			t.Fatalf("token %s decoded from header %q", sig.ID, h.Get(HeaderToken))
		}
		// What decodes must encode and decode to the same signal.
		again, err := encodeHeaders(sig)
		if err != nil {
			t.Fatalf("encode a decoded signal: %v", err)
		}
		back, err := decodeSignal(again, destination, body)
		if err != nil {
			t.Fatalf("decode of re-encoded signal: %v", err)
		}
		if back.ID != sig.ID || back.Conversation != sig.Conversation || back.Causation != sig.Causation ||
			back.Type != sig.Type || back.Trace != sig.Trace || !bytes.Equal(back.Payload, sig.Payload) {
			t.Fatalf("round trip changed the signal: %+v became %+v", sig, back)
		}
	})
}

// The oversized payload is checked here rather than seeded: a 1 MiB seed
// slows the fuzzer's mutations to a crawl.
func TestDecodeRefusesOversizedPayload(t *testing.T) {
	t.Parallel()
	h := parseHeaderBlock(headerBlock("Baton-Token: "+idA, "Baton-Conversation: "+idB, "Baton-Type: t"))
	if _, err := decodeSignal(h, "d", make([]byte, baton.MaxPayloadBytes)); err != nil {
		t.Errorf("payload of exactly MaxPayloadBytes refused: %v", err)
	}
	if _, err := decodeSignal(h, "d", make([]byte, baton.MaxPayloadBytes+1)); !errors.Is(err, baton.ErrInvalidSignal) {
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
	got, err := decodeSignal(h, "billing", sig.Payload)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != sig.ID || got.Conversation != sig.Conversation || got.Causation != sig.Causation || got.Type != sig.Type || got.Trace != sig.Trace {
		t.Fatalf("round trip: got %+v, want %+v", got, sig)
	}
	root := sig
	root.Causation = baton.TokenID{}
	h, _ = encodeHeaders(root)
	if _, ok := h[HeaderCausation]; ok {
		t.Error("a root signal's headers carry a causation")
	}
	if got, err := decodeSignal(h, "billing", nil); err != nil || !got.Causation.IsZero() || got.Payload != nil {
		t.Errorf("root signal decoded as %+v, %v", got, err)
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

func TestSubjectTokenIsInjectiveAndSafe(t *testing.T) {
	t.Parallel()
	names := []string{"a", "a.b", "a~2Eb", "a*", "a>", "A", "a_b", "a-b", "a/b", "a\\b", "~", "~7E", "ключ", "a.>", strings.Repeat("é", 100)}
	seen := map[string]string{}
	for _, n := range names {
		tok := subjectToken(n)
		if strings.ContainsAny(tok, ".*> \t/\\") {
			t.Errorf("subjectToken(%q) = %q contains a character NATS gives meaning to", n, tok)
		}
		if other, dup := seen[tok]; dup {
			t.Errorf("%q and %q share subject token %q", n, other, tok)
		}
		seen[tok] = n
		c := consumerName(n)
		if len(c) > maxConsumerName || strings.ContainsAny(c, ".*> \t/\\") {
			t.Errorf("consumerName(%q) = %q is not a valid consumer name", n, c)
		}
	}
	long := strings.Repeat("é", 100)
	if c := consumerName(long); !strings.HasPrefix(c, "~h") {
		t.Errorf("consumerName of a long name = %q, want a hashed name", c)
	}
}

func TestCleanReason(t *testing.T) {
	t.Parallel()
	if got := cleanReason("line one\r\nline two\x00"); got != "line one  line two " {
		t.Errorf("cleanReason = %q", got)
	}
	if got := cleanReason(strings.Repeat("é", maxReasonBytes)); len(got) > maxReasonBytes || !strings.HasSuffix(got, "é") {
		t.Errorf("long reason cut to %d bytes ending %q", len(got), got[len(got)-2:])
	}
	if got := cleanReason(""); got == "" {
		t.Error("empty reason stays empty")
	}
}

func TestRedactURL(t *testing.T) {
	t.Parallel()
	got := redactURL("nats://user:secret@host1:4222, nats://host2:4222,tok@host3:4222")
	if strings.Contains(got, "secret") || strings.Contains(got, "tok@") || !strings.Contains(got, "host2:4222") {
		t.Errorf("redactURL = %q", got)
	}
}
