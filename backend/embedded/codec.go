package embedded

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
)

// Record formats. Every value in the tokens and entities buckets starts
// with its format byte, so a later version can read old records. The file
// as a whole records fileFormat in the meta bucket; Open refuses a file
// whose format it does not know, and raises an older file's format to the
// current one, so that an older version refuses a file it cannot read.
const (
	recordFormat byte = 1 // tokens; entities written before format 2
	// entityFormat 2 records in each outbox entry the identity of its
	// signal (store.OutboxEntry.Matches); format 1 entities still decode.
	entityFormat byte = 2
	fileFormat   byte = 2
)

// errCorrupt wraps every failure to decode a stored record.
var errCorrupt = errors.New("embedded: corrupt record")

// Encoding, format 1 (all integers big-endian, lengths uvarint):
//
//	time:   8 bytes Unix seconds with the sign bit flipped, 4 bytes nanoseconds
//	        (12 bytes that sort in time order; the zero time.Time round-trips)
//	string: uvarint length, bytes
//	bytes:  uvarint length+1, bytes; 0 encodes nil (so nil and empty differ)
//	list:   uvarint count+1; 0 encodes a nil slice
//
//	token:  format, id[16], conversation[16], causation[16], digest[32],
//	        created time, expires time, destination string, type string
//	entity: format, version uint64, state bytes, outbox list of
//	        token[16], (format 2: conversation[16], causation[16],
//	        digest[32], type string,) created time, reply bytes, signals
//	        list of id[16], conversation[16], causation[16], destination
//	        string, type string, payload bytes, traceparent string,
//	        tracestate string

const timeLen = 12

func appendTime(b []byte, t time.Time) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(t.Unix())^(1<<63))
	return binary.BigEndian.AppendUint32(b, uint32(t.Nanosecond()))
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendBytes(b, v []byte) []byte {
	if v == nil {
		return append(b, 0)
	}
	b = binary.AppendUvarint(b, uint64(len(v))+1)
	return append(b, v...)
}

// appendListLen writes a list header; nil slices and empty slices differ.
func appendListLen(b []byte, n int, isNil bool) []byte {
	if isNil {
		return append(b, 0)
	}
	return binary.AppendUvarint(b, uint64(n)+1)
}

func encodeToken(t baton.Token) []byte {
	b := make([]byte, 0, 1+16*3+32+2*timeLen+2+len(t.Destination)+len(t.Type))
	b = append(b, recordFormat)
	b = append(b, t.ID[:]...)
	b = append(b, t.Conversation[:]...)
	b = append(b, t.Causation[:]...)
	b = append(b, t.Digest[:]...)
	b = appendTime(b, t.CreatedAt)
	b = appendTime(b, t.ExpiresAt)
	b = appendString(b, t.Destination)
	return appendString(b, t.Type)
}

func decodeToken(v []byte) (baton.Token, error) {
	d := decoder{buf: v}
	d.format(recordFormat)
	var t baton.Token
	d.fixed(t.ID[:])
	d.fixed(t.Conversation[:])
	d.fixed(t.Causation[:])
	d.fixed(t.Digest[:])
	t.CreatedAt = d.time()
	t.ExpiresAt = d.time()
	t.Destination = d.string()
	t.Type = d.string()
	if err := d.done(); err != nil {
		return baton.Token{}, fmt.Errorf("token: %w", err)
	}
	return t, nil
}

func encodeEntity(e store.Entity) []byte {
	size := 1 + 8 + 10 + len(e.State) + 10
	for _, o := range e.Outbox {
		size += 3*16 + 32 + 10 + len(o.Type) + timeLen + 10 + len(o.Reply) + 10
		for _, s := range o.Signals {
			size += 3*16 + 5*10 + len(s.Destination) + len(s.Type) + len(s.Payload) + len(s.Trace.Parent) + len(s.Trace.State)
		}
	}
	b := make([]byte, 0, size)
	b = append(b, entityFormat)
	b = binary.BigEndian.AppendUint64(b, e.Version)
	b = appendBytes(b, e.State)
	b = appendListLen(b, len(e.Outbox), e.Outbox == nil)
	for _, o := range e.Outbox {
		b = append(b, o.Token[:]...)
		b = append(b, o.Conversation[:]...)
		b = append(b, o.Causation[:]...)
		b = append(b, o.Digest[:]...)
		b = appendString(b, o.Type)
		b = appendTime(b, o.CreatedAt)
		b = appendBytes(b, o.Reply)
		b = appendListLen(b, len(o.Signals), o.Signals == nil)
		for _, s := range o.Signals {
			b = append(b, s.ID[:]...)
			b = append(b, s.Conversation[:]...)
			b = append(b, s.Causation[:]...)
			b = appendString(b, s.Destination)
			b = appendString(b, s.Type)
			b = appendBytes(b, s.Payload)
			b = appendString(b, s.Trace.Parent)
			b = appendString(b, s.Trace.State)
		}
	}
	return b
}

// decodeEntity decodes a stored entity; the key is not part of the value.
func decodeEntity(key string, v []byte) (store.Entity, error) {
	d := decoder{buf: v}
	format := d.format(recordFormat, entityFormat)
	e := store.Entity{Key: key}
	e.Version = d.uint64()
	e.State = d.bytes()
	if n, ok := d.listLen(); ok {
		e.Outbox = make([]store.OutboxEntry, n)
	}
	for i := range e.Outbox {
		o := &e.Outbox[i]
		d.fixed(o.Token[:])
		if format >= entityFormat {
			d.fixed(o.Conversation[:])
			d.fixed(o.Causation[:])
			d.fixed(o.Digest[:])
			o.Type = d.string()
		}
		o.CreatedAt = d.time()
		o.Reply = d.bytes()
		if n, ok := d.listLen(); ok {
			o.Signals = make([]baton.Signal, n)
		}
		for j := range o.Signals {
			s := &o.Signals[j]
			d.fixed(s.ID[:])
			d.fixed(s.Conversation[:])
			d.fixed(s.Causation[:])
			s.Destination = d.string()
			s.Type = d.string()
			s.Payload = d.bytes()
			s.Trace.Parent = d.string()
			s.Trace.State = d.string()
		}
	}
	if err := d.done(); err != nil {
		return store.Entity{}, fmt.Errorf("entity %q: %w", key, err)
	}
	return e, nil
}

// decoder reads a record; the first error sticks and later reads return
// zero values, so callers check once at the end.
type decoder struct {
	buf []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: "+format, append([]any{errCorrupt}, args...)...)
	}
	d.buf = nil
}

func (d *decoder) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > len(d.buf) {
		d.fail("need %d bytes, %d left", n, len(d.buf))
		return nil
	}
	b := d.buf[:n]
	d.buf = d.buf[n:]
	return b
}

// format reads a record's format byte, one of accepted.
func (d *decoder) format(accepted ...byte) byte {
	b := d.take(1)
	if b == nil {
		return 0
	}
	if !bytes.Contains(accepted, b) {
		d.fail("record format %d, this version reads %v", b[0], accepted)
	}
	return b[0]
}

func (d *decoder) fixed(dst []byte) { copy(dst, d.take(len(dst))) }

func (d *decoder) uint64() uint64 {
	if b := d.take(8); b != nil {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.buf)
	if n <= 0 || n != uvarintLen(v) {
		d.fail("bad length")
		return 0
	}
	d.buf = d.buf[n:]
	return v
}

// uvarintLen is the length of v's canonical encoding; decoding refuses
// longer ones so that every record has one encoding.
func uvarintLen(v uint64) int {
	return len(binary.AppendUvarint(make([]byte, 0, binary.MaxVarintLen64), v))
}

// length reads a length and checks it against the bytes left, so a corrupt
// record cannot make the decoder allocate more than the record's size.
func (d *decoder) length(v uint64) int {
	if v > uint64(len(d.buf)) {
		d.fail("length %d exceeds the %d bytes left", v, len(d.buf))
		return 0
	}
	return int(v)
}

func (d *decoder) time() time.Time {
	b := d.take(timeLen)
	if b == nil {
		return time.Time{}
	}
	t := decodeTime(b)
	if !bytes.Equal(appendTime(nil, t), b) {
		d.fail("time %x out of range", b)
	}
	return t
}

func decodeTime(b []byte) time.Time {
	sec := int64(binary.BigEndian.Uint64(b) ^ (1 << 63))
	nsec := int64(binary.BigEndian.Uint32(b[8:]))
	return time.Unix(sec, nsec).UTC()
}

func (d *decoder) string() string {
	return string(d.take(d.length(d.uvarint())))
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if n == 0 || d.err != nil {
		return nil
	}
	return append([]byte{}, d.take(d.length(n-1))...)
}

// listLen returns the count of a list and false for a nil list. Every
// element takes at least one byte, which bounds the count.
func (d *decoder) listLen() (int, bool) {
	n := d.uvarint()
	if n == 0 || d.err != nil {
		return 0, false
	}
	return d.length(n - 1), d.err == nil
}

func (d *decoder) done() error {
	if d.err == nil && len(d.buf) > 0 {
		d.fail("%d trailing bytes", len(d.buf))
	}
	return d.err
}
