// Package tokenservice serves a token store over HTTP, so that systems in
// any language take part in baton's protocol (docs/protocol.md 3.7 and 8): the token service
// that `baton serve` runs. Package client is its Go client, itself a
// store.TokenStore.
//
// The API (docs/token-service.md, and openapi.yaml served at
// /v1/openapi.yaml) maps one to one onto store.TokenStore: issue a root
// token, run a transition, get a token, list the live tokens of a
// conversation or a destination, and delete expired roots. Bodies are JSON
// with snake_case names, token ids are 32 lowercase hex digits and times
// are RFC 3339 in UTC with microseconds. Every error is an RFC 9457
// problem document whose type URI is stable; clients match on the type.
//
// Guarantees:
//
//   - The service keeps no state of its own. Any number of instances over
//     one token store serve the same conversations correctly, because every
//     decision is the store's one atomic transition.
//   - Only registered systems are served (Authorization: Bearer <api key>,
//     or a client certificate whose common name is a system's name). Keys
//     are stored as SHA-256 hashes and compared in constant time.
//   - Only a token's destination consumes it: the service reads the token,
//     checks its destination against the caller's, then runs the
//     transition. A token's destination never changes, so the check cannot
//     race with the transition.
//   - A transition creates only children of the token it consumes: the
//     same conversation, with the consumed token as causation. A caller
//     cannot plant tokens in another conversation.
//   - Consuming a token that is not live (consumed, never issued, or a
//     forged id) reports consumed=false and creates nothing: that is the
//     protocol's answer to a duplicate.
//
// Failure semantics follow package store exactly: 400, 401, 403, 404, 409,
// 413, 415 and 503 (not-applied) prove that nothing was written; 500
// (outcome-unknown) means the store's outcome is unknown and the request
// is safe to retry, as every store operation is.
//
// API keys and Authorization headers are never logged.
//
// For what is served beside the API, RequireObserve admits only systems
// with the observe permission, authenticated as the API authenticates, and
// CheckHost refuses requests whose Host header names none of the service's
// names (DNS rebinding). `baton serve` puts its dashboard and metrics
// behind the first and everything behind the second.
package tokenservice
