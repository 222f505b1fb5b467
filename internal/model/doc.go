// Package model is the explicit-state model checker of the baton protocol
// (docs/protocol.md section 3), the first layer of its proofs.
//
// It is an abstract model, not the engine. One entity receives two signals:
// S1 (token t1), delivered twice to workers W1 and W2, and S2 (token t2),
// delivered to W3. Applying a signal emits one child signal (c1, c2) whose
// receiver consumes the child token and applies the child's activity, as
// often as the transport delivers it. A sweeper may pick any outbox entry at
// any time and finish it (steps 5 to 7). t1 is a root token that may
// expire: a clock may pass its expiry at any moment, and from then on an
// expirer may delete it unless a worker has claimed it (the last check of
// step 3 on the plain path: a claimed root no longer expires); a worker
// that reads or claims an expired root refuses its signal. Every worker and
// the sweeper may crash once at any point: a crashed worker loses its local
// state and starts again from step 1 with the same signal (redelivery); a
// crashed sweeper leaves its entry for the next pick. Each protocol step is
// one atomic action: load the entity, check the outbox, read the token,
// claim it, run the handler and commit by compare-and-set, the transition,
// dispatch, each compare-and-set of the outbox removal and each reload
// after it fails, ack.
//
// Check searches breadth first over every interleaving, keeping each
// distinct state once, and checks the guarantees of docs/protocol.md
// section 3.5 in every state: each activity applied at most once; each
// child token created at most once (never again after it was consumed) and
// only from a committed outbox entry; no child dispatched that a committed
// activity did not emit; no parent consumed without its children created;
// no root expired away after its activity was committed; each child's
// activity applied at most once; and every worker, run on its own with no
// other actor moving, finishes its signal, so that no signal ever waits
// for another one's outbox entry (or anything else) to be finished. Where
// no actor can move it checks that everything happened exactly once and
// nothing was left: all signals acked and applied once (or, for S1,
// refused because its root expired before it was admitted), parent tokens
// gone, outbox empty, each child created, dispatched, consumed and applied
// once. It also checks that no execution can cycle forever, so that every
// execution does end in such a quiet state. A violation comes with the
// shortest interleaving that reaches it.
//
// The broken orderings of docs/protocol.md section 3.3 (TokenBeforeEntity,
// SplitTransition, RemoveBeforeConsume) and ExpiryWithoutClaim (an expiring
// root's activity committed without claiming the root first) run the same
// model with steps reordered, split or left out; each must be caught.
// DeferredRemoval is a second correct ordering, the one of
// engine.Config.DeferRemovals: the worker acks before it removes the outbox
// entry, and a crash after the ack is not redelivered; it must hold every
// invariant too. FastPath is the fast path of protocol.md 3.7 (tokens and
// entities in one store): the entity and the token read in one snapshot,
// and one atomic commit that writes the entity only if its version is
// current and the token live, consumes the token and creates the children;
// FastPathDeferredRemoval is the same with the ack before the removal;
// FastPathChain has W2 take its copy of S1 and S2 in one batch, a chain
// (one commit of the entity with both activities and outbox entries,
// consuming both tokens, or nothing; one removal of both entries), and
// otherwise process them one after the other. All three must hold every
// invariant, and four mutants must not: a commit whose failed
// compare-and-set still consumes the token (the guard left out), one that
// commits although the token is gone, a chain committed while one of its
// tokens is gone, and a chain that records S1's outbox entry only.
//
// Abstracted away: payloads, handler logic and the entity's business state
// (only how often each activity was applied matters). The commit action is
// all that step 4 writes in one atomic operation: the entity's state and
// outbox entry and, for a transactional activity, the handler's writes to
// the service's own tables, which therefore count as applied exactly when
// the activity does; entity versions (each
// actor keeps only whether its loaded version is still current, which is
// all a compare-and-set can observe); token ids (a child is named by its
// signal and by which commit emitted it, so a second application emits a
// different id, as a fresh random id would); the transport (a dispatched
// child may be delivered any number of times; delivering a copy whose token
// is gone changes nothing, so it is not an action); destination and digest
// checks, fan-out to several children, replies, and batches of signals
// for different entities (each entity's commit applied or refused on its
// own) and batched removals, which the simulation covers. The stores are
// linearizable and durable, as R1 and R2 require; what happens when they
// are not is for the simulation and the suites.
package model
