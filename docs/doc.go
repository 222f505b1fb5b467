// Package docs holds baton's documentation: the language-neutral protocol
// specification (protocol.md), the token service's operator guide
// (token-service.md) and pointers kept for old links (http.md).
//
// It has no code. Its test, protocol_test.go, is what keeps protocol.md
// true: it parses the specification's tables and examples and compares
// them with the code (header names, problem types and status codes, JSON
// fields, token service routes, limits, token id and digest examples),
// checks that every test a section names in its "Tested by" line exists,
// and runs end to end, over httptest with real engines and in-memory
// stores, the behaviour that no other test showed from the outside: every
// HTTP answer in the tables, every token service problem type, a
// participant written from the specification alone, and messages published
// by a foreign NATS or RabbitMQ producer.
package docs
