package tokenservice

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/batonhq/baton/store"
)

// A batch's items say how the store failed; the worst one names the call:
// an unknown outcome over a write not applied, and answers not at all.
func TestBatchOutcomeIsTheWorstItem(t *testing.T) {
	notApplied := fmt.Errorf("part 2: %w: connection refused", store.ErrNotApplied)
	unknown := errors.New("part 3: EOF")
	answer := fmt.Errorf("%w: token", store.ErrNotFound)
	whole := fmt.Errorf("%w: the whole call", store.ErrNotApplied)
	for _, c := range []struct {
		name string
		err  error
		errs []error
		want error
	}{
		{"all answered", nil, []error{nil, answer}, nil},
		{"one not applied", nil, []error{answer, notApplied, nil}, notApplied},
		{"unknown after not applied", nil, []error{notApplied, unknown}, unknown},
		{"the call's own error", whole, []error{unknown}, whole},
	} {
		if got := batchOutcome(context.Background(), c.err, c.errs); got != c.want {
			t.Errorf("%s: batchOutcome = %v, want %v", c.name, got, c.want)
		}
	}
}
