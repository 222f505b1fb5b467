package transporttest_test

import (
	"testing"
	"time"

	"github.com/batonhq/baton/transport"
	"github.com/batonhq/baton/transport/memory"
	"github.com/batonhq/baton/transporttest"
)

// A transport runs the suite from a test function in its own package, with
// a short acknowledgement timeout. This is how transport/memory does it.
func ExampleRun() {
	testTransport := func(t *testing.T) {
		const ackWait = 200 * time.Millisecond
		transporttest.Run(t, transporttest.Harness{
			New: func(t *testing.T) transport.Transport {
				tr := memory.New(memory.Config{AckWait: ackWait})
				t.Cleanup(func() { tr.Close() })
				return tr
			},
			AckWait: ackWait,
		})
	}
	_ = testTransport // in a _test.go file: func TestTransport(t *testing.T) { ... }
}
