// Package conversation records the paths signals take through a process,
// for dashboards and the command line. A conversation is a tree: its root
// signal starts it, and every signal an activity emits is a child of the
// signal that activity processed. Live tokens are exactly the edges still in
// flight.
//
// The recorder keeps recent conversations in memory, from engine events,
// within Limits: signals per conversation, conversations, and estimated
// memory in all. Over a limit it evicts finished conversations before
// unfinished ones and counts what it evicted and dropped (Recorder.Stats).
// It is an observation: nothing in the protocol depends on it.
package conversation
