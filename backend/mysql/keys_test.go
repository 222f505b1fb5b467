package mysql

import (
	"fmt"
	"testing"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
)

// TestKeysDifferingInPaddingOrEncoding: keys that a padded or
// character-set comparison would take for one (a trailing space, a
// trailing NUL, a case variant, bytes that are not UTF-8) are distinct
// entities through every read and write.
func TestKeysDifferingInPaddingOrEncoding(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s := newStore(t)
	keys := []string{"k", "k ", "k\x00", "K", "k\xff", "k\xc3\xa9", "ke\xcc\x81", "\xff\xfe"}
	var batch []store.Entity
	for i, key := range keys {
		batch = append(batch, store.Entity{Key: key, State: fmt.Appendf(nil, "%d", i)})
	}
	res, err := s.CommitBatch(ctx, batch)
	if err != nil {
		t.Fatal(err)
	}
	for i, err := range res {
		if err != nil {
			t.Errorf("CommitBatch of %q: %v", keys[i], err)
		}
	}
	loaded, err := s.LoadBatch(ctx, keys)
	if err != nil {
		t.Fatal(err)
	}
	reads := make([]store.TokenRead, len(keys))
	for i, key := range keys {
		reads[i] = store.TokenRead{Key: key, Token: baton.NewTokenID()}
	}
	withTokens, err := s.LoadWithTokens(ctx, reads)
	if err != nil {
		t.Fatal(err)
	}
	for i, key := range keys {
		one, err := s.Load(ctx, key)
		want := fmt.Sprintf("%d", i)
		if err != nil || string(one.State) != want || string(loaded[i].State) != want || string(withTokens[i].Entity.State) != want || one.Version != 1 {
			t.Errorf("key %q: Load %q v%d (%v), LoadBatch %q, LoadWithTokens %q; want %q", key, one.State, one.Version, err, loaded[i].State, withTokens[i].Entity.State, want)
		}
	}
}
