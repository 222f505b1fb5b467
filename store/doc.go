// Package store defines the interfaces that token stores and entity stores
// implement, as database/sql/driver does for SQL drivers. Users do not call
// these directly; the engine does.
//
// Every method documents which errors mean "not applied" and which mean
// "outcome unknown". The protocol is written so that retrying any operation
// whose outcome is unknown is safe, so backends must never hide an unknown
// outcome behind a "not applied" error.
//
// Every implementation must pass the conformance suites in package storetest.
package store
