// Package sim is baton's deterministic simulation (DESIGN 8.3): the real
// engine code, driven by a seeded scheduler over simulated token store,
// entity stores and broker that duplicate, reorder and delay signals, fail
// before or after applying a write, and crash workers at any store call.
//
// Every goroutine the simulation starts runs only when the scheduler hands
// it the turn, and every choice comes from one seeded source, so a seed
// replays exactly. Invariants (DESIGN 3.3) are checked as events happen and
// at quiescence, against a ledger of every signal of the workload.
package sim
