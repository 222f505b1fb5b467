// Package baton holds the vocabulary shared by every part of baton: token ids,
// signals and the tokens that authorise processing them.
//
// baton makes a business process that spans many systems apply every step
// exactly once. Before a signal is emitted, a token for processing it is
// created in a shared token store; processing the signal consumes the token;
// a signal whose token is absent is a duplicate and is dropped. The
// deduplication data is therefore exactly the signals in flight.
//
// The packages are laid out as database/sql and its driver:
//
//   - engine runs the protocol (processing, fan-out, sweeper, worker pool);
//   - store and transport are the small interfaces that backends implement;
//   - backend/... and transport/... are the implementations;
//   - storetest and transporttest are the conformance suites every
//     implementation runs.
package baton
