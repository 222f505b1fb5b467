// Package proccpu reads the CPU time that processes used, from /proc, for
// benchmarks that measure the servers they drive.
package proccpu

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clockTick is USER_HZ, the unit of utime and stime in /proc/<pid>/stat;
// Linux fixes it at 100 on every architecture Go supports.
const clockTick = 10 * time.Millisecond

// Of reads the CPU time of processes from /proc. Processes that are
// gone are left out; ok is false if /proc cannot be read at all.
func Of(pids []int) (map[int]time.Duration, bool) {
	out := make(map[int]time.Duration, len(pids))
	any := false
	for _, pid := range pids {
		raw, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
		if err != nil {
			continue
		}
		any = true
		// The command name is in parentheses and may hold spaces; the
		// fields after the last ')' are fixed: utime and stime are the
		// 12th and 13th of them.
		s := string(raw)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 13 {
			continue
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		out[pid] = time.Duration(u+st) * clockTick
	}
	return out, any || len(pids) == 0
}
