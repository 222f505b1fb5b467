package store

import (
	"context"
	"time"
)

// CountByDestination counts the live tokens addressed to destination by
// paging through ListByDestination, up to limit (0: no limit). Live tokens
// are the signals in flight, so the count stays small while the system is
// healthy; the limit bounds the cost when it is not.
func CountByDestination(ctx context.Context, tokens TokenStore, destination string, limit int) (int, error) {
	n := 0
	page := Page{Limit: MaxPageLimit}
	for limit <= 0 || n < limit {
		toks, err := tokens.ListByDestination(ctx, destination, page)
		if err != nil {
			return n, err
		}
		n += len(toks)
		if len(toks) < page.Size() {
			break
		}
		page.After = toks[len(toks)-1].ID
	}
	if limit > 0 {
		n = min(n, limit)
	}
	return n, nil
}

// CountByAge counts, as CountByDestination does, the live tokens addressed
// to destination, and those of them created before cutoff: signals in
// flight for longer than a threshold are stuck (or parked).
func CountByAge(ctx context.Context, tokens TokenStore, destination string, cutoff time.Time, limit int) (live, older int, err error) {
	page := Page{Limit: MaxPageLimit}
	for limit <= 0 || live < limit {
		toks, err := tokens.ListByDestination(ctx, destination, page)
		if err != nil {
			return live, older, err
		}
		for _, t := range toks {
			live++
			if t.CreatedAt.Before(cutoff) {
				older++
			}
		}
		if len(toks) < page.Size() {
			break
		}
		page.After = toks[len(toks)-1].ID
	}
	if limit > 0 {
		live, older = min(live, limit), min(older, limit)
	}
	return live, older, nil
}
