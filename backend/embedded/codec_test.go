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
