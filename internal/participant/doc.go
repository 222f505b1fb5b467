// Package participant is a ready participant over the token service: a
// billing destination that anyone can run with `baton participant`, so that
// services in other languages have the reference engine to exchange signals
// with, and `baton conformance` a participant known to follow the
// protocol.
//
// It serves signals over HTTP (docs/protocol.md section 5) at /signals,
// keeps its entities in an embedded store file in its data directory and
// its tokens in the token service it is given, and sweeps its outbox.
// Its activities:
//
//   - "charge": payload {"account": "ada", "amount": 1200}; adds amount to
//     the account's balance and replies {"account", "balance", "charges"}.
//   - conformance.DefaultType: the counting activity of the conformance
//     kit (package conformance). With Config.ForwardTo it passes each
//     signal on to that destination, so participants in several languages
//     can form one chain.
package participant
