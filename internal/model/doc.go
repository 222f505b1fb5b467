// Package model is the explicit-state model checker of the baton protocol
// (DESIGN 3.2), layer 1 of DESIGN 8.
//
// It is an abstract model, not the engine. One entity receives two signals:
// S1 (token t1), delivered twice to workers W1 and W2, and S2 (token t2),
// delivered to W3. Applying a signal emits one child signal (c1, c2) whose
// receiver consumes the child token and applies the child's activity, as
// often as the transport delivers it. A sweeper may pick any outbox entry at
// any time and finish it (steps 5 to 7). Every worker and the sweeper may
// crash once at any point: a crashed worker loses its local state and starts
// again from step 1 with the same signal (redelivery); a crashed sweeper
// leaves its entry for the next pick. Each protocol step is one atomic
// action: load the entity, check the outbox, read the token, run the handler
// and commit by compare-and-set, the transition, dispatch, each
// compare-and-set of the outbox removal and each reload after it fails, ack.
//
// Check searches breadth first over every interleaving, keeping each
// distinct state once, and checks the invariants of DESIGN 3.3 in every
// state: each activity applied at most once; each child token created at
// most once (never again after it was consumed) and only from a committed
// outbox entry; no child dispatched that a committed activity did not emit;
// no parent consumed without its children created; each child's activity
// applied at most once. Where no actor can move it checks that everything
// happened exactly once and nothing was left: all signals acked and
// applied once, parent tokens consumed, outbox empty, each child created,
// dispatched, consumed and applied once. It also checks that no execution
// can cycle forever, so that every execution does end in such a quiet
// state. A safety violation comes with the shortest interleaving that
// reaches it.
//
// The variants of DESIGN 3.4 (TokenBeforeEntity, SplitTransition,
// RemoveBeforeConsume) run the same model with the steps reordered or split;
// each must be caught. DeferredRemoval is a second correct ordering, the
// one of engine.Config.DeferRemovals: the worker acks before it removes the
// outbox entry, and a crash after the ack is not redelivered; it must hold
// every invariant too.
//
// Abstracted away: payloads, handler logic and the entity's business state
// (only how often each activity was applied matters); entity versions (each
// actor keeps only whether its loaded version is still current, which is
// all a compare-and-set can observe); token ids (a child is named by its
// signal and by which commit emitted it, so a second application emits a
// different id, as a fresh random id would); the transport (a dispatched
// child may be delivered any number of times; delivering a copy whose token
// is gone changes nothing, so it is not an action); destination and digest
// checks, root token expiry, fan-out to several children, replies, and the
// fused store calls of DESIGN 3.7 (the fast path, one-snapshot reads,
// batched removals), which the simulation covers. The stores are linearizable
// and durable, as R1 and R2 require; what happens when they are not is for
// the simulation and the suites.
package model
