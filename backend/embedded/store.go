package embedded

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/batonhq/baton/store"
)

// ErrLocked is returned by Open when another process (or another Open in
// this process) holds the file. One file serves one process at a time.
var ErrLocked = errors.New("embedded: store file is in use by another process")

// ErrUnsupportedFormat is returned by Open for a file written by a version
// of this package whose format this version cannot read.
var ErrUnsupportedFormat = errors.New("embedded: unsupported file format")

// Default values that the zero Config selects.
const (
	DefaultOpenTimeout  = 2 * time.Second
	DefaultMaxGroupSize = 1000
	DefaultFileMode     = 0o600
)

// Config configures a Store. The zero value is ready to use.
type Config struct {
	// NoGroupCommit turns group commit off: every write is its own bbolt
	// transaction and its own fsync. The zero value, false, commits the
	// writes of concurrent callers in one transaction and one fsync.
	NoGroupCommit bool

	// MaxGroupSize bounds how many writes share one transaction. Zero
	// selects DefaultMaxGroupSize.
	MaxGroupSize int

	// OpenTimeout bounds how long Open waits for the file lock that
	// another process holds; then Open fails with ErrLocked. Zero selects
	// DefaultOpenTimeout.
	OpenTimeout time.Duration

	// FileMode is the permission of a newly created file. Zero selects
	// DefaultFileMode (owner read and write only).
	FileMode fs.FileMode

	// Logger receives open, close and failed-commit events. Nil discards.
	Logger *slog.Logger

	// AcceptRestoredBackup opens a file that BackupTo wrote (else Open
	// refuses it with ErrRestoredBackup), once, and logs a warning; the
	// file is an ordinary store file from then on. Set it only after
	// restoring the entity stores and brokers to the same instant, with
	// every engine stopped (docs/operations.md).
	AcceptRestoredBackup bool

	// Random is the source of root token ids. Nil means crypto/rand; only
	// a deterministic simulation sets it, since ids must be unguessable.
	Random io.Reader
}

func (c Config) withDefaults() (Config, error) {
	switch {
	case c.MaxGroupSize < 0:
		return c, fmt.Errorf("embedded: MaxGroupSize %d is negative", c.MaxGroupSize)
	case c.OpenTimeout < 0:
		return c, fmt.Errorf("embedded: OpenTimeout %v is negative", c.OpenTimeout)
	case c.FileMode&^fs.ModePerm != 0:
		return c, fmt.Errorf("embedded: FileMode %v has bits other than permissions", c.FileMode)
	}
	if c.MaxGroupSize == 0 {
		c.MaxGroupSize = DefaultMaxGroupSize
	}
	if c.OpenTimeout == 0 {
		c.OpenTimeout = DefaultOpenTimeout
	}
	if c.FileMode == 0 {
		c.FileMode = DefaultFileMode
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Random == nil {
		c.Random = rand.Reader
	}
	return c, nil
}

// Store is a token store and an entity store in one bbolt file. It also
// implements store.CommitTransitioner. Use Open; it is safe for concurrent
// use.
type Store struct {
	db   *bolt.DB
	path string
	// group commits concurrent writes together; nil with NoGroupCommit.
	group *committer
	cfg   Config
	log   *slog.Logger

	// mu guards closed. Every operation holds it for reading, so Close
	// waits for operations in flight before it closes the file.
	mu     sync.RWMutex
	closed bool
}

var (
	_ store.TokenStore         = (*Store)(nil)
	_ store.EntityStore        = (*Store)(nil)
	_ store.CommitTransitioner = (*Store)(nil)
	_ store.TokenLoader        = (*Store)(nil)
	_ store.BatchCommitter     = (*Store)(nil)
	_ store.BatchLoader        = (*Store)(nil)
)

// Open opens the store file at path, creating it if needed. It fails with
// ErrLocked if another process holds the file for longer than
// cfg.OpenTimeout.
func Open(path string, cfg Config) (*Store, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	db, err := bolt.Open(path, cfg.FileMode, &bolt.Options{Timeout: cfg.OpenTimeout})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("%w: could not lock %s within %v (%w)", ErrLocked, path, cfg.OpenTimeout, err)
	}
	if err != nil {
		return nil, fmt.Errorf("embedded: open %s: %w", path, err)
	}
	var restoredFrom string
	err = db.Update(func(tx *bolt.Tx) error {
		if err := initLayout(tx); err != nil {
			return err
		}
		restoredFrom, err = checkRestored(tx, cfg.AcceptRestoredBackup)
		return err
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("embedded: open %s: %w", path, err)
	}
	if restoredFrom != "" {
		cfg.Logger.Warn("embedded store opened from a backup: tokens consumed since the backup are live again", "path", path, "backup_taken_at", restoredFrom)
	}
	cfg.Logger.Debug("embedded store opened", "path", path, "group_commit", !cfg.NoGroupCommit)
	s := &Store{db: db, path: path, cfg: cfg, log: cfg.Logger}
	if !cfg.NoGroupCommit {
		s.group = newCommitter(db, cfg.MaxGroupSize)
	}
	return s, nil
}

// Path returns the path of the store file.
func (s *Store) Path() string { return s.path }

// Close waits for operations in flight, then closes the file. Later calls
// fail with store.ErrClosed. Closing twice is not an error.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.group != nil {
		s.group.stop()
	}
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("embedded: close %s: %w", s.path, err)
	}
	s.log.Debug("embedded store closed", "path", s.path)
	return nil
}

// usable returns the error for a call that must not start; the caller
// holds s.mu for reading.
func (s *Store) usable(ctx context.Context) error {
	if s.closed {
		return store.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%w: %w", store.ErrNotApplied, err)
	}
	return nil
}

// view runs fn in a read-only transaction.
func (s *Store) view(ctx context.Context, fn func(tx *bolt.Tx) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.usable(ctx); err != nil {
		return err
	}
	return s.db.View(fn)
}

// write runs fn in a write transaction that commits with an fsync, shared
// with concurrent writers when group commit is on.
//
// Under group commit fn may run several times (a group is re-run without a
// call that failed, then that call runs alone; see groupcommit.go), so fn
// must reset whatever it records at its start, and must report expected
// outcomes (conflict, duplicate, exists) in variables and return nil: an
// error would roll back and re-run the whole group, slowing every other
// caller in it. fn returns an error only for a failure of the database
// itself, and checks everything before it writes anything, because a nil
// return commits what it wrote.
//
// The error says whether the write is known not to have been applied:
// fn never ran or failed (the transaction rolled back) wraps
// store.ErrNotApplied; a failed commit (write or fsync) is returned
// unwrapped, meaning outcome unknown.
func (s *Store) write(ctx context.Context, op string, fn func(tx *bolt.Tx) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.usable(ctx); err != nil {
		return err
	}
	var ran bool
	var fnErr error
	call := func(tx *bolt.Tx) error {
		ran = true
		fnErr = fn(tx)
		return fnErr
	}
	var err error
	if s.group != nil {
		err = s.group.update(call)
	} else {
		err = s.db.Update(call)
	}
	switch {
	case err == nil:
		return nil
	case !ran || (fnErr != nil && errors.Is(err, fnErr)):
		return fmt.Errorf("%w: embedded: %s: %w", store.ErrNotApplied, op, err)
	default:
		s.log.Warn("embedded store commit failed; outcome unknown", "op", op, "err", err)
		return fmt.Errorf("embedded: %s: commit failed, outcome unknown: %w", op, err)
	}
}
