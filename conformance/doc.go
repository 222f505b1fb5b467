// Package conformance checks, over HTTP, that a participant written in any
// language follows docs/protocol.md: `baton conformance --participant URL`.
//
// The kit plays every other part of a conversation. It runs its own token
// service (an in-memory store behind the real token service API) that the
// participant under test must use, creates the tokens of the signals it
// sends, sends them as another destination would (section 5.1), and breaks
// things on purpose: it repeats signals, sends copies at the same time,
// tampers with bodies and headers, addresses signals elsewhere, lets roots
// expire, hangs up before the answer, and makes its token service fail in
// the ways section 3.7 lists. Each check reads the participant's answers
// (section 5.2) and the token store, and counts how often the activity was
// applied.
//
// # What the participant must provide
//
// The participant serves signals at one URL and uses the kit's token
// service (Config.TokenServiceAddr, default 127.0.0.1:7461) as the system
// named Config.Destination, authenticated with Config.ParticipantKey. It
// has one activity for the kit, of type Config.Type (default
// "conformance.count"): the payload is a JSON object whose member "entity"
// names the entity; the activity adds one to that entity's count and
// replies with the JSON object {"count": n}, n being the count after this
// application. That counter is how the kit sees how often an activity was
// applied, whatever the participant stores and in whatever language.
//
// Every check uses entities of its own, named after a random prefix per
// run, so a participant that keeps its data between runs can be checked
// again.
package conformance
