// Package e2e proves exactly-once processing end to end, on real services:
// PostgreSQL, Redis, NATS JetStream and RabbitMQ, with engine processes
// killed by SIGKILL and network faults injected between the processes and
// the services.
//
// The package holds the workload that the worker binary (./worker) runs
// and the ledger check that the tests apply to the stores afterwards, so
// that both sides agree on routing and on what "done" means. The tests
// build the worker, start several copies as subprocesses, publish root
// signals twice each, kill and restart workers at random moments, put
// toxiproxy between the workers and the services, wait until the system
// is quiet and then read every entity and the token store.
//
// # The workload
//
// One conversation is an order: order.place at "order" publishes
// order.placed to the topic "order.placed", which fans out to "billing"
// and "stock"; billing charges one of a few shared account entities and
// sends order.charged to "shipping". Stock reserves on one of a few shared
// stock entities. So a conversation is four activities, and every shared
// entity is touched by many signals of many conversations. Each activity
// appends "conversation/activity/token" to its entity's ledger, in the same
// commit as the entity's state and outbox entry: the ledger is exactly the
// set of committed activities.
//
// # The check
//
// Check reads a Snapshot (every entity the workload can touch, the live
// tokens, and anything a backend can list beyond that) and reports every
// expected activity that is missing or applied more than once, every
// ledger entry that should not exist, every live token and every outbox
// entry. A run passes only if the report is empty once the system is
// quiet.
package e2e
