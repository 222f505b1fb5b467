package embedded

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
)

// TestRestoredBackupIsRefusedUntilAccepted: a backup taken while the store
// serves holds a token that was consumed after it; opening the backup is
// refused, because that token would be live again, until the operator
// accepts it, after which the file is an ordinary store.
func TestRestoredBackupIsRefusedUntilAccepted(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dir := t.TempDir()
	s, err := Open(filepath.Join(dir, "baton.db"), Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	root, err := s.Issue(ctx, baton.Token{Destination: "billing", Type: "charge", Digest: baton.DigestOf(nil), CreatedAt: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	backup := filepath.Join(dir, "backup.db")
	if err := s.BackupTo(backup); err != nil {
		t.Fatal(err)
	}
	if err := s.BackupTo(backup); err == nil {
		t.Error("a backup over an existing file was written")
	}
	if consumed, err := s.Transition(ctx, root.ID, nil); err != nil || !consumed {
		t.Fatalf("Transition = %v, %v", consumed, err)
	}

	if _, err := Open(backup, Config{}); !errors.Is(err, ErrRestoredBackup) {
		t.Fatalf("Open of a backup = %v, want ErrRestoredBackup", err)
	}
	restored, err := Open(backup, Config{AcceptRestoredBackup: true})
	if err != nil {
		t.Fatalf("Open with AcceptRestoredBackup = %v", err)
	}
	if _, err := restored.Get(ctx, root.ID); err != nil {
		t.Errorf("the restored backup lacks the token consumed after it (%v): the hazard it warns of", err)
	}
	restored.Close()
	again, err := Open(backup, Config{})
	if err != nil {
		t.Fatalf("Open of an accepted backup = %v, want an ordinary store", err)
	}
	again.Close()
	if _, err := s.Get(ctx, root.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the live store: %v, want the token consumed", err)
	}
}
