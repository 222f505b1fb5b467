// Package sim is baton's deterministic simulation: the real engine code,
// driven by a seeded scheduler over simulated token store, entity stores
// and broker that duplicate, reorder and delay signals, fail before or
// after applying a write, and crash processes at any call.
//
// Deliveries take the engine's own delivery path (engine.HandleDelivery and
// HandleDeliveries, which process and then acknowledge, retry or park each
// delivery through the simulated broker); removers run the engine's queued
// outbox removals; sweepers run its Sweep, which also expires roots. Every
// write is a yield point twice, before it takes effect and between taking
// effect and answering, so that other actors run while an answer is in
// flight and a caller may crash after its write took effect. A crash kills
// a destination's whole process: its actors stop, a fresh engine takes
// over, and deliveries it left unsettled are handed out again. Some seeds
// issue roots with a short time to live, so that roots expire before and
// while their signals are processed, and expiry only ever refuses them.
//
// Every goroutine the simulation starts runs only when the scheduler hands
// it the turn, and every choice comes from one seeded source, so a seed
// replays exactly. The guarantees of docs/protocol.md section 3.5 are
// checked as events happen and at quiescence, against a ledger of every
// signal of the workload; after quiescence a probe checks that a signal is
// applied while another signal's outbox entry on its entity cannot be
// finished. Run's own goroutines (receivers, worker pool, shutdown) are not
// simulated; the engine's Run tests and the real-service tests cover them.
package sim
