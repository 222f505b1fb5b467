// Package httpsignal carries baton signals over HTTP: a header codec, a
// server that runs each signal through an engine and answers it, a client
// Transport and Publisher that retry safely, and root tokens for the edge
// (server-rendered forms and API clients).
//
// # Wire format
//
// A signal is a POST whose body is the payload and whose headers are
// Baton-Token and Baton-Conversation (32 lowercase hex digits each),
// Baton-Causation (optional), Baton-Type, Baton-Destination, the W3C
// traceparent and tracestate, and Idempotency-Key set to the quoted token
// id, so that a service that does not take part in baton but honours that
// header deduplicates too. EncodeRequest and DecodeRequest implement it;
// DecodeRequest is strict (each header once, lowercase ids, the key equal
// to the token, the body bounded) and fuzzed.
//
// # Answers
//
// Server answers every signal with one of these (errors are RFC 9457
// problem documents whose type is one of the Problem constants):
//
//	200 applied            this request ran the activity; body = its reply
//	200 replayed           an earlier copy ran it; body = its stored reply
//	409 already-processed  token consumed (Baton-Outcome: duplicate); delivered
//	409 in-progress        another copy is running here (RejectInProgress)
//	400 malformed-signal   missing or malformed Baton headers
//	403 misaddressed       the token is for another destination
//	404 unknown-type       no activity for the type here
//	405 method-not-allowed not a POST
//	410 expired            an unused root token that expired
//	413 payload-too-large  body over Options.MaxBody
//	422 digest-mismatch    payload differs from the token's digest
//	422 unroutable         no entity for the signal
//	422 rejected           any other permanent refusal
//	503 unavailable        store unavailable, or applied but unfinished; Retry-After
//
// A refusal's detail is a fixed text per problem type (400 and 413 say
// what is wrong with the request): the error behind it, which may hold an
// activity's own words, entity keys or the token's real type and
// conversation, is logged at info level with the token id (Options.Logger).
// An activity that means its reason for the sender (a form's "quantity
// must be 1 to 10") returns Refuse(reason): that reason is the detail.
//
// # Guarantees and failure semantics
//
// Deduplication is the engine's (the token), so it holds across processes
// and media: however often and wherever a signal arrives, its activity is
// committed once. Processing runs detached from the request's context
// (bounded by Options.ProcessTimeout), so a client that hangs up does not
// cut the protocol short. A reply is held only while the activity's outbox
// entry lives, which with the current engine ends when Process returns:
// a retry after a lost response usually gets "duplicate", not the reply.
// Copies arriving at the same Server while the first is processed wait for
// it and share its answer (or get in-progress, see Concurrency); copies at
// other processes are serialised by the engine's entity compare-and-set and
// get replayed or duplicate.
//
// A destination fed only over HTTP has no transport to redeliver a signal
// whose caller gave up, so it must sweep (engine.Sweep) periodically.
//
// Transport retries signal requests (network errors, 5xx, 408, 429,
// in-progress) with exponential backoff and full jitter, honouring
// Retry-After and the context. Publisher treats 2xx and already-processed
// as delivered and any other 4xx as engine.ErrRejected, so the engine parks
// the signal with the destination's problem as the reason. Note that
// net/http itself may resend a request carrying an Idempotency-Key once
// when a reused connection breaks; that is as safe as any other copy.
//
// Calling a service that does not take part in baton is at least once
// unless that service deduplicates by Idempotency-Key.
package httpsignal
