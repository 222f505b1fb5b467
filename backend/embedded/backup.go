package embedded

import (
	"errors"
	"fmt"
	"os"
	"time"

	bolt "go.etcd.io/bbolt"
)

// keyBackupTakenAt in the meta bucket marks a file as a backup and says
// when it was taken (RFC 3339, UTC).
var keyBackupTakenAt = []byte("backup_taken_at")

// ErrRestoredBackup is returned by Open for a file that BackupTo wrote,
// unless Config.AcceptRestoredBackup is set. A token store's backup holds
// every token that was live when it was taken, also those consumed since:
// opening it brings them back, and a copy of one of their signals still in
// a broker, an HTTP retry or an outbox is then applied a second time.
var ErrRestoredBackup = errors.New("embedded: store file is a backup")

// BackupTo writes a consistent copy of the store to path while the store
// keeps serving: one read transaction copies the file, so writers are not
// held up and the copy is one instant of the store. The copy is marked as a
// backup, so that Open refuses it until the operator accepts what
// restoring it means (Config.AcceptRestoredBackup). path must not exist.
func (s *Store) BackupTo(path string) error {
	if _, err := os.Stat(path); err == nil {
		return fmt.Errorf("embedded: backup: %s exists", path)
	}
	if err := s.db.View(func(tx *bolt.Tx) error { return tx.CopyFile(path, s.cfg.FileMode) }); err != nil {
		return fmt.Errorf("embedded: backup to %s: %w", path, err)
	}
	backup, err := bolt.Open(path, s.cfg.FileMode, &bolt.Options{Timeout: s.cfg.OpenTimeout})
	if err != nil {
		return fmt.Errorf("embedded: backup to %s: %w", path, err)
	}
	err = backup.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keyBackupTakenAt, []byte(time.Now().UTC().Format(time.RFC3339Nano)))
	})
	if cerr := backup.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("embedded: backup to %s: mark it as a backup: %w", path, err)
	}
	return nil
}

// checkRestored refuses a file that is a backup unless accept, and
// otherwise clears its mark, so that it opens as the store from now on.
func checkRestored(tx *bolt.Tx, accept bool) (takenAt string, err error) {
	meta := tx.Bucket(bucketMeta)
	mark := meta.Get(keyBackupTakenAt)
	if mark == nil {
		return "", nil
	}
	if !accept {
		return "", fmt.Errorf("%w taken at %s: opening it brings back every token consumed since then, and any copy of their signals "+
			"still in a broker, an HTTP retry or an outbox would be applied a second time; restore the entity stores and brokers "+
			"to the same instant with every engine stopped, then open it with Config.AcceptRestoredBackup", ErrRestoredBackup, mark)
	}
	return string(mark), meta.Delete(keyBackupTakenAt)
}
