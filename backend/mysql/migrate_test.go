package mysql

import (
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
