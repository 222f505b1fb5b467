package testenv

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
)

// StableAddr returns 127.0.0.1 with a port below the kernel's ephemeral
// range, for a listener that a test closes and opens again (a proxy it
// takes down, a server it kills and restarts): meanwhile an outgoing
// connection could take a port from the ephemeral range as its own, and
// the listener could not come back. The port is not checked; callers retry
// on "address in use".
func StableAddr() string {
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if fields := strings.Fields(string(b)); len(fields) == 2 {
			if n, err := strconv.Atoi(fields[0]); err == nil {
				low = n
			}
		}
	}
	if low < 12000 {
		return "127.0.0.1:0"
	}
	return fmt.Sprintf("127.0.0.1:%d", 10000+rand.IntN(low-10000))
}
