// Package client is the Go client of the token service (package
// tokenservice, `baton serve`). A *Client is a store.TokenStore, so an
// engine whose tokens live behind the service uses it as it would any
// other token store:
//
//	tokens, err := client.New("https://baton.internal:7451", os.Getenv("BATON_API_KEY"), client.Options{})
//	eng, err := engine.New(engine.Config{Destination: "billing", Tokens: tokens, ...})
//
// It is a store.TokenBatcher too: an engine with Config.Batch reads the
// tokens of a batch of signals in one request, and runs their transitions
// in another (up to tokenservice.MaxBatch each).
//
// Errors keep the store's failure semantics across the network: a problem
// document from the service maps back to the sentinel of package store
// (404 store.ErrNotFound, 409 store.ErrExists, 400 and 413
// store.ErrInvalid, 503 store.ErrNotApplied), and so does a connection
// that could not be made, since then nothing was sent. 401 and 403 match
// ErrUnauthorized and ErrForbidden, and also store.ErrNotApplied: the
// service refused before touching the store. A 403 for a token of another
// destination matches store.ErrNotYours, any other 403 store.ErrForbidden
// (an engine's sweeper then leaves expired roots to a system with
// expire_roots). Every other failure (a 500,
// a connection lost after the request was sent, an unreadable answer)
// leaves the outcome unknown and matches none of the sentinels; retrying
// is safe, as the protocol makes every store operation.
//
// A Client is safe for concurrent use by many goroutines.
package client
