package conformance

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"
)

// Result is the outcome of one check.
type Result struct {
	Check   string
	Section string // of docs/protocol.md
	Passed  bool
	Detail  string // why it failed
	Took    time.Duration
}

// Report is the outcome of a run: one Result per check, in order.
type Report struct {
	Participant string
	Results     []Result
}

// Passed reports whether every check passed.
func (r Report) Passed() bool {
	for _, res := range r.Results {
		if !res.Passed {
			return false
		}
	}
	return len(r.Results) > 0
}

// Failed counts the checks that failed.
func (r Report) Failed() int {
	n := 0
	for _, res := range r.Results {
		if !res.Passed {
			n++
		}
	}
	return n
}

// WriteTable writes the report as a table, a row per check, and a last
// line with the verdict.
func (r Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "CHECK\tPROTOCOL.MD\tRESULT\tDETAIL\n")
	for _, res := range r.Results {
		verdict := "pass"
		if !res.Passed {
			verdict = "FAIL"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", res.Check, res.Section, verdict, res.Detail)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if r.Passed() {
		_, err := fmt.Fprintf(w, "PASS: %s passed all %d checks\n", r.Participant, len(r.Results))
		return err
	}
	_, err := fmt.Fprintf(w, "FAIL: %s failed %d of %d checks\n", r.Participant, r.Failed(), len(r.Results))
	return err
}
