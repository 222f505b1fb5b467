// Package engine runs baton's processing protocol (DESIGN section 3.2) for
// one destination: it loads the entity a signal routes to, consumes the
// signal's token in the same atomic transition that creates the tokens of
// the signals the activity emits, dispatches them and cleans up.
//
// Activities are plain Go functions over an entity's state, registered per
// signal type with Register. Run pulls signals from a transport with a pool
// of workers; Process handles one signal (the HTTP middleware calls it
// directly); Sweep finishes outbox entries that nobody is driving.
package engine
