// Package conversation records the paths signals take through a process,
// for dashboards and the command line. A conversation is a tree: its root
// signal starts it, and every signal an activity emits is a child of the
// signal that activity processed. Live tokens are exactly the edges still in
// flight.
//
// The recorder keeps the most recent conversations in memory, bounded, from
// engine events. It is an observation: nothing in the protocol depends on it.
package conversation
