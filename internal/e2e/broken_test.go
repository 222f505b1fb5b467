package e2e

import (
	"testing"
	"time"
)

// TestExactlyOnceCatchesBrokenWorker shows that the end-to-end check can
// fail: the same harness runs a worker in its test-only broken mode
// (-broken=skip-token-check: a consumed token is treated as live, so a
// duplicate runs its activity again), and the ledger check must report the
// duplicated activities. Without kills or network faults the duplicates
// come from the copies of the root signals that the harness publishes.
func TestExactlyOnceCatchesBrokenWorker(t *testing.T) {
	r := row{name: "BROKEN skip-token-check/embedded/nats/1-proc", tokens: "embedded", entities: "embedded", transport: "nats",
		procs: []proc{{serve: all, file: "all.db"}}}
	report := runRow(t, r, plan{
		conversations: 12,
		publishOver:   2 * time.Second,
		broken:        "skip-token-check",
		quietTimeout:  30 * time.Second,
	})
	if report.OK() {
		t.Fatalf("the ledger check passed a worker that skips the token check:\n%s", report)
	}
	if len(report.Duplicated) == 0 {
		t.Fatalf("the ledger check failed the broken worker, but not for duplicates:\n%s", report)
	}
	t.Logf("caught, as it must be: %s", report.Summary())
}
