package memory_test

import (
	"testing"
	"time"

	"github.com/batonhq/baton/transport"
	"github.com/batonhq/baton/transport/memory"
	"github.com/batonhq/baton/transporttest"
)

func TestTransport(t *testing.T) {
	t.Parallel()
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
