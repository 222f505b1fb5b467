package main

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/batonhq/baton/sim"
)

func newSimCommand() *cobra.Command {
	var (
		seeds, conversations, steps int
		seed, from                  uint64
		verbose                     bool
	)
	cmd := &cobra.Command{
		Use:   "sim",
		Short: "Run the deterministic simulation of the protocol under faults",
		Long: `sim drives the real engine, its delivery and acknowledgement path included,
with a seeded scheduler over simulated stores and a simulated broker that
duplicate, reorder and delay signals, fail writes before or after applying them
(and let others run while an answer is in flight), crash whole processes at
any call, and expire root tokens. Invariants are checked as events happen and
at quiescence, against a ledger of every signal.

A failing seed replays exactly: baton sim --seed N.`,
		Example: "  baton sim --seeds 300\n  baton sim --seed 42 --verbose",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if seeds < 1 {
				return fmt.Errorf("--seeds must be at least 1, got %d", seeds)
			}
			// sim.Options takes zero or less for a default.
			if err := positiveFlags(cmd.Flags(), "conversations", "steps"); err != nil {
				return err
			}
			if cmd.Flags().Changed("seed") {
				from, seeds = seed, 1
				verbose = true
			}
			return runSims(cmd.OutOrStdout(), from, seeds, sim.Options{Conversations: conversations, Steps: steps}, verbose)
		},
	}
	f := cmd.Flags()
	f.IntVar(&seeds, "seeds", 100, "number of seeds to run")
	f.Uint64Var(&from, "from", 1, "first seed of a --seeds run")
	f.Uint64Var(&seed, "seed", 0, "replay this one seed, with its counters and trace")
	f.IntVar(&conversations, "conversations", sim.DefaultConversations, "conversations (orders) per seed")
	f.IntVar(&steps, "steps", 4000, "scheduling steps with faults on, per seed")
	f.BoolVar(&verbose, "verbose", false, "print every seed's summary and counters")
	return cmd
}

func runSims(out io.Writer, from uint64, seeds int, opts sim.Options, verbose bool) error {
	start := time.Now()
	totals := map[string]int{}
	var applied, expected int
	lastProgress := time.Now()
	for i := range seeds {
		opts.Seed = from + uint64(i)
		r := sim.Run(opts)
		applied += r.Applied
		expected += r.Expected
		for k, v := range r.Counters {
			totals[k] += v
		}
		if verbose {
			fmt.Fprintln(out, r.Summary())
			fmt.Fprintf(out, "  faults: %+v\n", r.Faults)
			for _, line := range sim.SortedCounters(r.Counters) {
				fmt.Fprintln(out, "  "+line)
			}
		}
		if !r.OK() {
			fmt.Fprintln(out, r.Summary())
			fmt.Fprintln(out, "last events before the violation:")
			for _, line := range r.Trace {
				fmt.Fprintln(out, "  "+line)
			}
			return exitError{code: 1, msg: fmt.Sprintf("invariant violated at seed %d; replay with: baton sim --seed %d", r.Seed, r.Seed)}
		}
		if !verbose && time.Since(lastProgress) > 2*time.Second {
			fmt.Fprintf(out, "... %d/%d seeds ok (%s)\n", i+1, seeds, time.Since(start).Round(time.Millisecond))
			lastProgress = time.Now()
		}
	}
	if !verbose || seeds > 1 {
		fmt.Fprintln(out, "fault and recovery counters over all seeds:")
		for _, line := range sim.SortedCounters(totals) {
			fmt.Fprintln(out, "  "+line)
		}
	}
	fmt.Fprintf(out, "sim: %d seeds ok (%d to %d): %d/%d activities applied exactly once, 0 lost, 0 duplicated, 0 unexpected, in %s\n",
		seeds, from, from+uint64(seeds)-1, applied, expected, time.Since(start).Round(time.Millisecond))
	return nil
}
