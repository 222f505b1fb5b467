// Package transport defines the interface that message transports
// implement: at-least-once delivery of signals to a destination, with
// explicit acknowledgement after processing (R3 of protocol.md 3.1).
//
// Every implementation must pass the conformance suite in transporttest.
package transport
