// Package engine runs baton's processing protocol (docs/protocol.md section 3.2) for
// one destination: it loads the entity a signal routes to, consumes the
// signal's token in the same atomic transition that creates the tokens of
// the signals the activity emits, dispatches them and cleans up.
//
// Activities are plain Go functions over an entity's state, registered per
// signal type with Register. Run pulls signals from a transport with a pool
// of workers; Process handles one signal (the HTTP middleware calls it
// directly); Sweep finishes outbox entries that nobody is driving.
//
// # Cost per signal, and how it is cut
//
// The plain protocol costs a signal four store calls: load, token read,
// commit, transition, plus the removal of its outbox entry. When one store
// keeps tokens and entities (PostgreSQL, MySQL, embedded) the engine fuses
// them (protocol.md 3.2): store.TokenLoader reads the entity and the token at one
// instant (steps 1 and 3), store.CommitTransitioner commits and
// transitions in one operation (steps 4 and 5). With
// Config.DeferRemovals, Run removes outbox entries after the ack, many in
// one operation (store.BatchCommitter). With Config.Batch, a worker takes
// the deliveries already received (never waiting for more) and
// ProcessBatch reads their entities and tokens in one call and commits
// them in one (store.TransitionBatcher, group commit, protocol.md 3.2), then
// publishes their signals pipelined (transport.BatchPublisher). On the
// plain path (tokens in another store, as Redis) the batch takes four
// calls: the entities (store.BatchLoader), then the tokens
// (store.TokenBatcher), the entities' commit (store.BatchCommitter), then
// the transitions (store.TokenBatcher). Each is optional, found by type
// assertion, and the simulation runs every combination.
//
// A batch changes the cost, not the protocol: its reads are the reads of
// its signals (on the fast path at one instant; on the plain path every
// entity before any token), and its commit is their commits at one
// instant, each entity's applied or refused on its own (on the plain path
// followed by their transitions, each atomic on its own). Signals for one
// entity make a chain (protocol.md 3.2): their activities run one after
// another on the state the one before left and are committed together,
// all their tokens consumed or none, which is those signals processed one
// after another by one worker with nothing in between. Those are
// interleavings the model checker (internal/model) already explores for
// single signals, so the invariants it proves hold for batches too. A
// signal that needs more than the plain first processing (its activity was
// committed before, its chain's commit was refused) goes through Process,
// the path the model describes.
package engine
