package embedded

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/batonhq/baton"
)

// Buckets. The index buckets hold keys only (empty values); every write
// updates a record and its index entries in the same transaction.
var (
	bucketMeta           = []byte("meta")           // "format" -> fileFormat
	bucketTokens         = []byte("tokens")         // id[16] -> token record
	bucketByConversation = []byte("tokens_by_conv") // conversation[16] id[16]
	bucketByDestination  = []byte("tokens_by_dest") // len[2] destination id[16]
	bucketRootExpiry     = []byte("tokens_expiry")  // expires time[12] id[16]
	bucketEntities       = []byte("entities")       // key -> entity record
	bucketOutboxCreated  = []byte("outbox_by_time") // created time[12] key
	keyFormat            = []byte("format")
	allBuckets           = [][]byte{bucketMeta, bucketTokens, bucketByConversation, bucketByDestination, bucketRootExpiry, bucketEntities, bucketOutboxCreated}
)

// initLayout creates the buckets of a new file and checks the format of an
// existing one.
func initLayout(tx *bolt.Tx) error {
	for _, name := range allBuckets {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	meta := tx.Bucket(bucketMeta)
	switch format := meta.Get(keyFormat); {
	case format == nil:
		return meta.Put(keyFormat, []byte{fileFormat})
	case len(format) != 1 || format[0] == 0 || format[0] > fileFormat:
		return fmt.Errorf("%w: file format %v, this version reads 1 to %d", ErrUnsupportedFormat, format, fileFormat)
	case format[0] < fileFormat:
		// Every older record still decodes; new writes use the current
		// formats, which older versions cannot read, so they must refuse
		// the file from now on.
		return meta.Put(keyFormat, []byte{fileFormat})
	}
	return nil
}

// buckets are the buckets of one transaction, looked up once.
type buckets struct {
	tokens, byConversation, byDestination, rootExpiry *bolt.Bucket
	entities, outboxCreated                           *bolt.Bucket
}

func bucketsOf(tx *bolt.Tx) buckets {
	return buckets{
		tokens:         tx.Bucket(bucketTokens),
		byConversation: tx.Bucket(bucketByConversation),
		byDestination:  tx.Bucket(bucketByDestination),
		rootExpiry:     tx.Bucket(bucketRootExpiry),
		entities:       tx.Bucket(bucketEntities),
		outboxCreated:  tx.Bucket(bucketOutboxCreated),
	}
}

// Key builders. Each returns a fresh slice: bbolt requires keys passed to
// Put to stay unchanged until the transaction ends.

func conversationKey(conversation, id baton.TokenID) []byte {
	k := make([]byte, 0, 32)
	k = append(k, conversation[:]...)
	return append(k, id[:]...)
}

// destinationPrefix is length-prefixed so that one destination's keys never
// interleave with those of a destination whose name extends it.
func destinationPrefix(destination string) []byte {
	k := make([]byte, 0, 2+len(destination)+16)
	k = binary.BigEndian.AppendUint16(k, uint16(len(destination)))
	return append(k, destination...)
}

func destinationKey(destination string, id baton.TokenID) []byte {
	return append(destinationPrefix(destination), id[:]...)
}

func expiryKey(expires time.Time, id baton.TokenID) []byte {
	k := make([]byte, 0, timeLen+16)
	k = appendTime(k, expires)
	return append(k, id[:]...)
}

func outboxKey(created time.Time, entity string) []byte {
	k := make([]byte, 0, timeLen+len(entity))
	k = appendTime(k, created)
	return append(k, entity...)
}

// putToken stores t and its index entries.
func (b buckets) putToken(t baton.Token) error {
	if err := b.tokens.Put(append([]byte{}, t.ID[:]...), encodeToken(t)); err != nil {
		return err
	}
	if err := b.byConversation.Put(conversationKey(t.Conversation, t.ID), nil); err != nil {
		return err
	}
	if err := b.byDestination.Put(destinationKey(t.Destination, t.ID), nil); err != nil {
		return err
	}
	if !t.ExpiresAt.IsZero() {
		return b.rootExpiry.Put(expiryKey(t.ExpiresAt, t.ID), nil)
	}
	return nil
}

// deleteToken removes t and its index entries.
func (b buckets) deleteToken(t baton.Token) error {
	if err := b.tokens.Delete(t.ID[:]); err != nil {
		return err
	}
	if err := b.byConversation.Delete(conversationKey(t.Conversation, t.ID)); err != nil {
		return err
	}
	if err := b.byDestination.Delete(destinationKey(t.Destination, t.ID)); err != nil {
		return err
	}
	if !t.ExpiresAt.IsZero() {
		return b.rootExpiry.Delete(expiryKey(t.ExpiresAt, t.ID))
	}
	return nil
}

// getToken returns the live token id, or false.
func (b buckets) getToken(id baton.TokenID) (baton.Token, bool, error) {
	v := b.tokens.Get(id[:])
	if v == nil {
		return baton.Token{}, false, nil
	}
	t, err := decodeToken(v)
	return t, err == nil, err
}

// scanIDs calls fn with the token id that ends every key of index that
// starts with prefix and sorts after prefix+after, in key order, until fn
// returns false.
func scanIDs(index *bolt.Bucket, prefix []byte, after baton.TokenID, fn func(baton.TokenID) (more bool, err error)) error {
	c := index.Cursor()
	start := append(append([]byte{}, prefix...), after[:]...)
	k, _ := c.Seek(start)
	if bytes.Equal(k, start) {
		k, _ = c.Next()
	}
	for ; k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		if len(k) != len(prefix)+16 {
			return fmt.Errorf("%w: index key of %d bytes", errCorrupt, len(k))
		}
		more, err := fn(baton.TokenID(k[len(prefix):]))
		if err != nil || !more {
			return err
		}
	}
	return nil
}
