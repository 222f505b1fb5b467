package store

import "context"

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
