// Package nats is a transport.Transport over NATS JetStream, with an
// embedded server as the default and an external server or cluster for
// scale.
//
// # Guarantees
//
// Delivery is at least once (protocol R3). Publish returns nil only after
// JetStream acknowledged storing the signal. Each destination has one
// durable pull consumer, <Prefix>.sig.<destination>, shared by every
// subscriber in every process: they compete for its signals. A delivery is
// acknowledged explicitly, after processing (the engine acks after the last
// protocol step); one not acknowledged within AckWait (default 30s) is
// redelivered, and Nack(delay) redelivers after delay. Attempt is
// JetStream's delivery count. Signals are not ordered across redeliveries.
//
// The stream uses work-queue retention, so it holds only signals in flight
// and parked ones; it never discards a stored signal to make room (a full
// stream refuses publishes instead) and has no age limit. The token id is
// sent as Nats-Msg-Id, so JetStream drops a republish within
// DuplicateWindow; that only saves work, since receivers drop duplicates
// through the token store.
//
// # Parking
//
// Park, and a delivery whose count exceeds Config.MaxDeliver, stores a copy
// of the message under <Prefix>.parked.<destination> in the same stream,
// with the Baton-Park-Reason and Baton-Park-Attempt headers, and then
// terminates the original. Parked messages stay until an operator takes
// them; their tokens stay live. A message that does not decode into a valid
// signal (missing or malformed headers, oversized payload) is logged and
// parked the same way by Next and is never handed to the engine.
//
// # Wire format
//
// The subject is <Prefix>.sig.<destination>, with every destination byte
// outside [A-Za-z0-9_-] written as ~XX (hex), so '.', '*' and '>' in names
// are safe. Headers: Baton-Token, Baton-Conversation, Baton-Causation
// (absent for root signals), Baton-Type, traceparent, tracestate. The body
// is the payload. Payloads over baton.MaxPayloadBytes are refused on
// publish; the stream's max message size is that plus 16 KiB for headers.
//
// # Server settings
//
// Required: JetStream enabled, file storage (the transport creates or
// updates the stream with file storage and Config.Replicas), and fsync of
// every write before the acknowledgement, or a server crash loses
// acknowledged signals: in the server config,
//
//	jetstream { store_dir: "/var/lib/nats", sync_interval: always }
//	http_port: 8222
//
// and max_payload of at least 2MB (the default 1MB refuses signals with
// payloads near baton.MaxPayloadBytes; New warns). A client connection
// cannot see the sync setting, so New reads it from the monitoring
// endpoint: set Config.MonitorURL to the server's monitoring address
// (on a cluster, the addresses of every server that may hold the stream,
// comma separated). New refuses with ErrUnsafeDurability, before it
// creates anything, a server whose /varz does not show sync_always, a
// monitoring address that does not answer, and an empty MonitorURL.
// Config.AllowUnsafeDurability takes such a server anyway and logs a
// warning; set it only for tests and throw-away data. The embedded server
// needs none of this: StartEmbedded sets SyncAlways, and
// Embedded.NewTransport checks it in the server's own config. On a
// cluster, Replicas 3 keeps signals through the loss of one server.
//
// # When a server loses a signal
//
// If a server without sync on every write (or a disk that lies about
// fsync) loses a signal that it had acknowledged, nothing redelivers it:
// the sender removed its outbox entry once Publish returned. The signal is
// not lost silently, because its token stays live in the token store and
// nothing will consume it: it shows as work in flight that never ends, in
// "baton tokens list --destination D", as a stuck token on the dashboard
// (older than dashboard.Config.StuckAfter), and in the baton.tokens.live
// gauge of its destination, which does not return to zero. The token
// holds the signal's id, conversation, cause, destination, type and
// payload digest, but not the payload, so baton cannot resend it by
// itself. An operator either publishes the signal again with the same
// token id, conversation, cause, destination, type and exact payload (the
// receiver refuses one that differs from its token), taken from the
// sending system's records, and the receiver then applies it once as
// usual; or abandons it by consuming the token with a transition that
// creates nothing (store.TokenStore.Transition with no children), after
// which any late copy is dropped as a duplicate. A root token with an
// expiry disappears at its expiry like any unused root, so look before
// then.
//
// # Embedded and external
//
// StartEmbedded runs nats-server in the process with JetStream, file
// storage in a data directory and SyncAlways set. It takes no port by
// default: clients connect in-process (Embedded.Connect,
// Embedded.NewTransport); EmbeddedConfig.Listen opens a free port for other
// processes, and one for monitoring, which their transports pass as
// Config.MonitorURL (Embedded.MonitorURL). Restarting on the same
// directory recovers stored signals. For an external server or cluster,
// pass Config.URL (or a connection) and Config.MonitorURL; the transport
// reconnects forever.
//
// # Failure semantics
//
// Publish: nil means stored; any error means the outcome is unknown and
// publishing again is safe. Ack waits for JetStream's confirmation; an
// error means the signal may come back and is then dropped as a duplicate.
// Nack and Park errors leave the delivery to come back after AckWait.
// Next retries broker errors with backoff and returns only a delivery, the
// context's error, or an error wrapping transport.ErrClosed (after Close,
// or when the connection is closed for good). Closing a subscription hands
// back at once the message it had pulled but not handed out.
package nats
