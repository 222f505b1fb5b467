// Package stepcosts reports the benchmarks that measure the server CPU of
// each step of a conversation, baton's against the classic approach's
// (backend/postgres BenchmarkStepCosts, bench BenchmarkBatchStepCosts).
package stepcosts

import (
	"testing"
	"time"
)

// Step is one kind of step and the server CPU its statements used over
// every conversation of the run.
type Step struct {
	Name string
	CPU  time.Duration
}

// Report logs each step's CPU per conversation of n and reports as b's
// metrics the total of baton's steps (the first batonSteps), the total of
// classic's (the rest) and their ratio.
func Report(b *testing.B, steps []Step, batonSteps, n int) {
	b.Helper()
	perConversation := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(n) }
	var batonTotal, classicTotal time.Duration
	for i, st := range steps {
		b.Logf("%-40s %6.1f server-µs/conversation", st.Name, perConversation(st.CPU))
		if i < batonSteps {
			batonTotal += st.CPU
		} else {
			classicTotal += st.CPU
		}
	}
	b.ReportMetric(perConversation(batonTotal), "baton-server-µs/conversation")
	b.ReportMetric(perConversation(classicTotal), "classic-server-µs/conversation")
	if classicTotal > 0 {
		b.ReportMetric(float64(batonTotal)/float64(classicTotal), "baton/classic")
	}
}
