package embedded

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
)

func TestCodecRoundTrip(t *testing.T) {
	t.Parallel()
	tokens := []baton.Token{
		{ID: baton.NewTokenID(), Conversation: baton.NewTokenID(), Destination: "d", Type: "t"}, // zero times
		{
			ID: baton.NewTokenID(), Conversation: baton.NewTokenID(), Causation: baton.NewTokenID(),
			Destination: "billing", Type: "charge", Digest: baton.DigestOf([]byte("x")),
			CreatedAt: time.Date(1969, 12, 31, 23, 59, 59, 999999999, time.UTC),
			ExpiresAt: time.Date(2262, 4, 12, 0, 0, 0, 1, time.UTC),
		},
	}
	for _, want := range tokens {
		got, err := decodeToken(encodeToken(want))
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("token round trip = %+v, %v\nwant %+v", got, err, want)
		}
		if !got.ExpiresAt.IsZero() && got.ExpiresAt.Location() != time.UTC {
			t.Errorf("ExpiresAt in %v, want UTC", got.ExpiresAt.Location())
		}
	}
	entities := []store.Entity{
		{Key: "k"},
		{Key: "k", Version: 1<<64 - 1, State: []byte{}, Outbox: []store.OutboxEntry{}},
		{Key: "k", Version: 3, State: []byte("s"), Outbox: []store.OutboxEntry{
			{Token: baton.NewTokenID(), Reply: []byte{}, Signals: []baton.Signal{}},
			{Token: baton.NewTokenID(), CreatedAt: time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC), Reply: []byte("r"), Signals: []baton.Signal{
				{ID: baton.NewTokenID(), Conversation: baton.NewTokenID(), Destination: "d", Type: "t"},
				{ID: baton.NewTokenID(), Conversation: baton.NewTokenID(), Causation: baton.NewTokenID(), Destination: "d2", Type: "t2",
					Payload: bytes.Repeat([]byte{7}, 300), Trace: baton.TraceContext{Parent: "p", State: "s"}},
			}},
		}},
	}
	for _, want := range entities {
		got, err := decodeEntity(want.Key, encodeEntity(want))
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("entity round trip = %#v, %v\nwant %#v", got, err, want)
		}
	}
}

func TestTimeKeysSortInTimeOrder(t *testing.T) {
	t.Parallel()
	times := []time.Time{
		{},
		time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Unix(-1, 999999999),
		time.Unix(0, 0),
		time.Unix(0, 1),
		time.Unix(1, 0),
		time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC),
	}
	for i := 1; i < len(times); i++ {
		if a, b := appendTime(nil, times[i-1]), appendTime(nil, times[i]); bytes.Compare(a, b) >= 0 {
			t.Errorf("key of %v does not sort before key of %v", times[i-1], times[i])
		}
	}
}

func TestDecodeRejectsBadRecords(t *testing.T) {
	t.Parallel()
	good := encodeToken(baton.Token{ID: baton.NewTokenID(), Conversation: baton.NewTokenID(), Destination: "d", Type: "t"})
	bad := [][]byte{nil, {2}, good[:len(good)-1], append(append([]byte{}, good...), 0)}
	for _, v := range bad {
		if _, err := decodeToken(v); !errors.Is(err, errCorrupt) {
			t.Errorf("decodeToken(%x) error %v, want errCorrupt", v, err)
		}
	}
	// A huge list count must fail, not allocate.
	if _, err := decodeEntity("k", []byte{recordFormat, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0xff, 0xff, 0xff, 0xff, 0x0f}); !errors.Is(err, errCorrupt) {
		t.Errorf("decodeEntity with a huge outbox count: %v, want errCorrupt", err)
	}
}

// FuzzDecode checks that no stored bytes make the decoders panic, and that
// whatever decodes re-encodes to the same bytes.
func FuzzDecode(f *testing.F) {
	f.Add(encodeToken(baton.Token{ID: baton.NewTokenID(), Conversation: baton.NewTokenID(), Destination: "d", Type: "t"}))
	f.Add(encodeEntity(store.Entity{Key: "k", Version: 2, State: []byte("s"), Outbox: []store.OutboxEntry{{Token: baton.NewTokenID(), Signals: []baton.Signal{{Destination: "d"}}}}}))
	f.Fuzz(func(t *testing.T, v []byte) {
		if tk, err := decodeToken(v); err == nil && !bytes.Equal(encodeToken(tk), v) {
			t.Errorf("token %x decodes and re-encodes as %x", v, encodeToken(tk))
		}
		if e, err := decodeEntity("k", v); err == nil && !bytes.Equal(encodeEntity(e), v) {
			t.Errorf("entity %x decodes and re-encodes as %x", v, encodeEntity(e))
		}
	})
}

// TestFormatOneEntitiesStillDecode: an entity written before outbox entries
// recorded their signal (record format 1) decodes, its entries matching by
// token alone.
func TestFormatOneEntitiesStillDecode(t *testing.T) {
	t.Parallel()
	token, child := baton.NewTokenID(), baton.NewTokenID()
	created := time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC)
	// Format 1, written out by hand as the old encoder did.
	b := []byte{recordFormat}
	b = append(b, 0, 0, 0, 0, 0, 0, 0, 7) // version
	b = appendBytes(b, []byte("state"))
	b = appendListLen(b, 1, false)
	b = append(b, token[:]...)
	b = appendTime(b, created)
	b = appendBytes(b, []byte("reply"))
	b = appendListLen(b, 1, false)
	b = append(b, child[:]...)
	b = append(b, make([]byte, 32)...) // conversation and causation
	b = appendString(b, "billing")
	b = appendString(b, "charge")
	b = appendBytes(b, nil)
	b = appendString(b, "")
	b = appendString(b, "")
	e, err := decodeEntity("k", b)
	if err != nil {
		t.Fatalf("decode of a format 1 entity: %v", err)
	}
	entry, ok := e.Entry(token)
	if e.Version != 7 || !ok || entry.Recorded() || !entry.CreatedAt.Equal(created) || len(entry.Signals) != 1 || entry.Signals[0].ID != child {
		t.Fatalf("decoded %+v", e)
	}
	if !entry.Matches(baton.Signal{ID: token, Type: "anything"}) {
		t.Error("an entry of format 1 does not match its token")
	}
	// Written again, it is format 2 and keeps what it had.
	again, err := decodeEntity("k", encodeEntity(e))
	if err != nil || !reflect.DeepEqual(again, e) {
		t.Errorf("re-encoded = %+v, %v", again, err)
	}
}
