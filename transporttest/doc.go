// Package transporttest is the conformance suite for transports (package
// transport). Every transport runs it from its own tests; the in-memory
// transport of transport/memory runs it too.
//
// A transport's test file hands the suite a harness that opens a
// transport per call, registers its cleanup, and states the acknowledgement
// timeout it configured:
//
//	func TestTransport(t *testing.T) {
//		transporttest.Run(t, transporttest.Harness{
//			New: func(t *testing.T) transport.Transport {
//				tr, err := mytransport.Dial(t.Context(), mytransport.Config{URL: url, AckWait: 500 * time.Millisecond})
//				if err != nil {
//					t.Fatal(err)
//				}
//				t.Cleanup(func() { tr.Close() })
//				return tr
//			},
//			AckWait: 500 * time.Millisecond,
//		})
//	}
//
// Every check is a parallel subtest with its own transport and destination
// names made unique with a random suffix, so the suite runs against a
// shared external broker without purging it. Signals the suite leaves
// behind (parked ones) are in destinations nobody uses again.
//
// The suite checks that a transport:
//
//   - keeps a signal published before anyone subscribed, and delivers every
//     field unchanged (ids, conversation, causation, destination, type,
//     trace and payload bytes, from empty up to baton.MaxPayloadBytes);
//   - counts attempts: Attempt is 1 on the first delivery and grows by one
//     on each redelivery;
//   - redelivers after Nack, no sooner than the delay asked for, and
//     redelivers a delivery neither acknowledged nor rejected after about
//     AckWait (not before AckWait/2, and within a few AckWaits);
//   - does not redeliver after Ack or Park (watched for 2*AckWait);
//   - shares a destination's signals among its subscribers (competing
//     consumers: never one signal held by two subscribers at once, every
//     signal delivered, both subscribers get work);
//   - keeps destinations apart, even names that look like subject wildcards
//     (".*", ".>", "#"), prefixes of one another, or differ only in case,
//     up to baton.MaxNameBytes long;
//   - delivers all of 200 signals published concurrently at least once;
//   - returns from Next promptly when its context ends, and with
//     transport.ErrClosed when the subscription is closed, without losing
//     signals for the next subscriber.
//
// The whole suite waits on the order of a few AckWaits; keep AckWait short
// (a few hundred milliseconds) in the harness.
package transporttest
