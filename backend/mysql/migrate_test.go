package mysql

import (
	"errors"
	"testing"
	"time"

	"github.com/batonhq/baton"
)

// TestPrefixesThatLookLikeNumbers: every prefix that Config accepts
// creates its tables; "1e5_" reads as the number 1e5 where a name is
// not quoted.
func TestPrefixesThatLookLikeNumbers(t *testing.T) {
	t.Parallel()
	for _, prefix := range []string{"1e5_", "0x1f"} {
		prefix := prefix + uniquePrefix()[1:5]
		s, err := Open(t.Context(), dsn(t), Config{Prefix: prefix})
		if err != nil {
			t.Errorf("Open with prefix %q = %v", prefix, err)
			continue
		}
		if _, err := s.Issue(t.Context(), baton.Token{Destination: "billing", Type: "charge", Digest: baton.DigestOf(nil), CreatedAt: time.Now()}); err != nil {
			t.Errorf("Issue with prefix %q = %v", prefix, err)
		}
		_ = s.dropTables(t.Context())
		s.Close()
	}
}

// TestSkipMigrateChecksTheSchema: with SkipMigrate, Open still refuses
// tables that are missing or at another version, as postgres does,
// instead of failing later in every call (or writing to a newer schema).
func TestSkipMigrateChecksTheSchema(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	prefix := uniquePrefix()
	s, err := Open(ctx, dsn(t), Config{Prefix: prefix, SkipMigrate: true})
	if err == nil {
		s.Close()
		t.Fatalf("Open with SkipMigrate over no tables succeeded")
	}
	if !errors.Is(err, ErrSchemaVersion) {
		t.Fatalf("Open with SkipMigrate over no tables = %v, want ErrSchemaVersion", err)
	}
	migrated := openPrefix(t, dsn(t), prefix)
	if _, err := migrated.DB().ExecContext(ctx, "INSERT INTO "+table(prefix, "schema_migrations")+" (version) VALUES (?)", LatestSchemaVersion()+1); err != nil {
		t.Fatal(err)
	}
	if s, err := Open(ctx, dsn(t), Config{Prefix: prefix, SkipMigrate: true}); !errors.Is(err, ErrSchemaVersion) {
		if s != nil {
			s.Close()
		}
		t.Fatalf("Open with SkipMigrate over a newer schema = %v, want ErrSchemaVersion", err)
	}
}
