// Package memory provides in-memory token and entity stores. They are first
// class: linearizable, they pass the same conformance suites as every other
// backend, and they suit tests and single-process use where losing all
// state on exit is acceptable (nothing is durable).
package memory
