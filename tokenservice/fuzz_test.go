package tokenservice

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/url"
	"reflect"
	"testing"
	"unicode/utf8"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
)

// The decoders of request bodies are the service's outside input. Each
// fuzz target checks that a decoder never panics, that every refusal wraps
// store.ErrInvalid, and that what it accepts is valid and survives a round
// trip through the encoder unchanged. Seeds live in testdata/fuzz.

func FuzzDecodeTransition(f *testing.F) {
	f.Add([]byte(`{"consume":"0123456789abcdef0123456789abcdef"}`))
	f.Add([]byte(`{"consume":"0123456789abcdef0123456789abcdef","create":[{"id":"0123456789abcdef0123456789abcdee","conversation":"0123456789abcdef0123456789abcdef","causation":"0123456789abcdef0123456789abcdef","destination":"billing","Destination":"orders","type":"t","digest":"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}]}`))
	f.Add([]byte(`{"consume":"0123456789abcdef0123456789abcdee","consume":"0123456789abcdef0123456789abcdef"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		tr, err := decodeTransition(body)
		if err != nil {
			if !errors.Is(err, store.ErrInvalid) {
				t.Fatalf("refusal %v does not wrap store.ErrInvalid", err)
			}
			return
		}
		if err := store.ValidateTransition(tr.Consume, tr.Create); err != nil {
			t.Fatalf("accepted an invalid transition: %v", err)
		}
		again, err := json.Marshal(encodeTransition(t, tr))
		if err != nil {
			t.Fatal(err)
		}
		tr2, err := decodeTransition(again)
		if err != nil {
			t.Fatalf("re-encoded transition %s refused: %v", again, err)
		}
		if tr2.Consume != tr.Consume || !sameTokens(tr.Create, tr2.Create) {
			t.Fatalf("round trip changed the transition:\n%+v\n%+v", tr, tr2)
		}
	})
}

func FuzzDecodeTransitionBatch(f *testing.F) {
	f.Add([]byte(`{"transitions":[{"consume":"0123456789abcdef0123456789abcdef"},{"consume":"0123456789abcdef0123456789abcdee"}]}`))
	f.Add([]byte(`{"transitions":[{"consume":"0123456789abcdef0123456789abcdef"},{"consume":"0123456789abcdef0123456789abcdef"}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		batch, err := decodeTransitionBatch(body)
		if err != nil {
			if !errors.Is(err, store.ErrInvalid) {
				t.Fatalf("refusal %v does not wrap store.ErrInvalid", err)
			}
			return
		}
		if err := store.ValidateTokenTransitions(batch); err != nil || len(batch) > MaxBatch {
			t.Fatalf("accepted an invalid batch of %d: %v", len(batch), err)
		}
		req := TransitionBatchRequest{Transitions: []TransitionRequest{}}
		for _, tr := range batch {
			req.Transitions = append(req.Transitions, encodeTransition(t, tr))
		}
		again, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		batch2, err := decodeTransitionBatch(again)
		if err != nil || len(batch2) != len(batch) {
			t.Fatalf("re-encoded batch %s: %d transitions, %v", again, len(batch2), err)
		}
		for i := range batch {
			if batch2[i].Consume != batch[i].Consume || !sameTokens(batch[i].Create, batch2[i].Create) {
				t.Fatalf("round trip changed transition %d:\n%+v\n%+v", i, batch[i], batch2[i])
			}
		}
	})
}

func FuzzDecodeTokenRead(f *testing.F) {
	f.Add([]byte(`{"ids":["0123456789abcdef0123456789abcdef","fedcba9876543210fedcba9876543210","fedcba9876543210fedcba9876543210"]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		ids, err := decodeTokenRead(body)
		if err != nil {
			if !errors.Is(err, store.ErrInvalid) {
				t.Fatalf("refusal %v does not wrap store.ErrInvalid", err)
			}
			return
		}
		req := TokenReadRequest{IDs: []string{}}
		for _, id := range ids {
			if id.IsZero() {
				t.Fatal("accepted the zero id")
			}
			req.IDs = append(req.IDs, id.String())
		}
		if len(ids) > MaxBatch {
			t.Fatalf("accepted %d ids", len(ids))
		}
		again, _ := json.Marshal(req)
		ids2, err := decodeTokenRead(again)
		if err != nil || !reflect.DeepEqual(ids, ids2) {
			t.Fatalf("round trip of %s: %v, %v", again, ids2, err)
		}
	})
}

// encodeTransition is tr as a request, which it must be valid as.
func encodeTransition(t *testing.T, tr store.TokenTransition) TransitionRequest {
	t.Helper()
	req := TransitionRequest{Consume: tr.Consume.String()}
	for _, c := range tr.Create {
		if !c.ExpiresAt.IsZero() {
			t.Fatalf("accepted a child that expires: %+v", c)
		}
		req.Create = append(req.Create, EncodeToken(c))
	}
	return req
}

func FuzzDecodeRoot(f *testing.F) {
	f.Add([]byte(`{"id":"0123456789abcdef0123456789abcdef"}`))
	f.Add([]byte(`{"destination":"orders","type":"order.place","expires_at":"2030-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"destination":"orders","type":"order.place","Destination":"billing"}`))
	f.Add([]byte(`{"destination":"orders","type":"order.place","type":"refund"}`))
	f.Add([]byte("{\"destination\":\"bill\xffing\",\"type\":\"\\ud800\"}"))
	f.Fuzz(func(t *testing.T, body []byte) {
		root, err := decodeRoot(body)
		if err != nil {
			if !errors.Is(err, store.ErrInvalid) {
				t.Fatalf("refusal %v does not wrap store.ErrInvalid", err)
			}
			return
		}
		// A reader that matches keys exactly, as a proxy may, reads the same.
		var exact map[string]any
		if !utf8.Valid(body) || json.Unmarshal(body, &exact) != nil || exact["destination"] != root.Destination || exact["type"] != root.Type {
			t.Fatalf("accepted %q as a root of %q, %q, which a reader of exact keys reads otherwise", body, root.Destination, root.Type)
		}
		if _, err := store.NewRoot(root, rand.Reader); err != nil || !root.ID.IsZero() {
			t.Fatalf("accepted an invalid root %+v: %v", root, err)
		}
		again, err := json.Marshal(EncodeToken(root))
		if err != nil {
			t.Fatal(err)
		}
		root2, err := decodeRoot(again)
		if err != nil {
			t.Fatalf("re-encoded root %s refused: %v", again, err)
		}
		if !sameTokens([]baton.Token{root}, []baton.Token{root2}) {
			t.Fatalf("round trip changed the root:\n%+v\n%+v", root, root2)
		}
	})
}

func FuzzDecodeExpiration(f *testing.F) {
	f.Add([]byte(`{"before":"2025-01-01T00:00:00Z","limit":1}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		before, limit, err := decodeExpiration(body)
		if err != nil {
			if !errors.Is(err, store.ErrInvalid) {
				t.Fatalf("refusal %v does not wrap store.ErrInvalid", err)
			}
			return
		}
		if limit < 0 || limit > MaxExpireLimit || before.IsZero() {
			t.Fatalf("accepted before %v, limit %d", before, limit)
		}
		again, _ := json.Marshal(ExpirationRequest{Before: FormatTime(before), Limit: &limit})
		before2, limit2, err := decodeExpiration(again)
		if err != nil || !before2.Equal(before) || limit2 != limit {
			t.Fatalf("round trip of %s: %v, %d, %v", again, before2, limit2, err)
		}
	})
}

func FuzzParsePage(f *testing.F) {
	f.Add("after=0123456789abcdef0123456789abcdef&limit=10")
	f.Fuzz(func(t *testing.T, query string) {
		q, err := url.ParseQuery(query)
		if err != nil {
			return
		}
		page, p := parsePage(q)
		if p != nil {
			if p.Status != 400 || p.Type != ProblemInvalid {
				t.Fatalf("refusal %+v is not a 400 invalid-request", p)
			}
			return
		}
		if page.Limit < 0 || page.Limit > store.MaxPageLimit {
			t.Fatalf("accepted limit %d", page.Limit)
		}
	})
}

// sameTokens compares tokens field by field, times with Equal.
func sameTokens(a, b []baton.Token) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if !x.CreatedAt.Equal(y.CreatedAt) || !x.ExpiresAt.Equal(y.ExpiresAt) {
			return false
		}
		x.CreatedAt, x.ExpiresAt = y.CreatedAt, y.ExpiresAt
		if !reflect.DeepEqual(x, y) {
			return false
		}
	}
	return true
}
