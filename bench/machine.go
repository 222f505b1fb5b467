package bench

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"

	goredis "github.com/redis/go-redis/v9"
)

// Machine describes where the benchmark ran.
type Machine struct {
	CPUs     int
	CPUModel string
	Kernel   string
	Go       string
	Postgres string // version and durability settings
	Redis    string // the machine Redis's version and persistence
	Load     string // load average when the run started
}

func (m Machine) String() string {
	parts := []string{fmt.Sprintf("%d CPUs (%s)", m.CPUs, m.CPUModel), "Linux " + m.Kernel, m.Go}
	for _, s := range []string{m.Postgres, m.Redis} {
		if s != "" {
			parts = append(parts, s)
		}
	}
	parts = append(parts, "load average "+m.Load)
	return strings.Join(parts, "; ")
}

func describeMachine(ctx context.Context, e *env) Machine {
	m := Machine{CPUs: runtime.NumCPU(), CPUModel: cpuModel(), Go: runtime.Version(),
		Kernel: readTrim("/proc/sys/kernel/osrelease"), Load: loadAverage()}
	if e.monitor != nil {
		var version, fsync, syncCommit, walSync, fpw, autovacuum string
		err := e.monitor.QueryRow(ctx, `SELECT current_setting('server_version'), current_setting('fsync'),
			current_setting('synchronous_commit'), current_setting('wal_sync_method'), current_setting('full_page_writes'),
			current_setting('autovacuum')`).
			Scan(&version, &fsync, &syncCommit, &walSync, &fpw, &autovacuum)
		if err == nil {
			if autovacuum == "off" {
				autovacuum = "off, so the benchmark vacuums its tables every " + vacuumEvery.String()
			}
			m.Postgres = fmt.Sprintf("PostgreSQL %s (fsync %s, synchronous_commit %s, wal_sync_method %s, full_page_writes %s, autovacuum %s)",
				version, fsync, syncCommit, walSync, fpw, autovacuum)
		}
	}
	if needRedis := slicesContains(e.cfg.Variants, "baton-redis"); needRedis {
		m.Redis = describeRedis(ctx, e.cfg.RedisURL)
	}
	return m
}

func describeRedis(ctx context.Context, url string) string {
	opts, err := goredis.ParseURL(url)
	if err != nil {
		return ""
	}
	c := goredis.NewClient(opts)
	defer c.Close()
	info, err := c.Info(ctx, "server").Result()
	if err != nil {
		return ""
	}
	version := "?"
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "redis_version:"); ok {
			version = v
		}
	}
	cfg, _ := c.ConfigGet(ctx, "append*").Result()
	return fmt.Sprintf("machine Redis %s (appendonly %s, appendfsync %s)", version, cfg["appendonly"], cfg["appendfsync"])
}

func slicesContains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func cpuModel() string {
	raw, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}

func loadAverage() string {
	f := strings.Fields(readTrim("/proc/loadavg"))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func readTrim(path string) string {
	raw, err := os.ReadFile(path)
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(raw))
}
