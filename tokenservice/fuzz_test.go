package tokenservice

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/url"
	"reflect"
	"testing"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
)

// The decoders of request bodies are the service's outside input. Each
// fuzz target checks that a decoder never panics, that every refusal wraps
// store.ErrInvalid, and that what it accepts is valid and survives a round
// trip through the encoder unchanged. Seeds live in testdata/fuzz.

func FuzzDecodeTransition(f *testing.F) {
	f.Add([]byte(`{"consume":"0123456789abcdef0123456789abcdef"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		consume, create, err := decodeTransition(body)
		if err != nil {
			if !errors.Is(err, store.ErrInvalid) {
				t.Fatalf("refusal %v does not wrap store.ErrInvalid", err)
			}
			return
		}
		if err := store.ValidateTransition(consume, create); err != nil {
			t.Fatalf("accepted an invalid transition: %v", err)
		}
		req := TransitionRequest{Consume: consume.String()}
		for _, c := range create {
			if !c.ExpiresAt.IsZero() {
				t.Fatalf("accepted a child that expires: %+v", c)
			}
			req.Create = append(req.Create, EncodeToken(c))
		}
		again, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		consume2, create2, err := decodeTransition(again)
		if err != nil {
			t.Fatalf("re-encoded transition %s refused: %v", again, err)
		}
		if consume2 != consume || !sameTokens(create, create2) {
			t.Fatalf("round trip changed the transition:\n%+v\n%+v", create, create2)
		}
	})
}

func FuzzDecodeRoot(f *testing.F) {
	f.Add([]byte(`{"id":"0123456789abcdef0123456789abcdef"}`))
	f.Add([]byte(`{"destination":"orders","type":"order.place","expires_at":"2030-01-01T00:00:00Z"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		root, err := decodeRoot(body)
		if err != nil {
			if !errors.Is(err, store.ErrInvalid) {
				t.Fatalf("refusal %v does not wrap store.ErrInvalid", err)
			}
			return
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
