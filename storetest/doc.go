// Package storetest is the conformance suite for token stores and entity
// stores (package store). Every backend runs it from its own tests, as
// drivers run testing/fstest; the in-memory stores of backend/memory run it
// too. The semantics of the store interfaces change only by extending this
// suite.
//
// A backend's test file hands the suite a harness that opens an empty,
// isolated store per call and registers its cleanup:
//
//	func TestTokenStore(t *testing.T) {
//		storetest.RunTokenStore(t, storetest.TokenHarness{
//			New: func(t *testing.T) store.TokenStore {
//				s, err := mybackend.Open(t.Context(), mybackend.Config{Prefix: uniquePrefix(t)})
//				if err != nil {
//					t.Fatal(err)
//				}
//				t.Cleanup(func() { s.Close() })
//				return s
//			},
//			Reopen: func(t *testing.T, s store.TokenStore) store.TokenStore {
//				// Close s and open the same data again.
//			},
//		})
//	}
//
// Every check is a parallel subtest that calls New once (and Reopen at most
// once), so each New must return a store that shares no data with another:
// a fresh schema, table prefix, key prefix, bucket or stream per call.
// Reopen is optional; without it the durability checks are skipped, which
// is right only for a store that keeps nothing across a restart.
//
// What the suite checks, beyond the plain behaviour of every method:
//
//   - Tokens, entities and outbox entries round-trip exactly. Times are
//     compared with time.Equal; the suite passes times in UTC truncated to
//     microseconds with a non-zero sub-millisecond part, so a store must
//     keep at least microsecond precision (PostgreSQL timestamptz does;
//     milliseconds are not enough). State, payloads and replies are
//     arbitrary bytes, not text.
//   - Transition is atomic and linearizable: an absent or already consumed
//     token creates nothing; an existing child (store.ErrExists) or invalid
//     input (store.ErrInvalid) applies nothing; of 32 concurrent
//     transitions of one token exactly one consumes it and only its
//     children exist; concurrent transitions of distinct tokens of one
//     conversation all succeed.
//   - Listings are in ascending id order, page exactly (Page.After need not
//     be a live token; the zero Limit is store.DefaultPageLimit; a larger
//     limit is capped at store.MaxPageLimit) and never mix conversations or
//     destinations that merely look alike (prefixes, SQL LIKE wildcards,
//     case).
//   - ExpireRoots deletes only roots whose expiry is strictly before the
//     cutoff, at most limit per call, and an expired root that is not yet
//     deleted can still be consumed.
//   - Commit is compare-and-set on the version, linearizable per entity:
//     16 workers incrementing a counter 20 times each with retries on
//     store.ErrConflict end at exactly 320. Entity keys are any 1 to
//     store.MaxEntityKeyBytes bytes.
//   - A store shares no memory with its callers: changing a committed or
//     loaded entity's slices changes nothing stored.
//   - Every method fails on a cancelled context, and errors are matched
//     with errors.Is against the sentinels of package store.
//
// RunLinearizability (the fifth layer of the proofs in the README) checks a token store with
// porcupine: concurrent clients issue, consume and read a few colliding
// token ids, and every recorded history must be explained by the
// sequential specification of Issue, Transition and Get, with each
// operation taking effect at one instant within its call. An operation
// whose error does not prove "not applied" stays in the history as one
// that may or may not have taken effect. Faulty wraps a store to inject
// such failures, before the call (store.ErrNotApplied) or after it
// (outcome unknown), so that every backend's histories include them.
//
// Where a check runs operations concurrently, the suite retries an
// operation that fails with store.ErrNotApplied (nothing happened), as the
// engine does; any other unexpected error fails the check.
package storetest
