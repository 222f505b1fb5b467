// Package rabbitmq is a transport.Transport over RabbitMQ quorum queues,
// with publisher confirms, mandatory publishing and manual acknowledgements.
//
// # Guarantees
//
// Delivery is at least once (protocol R3). Each destination has one durable
// quorum queue, <Prefix>.sig.<destination>, declared on the destination's
// first Publish or Subscribe. Publish sends the signal persistently and
// with the mandatory flag through the default exchange (routing key = queue
// name) and returns nil only after the broker confirmed it (publisher
// confirms). A quorum queue replicates its messages with Raft and confirms
// a message once a quorum of its replicas has written it to disk (fsync):
// on a cluster, a signal survives the loss of a minority of nodes; on a
// single node it is fsynced before the confirm, and lost only with the disk.
// PublishBatch (transport.BatchPublisher, used by the engine for a batch's
// signals, engine.Config.Batch) sends many signals on one channel before
// it waits for their confirms, so the broker stores them with one fsync;
// each signal's outcome is what Publish would have said.
//
// Every subscriber of a destination, in any process, consumes the same
// queue, so they compete for its signals. Each subscription has its own
// channel with Config.Prefetch unacknowledged deliveries (basic.qos) and
// acknowledges manually, after processing. Signals are not ordered across
// redeliveries. Attempt is one plus the queue's count of earlier deliveries
// (x-delivery-count; from RabbitMQ 4.3, which no longer counts explicit
// requeues there, x-acquired-count) plus the deliveries a delayed copy
// carries in Baton-Attempts (see Delays).
//
// # Acknowledgement deadline
//
// RabbitMQ returns an unacknowledged delivery to its queue when the
// consumer's channel or connection closes (so a crashed process's
// deliveries come back as soon as the broker sees its connection drop: at
// once when the kernel closes its socket, or after about two heartbeat
// intervals of 10s if the host or network dies), and
// its consumer_timeout (30 minutes by default) closes the channel of a
// consumer that holds a delivery longer. Neither is the short per-delivery
// timeout of transport.Delivery, so the subscription keeps one itself: a
// delivery neither acknowledged nor rejected within Config.AckWait of its
// arrival, or of Next handing it out, is rejected back into its queue
// (basic.nack with requeue) and comes again with Attempt one higher. A
// late Ack, Nack or Park of such a delivery returns an error instead of
// touching another message.
//
// # Delays
//
// RabbitMQ has no delayed redelivery, so Nack(delay) with a positive delay
// publishes a copy of the signal (with the attempts so far in the
// Baton-Attempts header) into a delay bucket, waits for the broker's
// confirm, and then acknowledges the original. A crash in between leaves
// both, and the receiver drops one as a duplicate. Delay buckets are shared
// by the transport's destinations: for each power of two of a millisecond
// from 8ms to 2^25ms (about 9h19m), a fanout exchange and a quorum queue
// <Prefix>.delay.<n>ms with a queue-wide message TTL of n ms and no
// consumer. When the TTL ends, the broker dead-letters the copy, at least
// once, through the default exchange with the routing key it was published
// with: its destination's queue. A delay is rounded up to the next bucket,
// so a signal comes back no sooner than asked and at most about twice as
// late. One TTL per bucket keeps every bucket in expiry order, so a short
// delay never waits behind a longer one (as it would with per-message TTLs,
// which expire only at the head of a queue). Nack(0) rejects the delivery
// back into its queue; a delay over the longest bucket is refused with
// ErrDelayTooLong and leaves the delivery as it was.
//
// # Parking
//
// Park publishes a copy of the message to the quorum queue
// <Prefix>.parked.<destination> with the Baton-Park-Reason and
// Baton-Park-Attempt headers, waits for the confirm, and then acknowledges
// the original (a crash in between leaves a harmless duplicate). Parked
// messages stay until an operator takes them; their tokens stay live. A
// message that does not decode into a valid signal (missing, mistyped or
// malformed headers, oversized payload) is logged and parked the same way
// by the subscription and is never handed to the engine. A destination's
// queue also dead-letters, at least once, into its parked queue, so a
// broker-side delivery limit (an operator's policy, or the default limit of
// newer RabbitMQ versions) parks a signal rather than dropping it.
//
// # Wire format
//
// A signal is one AMQP message: the headers Baton-Token, Baton-Conversation,
// Baton-Causation (absent for root signals), Baton-Type, traceparent and
// tracestate as string values in the headers table (the names of the NATS
// transport), the payload as the body, persistent delivery mode, and the
// token id as message-id. The destination is the queue the message is in:
// <Prefix>.sig.<destination>, with every destination byte outside
// [A-Za-z0-9_-] written as ~XX (hex), and names longer than 128 bytes
// hashed. Payloads over baton.MaxPayloadBytes are refused on publish and
// parked on delivery. Unknown headers (x-death and the like) are ignored.
//
// # Server settings
//
// Required: RabbitMQ 3.10 or newer (quorum queues exist since 3.8; message
// TTL and at-least-once dead-lettering in quorum queues since 3.10). New
// reads the server's version at connect and refuses older ones
// (ErrServerVersion). On a cluster upgraded from older versions, enable
// every feature flag (rabbitmqctl enable_feature_flag all), which
// at-least-once dead-lettering relies on. On a cluster, give quorum queues
// three or five replicas (the broker's default initial group size, or a
// policy) so that signals survive the loss of one or two nodes.
// consumer_timeout must stay above Config.AckWait (the default 30 minutes
// is). The queues this transport declares must not exist with other
// arguments (as classic queues, say): the declaration then fails with an
// error that says so.
//
// # Reconnecting
//
// The transport watches its connection (NotifyClose) and, when it closes,
// connects again with backoff (50ms doubling to 5s) until Close. It logs
// the loss once, then at most once a minute that the broker is still
// unreachable, and once that it reconnected. Publish
// waits for the new connection, up to Config.PublishTimeout; it also waits
// while the broker blocks publishers (a memory or disk alarm). Each
// subscription starts a new channel and consumer on the new connection and
// Next carries on; deliveries handed out on the old connection cannot be
// acknowledged any more (Ack returns an error) and come again, since the
// broker took them back when the connection dropped.
//
// # Failure semantics
//
// Publish: nil means the broker confirmed the signal. Any error means it
// may not be stored and publishing again is safe: ErrUnroutable (the
// mandatory message came back because its queue is gone; nothing was
// stored, and the next publish declares the queues again), ErrNacked (the
// broker refused it, for example a queue over an operator's length limit:
// queues reject publishes rather than drop signals), ErrNoConfirm (the
// channel or connection closed, or PublishTimeout ran out, before the
// confirm: the outcome is unknown), or no connection within
// PublishTimeout. Ack is not confirmed by AMQP: nil means it was written to
// the connection; if it is lost the signal comes back and is dropped as a
// duplicate; an error means the channel had closed and the broker
// redelivers. Nack and Park errors leave the delivery to come back after
// AckWait. Next returns only a delivery, the context's error, or
// transport.ErrClosed. Closing a subscription cancels its consumer and hands
// back at once what arrived but was never handed out; deliveries already
// handed out can still be settled, and return after AckWait if they are
// not. Closing the transport closes its connection, and the broker returns
// every unacknowledged delivery to its queue.
package rabbitmq
