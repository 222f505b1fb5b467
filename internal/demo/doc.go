// Package demo is baton's runnable demonstration: three systems that behave
// like separate systems (their own processes, their own entity stores) run
// an order process through a shared token service, under injected chaos,
// and the demo proves at the end that every step happened exactly once.
//
//   - shop: a web page where a person places orders (forms carry root
//     tokens); it records payments, reservations and shipments on the order.
//   - billing: reached over HTTP; charges the customer's account and replies.
//   - warehouse: reached over NATS JetStream; reserves stock and ships.
//
// The parent process (Run) owns the shared infrastructure: the token
// service over the embedded store, an embedded NATS server, the dashboard.
// It starts each system as a child process of the same binary (RunSystem),
// places orders like a person would (double clicks included), kills
// systems with SIGKILL and restarts them, and verifies the result from the
// systems' own stores.
package demo
