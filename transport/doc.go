// Package transport defines the interface that message transports
// implement: at-least-once delivery of signals to a destination, with
// explicit acknowledgement after processing (DESIGN R3).
//
// Every implementation must pass the conformance suite in transporttest.
package transport
