package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"time"

	"github.com/spf13/cobra"

	"github.com/batonhq/baton/internal/demo"
)

// watchRate is the demo's pace of orders per second without --exit.
const watchRate = 2

func newDemoCommand() *cobra.Command {
	var (
		opts    demo.Options
		noChaos bool
		exit    bool
		verbose bool
	)
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run three systems through an order process under chaos and verify exactly-once",
		Long: `demo runs a shop (a web page with forms), billing (over HTTP) and a warehouse
(over NATS JetStream) as separate processes, each with its own store, sharing a
token service on the embedded store. Simulated people place orders (some
double-click), systems are killed with SIGKILL and restarted, deliveries are
duplicated and HTTP responses lost. At the end the demo reads every system's
own store and reports: no double charge, no lost order.

The dashboard shows the conversations live while it runs. With --exit the demo
runs headless, prints the report and exits with status 1 if an invariant failed.
Nothing else needs to run: the token store, the broker and the dashboard are
embedded.`,
		Example: "  baton demo\n  baton demo --orders 200 --exit\n  baton demo --no-chaos --orders 10",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if noChaos {
				opts.Chaos, opts.DoubleClickRate, opts.KillEvery = demo.Chaos{}, 0, 0
			}
			if opts.Orders < 1 {
				return fmt.Errorf("--orders must be at least 1, got %d", opts.Orders)
			}
			// demo.Options takes zero or less for a default, and a negative
			// rate or kill interval for none.
			if err := positiveFlags(cmd.Flags(), "people", "timeout"); err != nil {
				return err
			}
			if err := nonNegativeFlags(cmd.Flags(), "rate", "kill-every"); err != nil {
				return err
			}
			if !cmd.Flags().Changed("seed") {
				opts.Seed = uint64(time.Now().UnixNano())
			}
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			opts.Command = func() *exec.Cmd { return exec.Command(exe, "demo", "system") }
			opts.Progress = cmd.OutOrStdout()
			if verbose {
				opts.Logger = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))
			}
			opts.Linger = !exit
			if !cmd.Flags().Changed("rate") && !exit {
				// Slow enough for a person to watch the conversations move
				// on the dashboard; --exit keeps CI fast.
				opts.Rate = watchRate
			}
			out := cmd.OutOrStdout()
			opts.OnReport = func(r demo.Report) {
				r.Write(out)
			}
			report, err := demo.Run(cmd.Context(), opts)
			if err != nil {
				return err
			}
			switch {
			case !report.OK:
				return exitError{code: 1, msg: "demo: verification failed"}
			case report.Interrupted:
				return exitError{code: 130, msg: "demo: interrupted"}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&opts.Orders, "orders", 50, "orders to place")
	f.IntVar(&opts.Concurrency, "people", 8, "people placing orders at once")
	f.Float64Var(&opts.Rate, "rate", 20, "orders per second at most; without --exit the default is 2, to watch (0: as fast as the shop takes them)")
	f.BoolVar(&noChaos, "no-chaos", false, "inject no faults")
	f.Float64Var(&opts.Chaos.DuplicateRate, "duplicate-rate", 0.15, "share of deliveries and HTTP calls duplicated")
	f.Float64Var(&opts.Chaos.LostResponseRate, "lost-response-rate", 0.15, "share of billing's HTTP responses lost after processing")
	f.Float64Var(&opts.DoubleClickRate, "double-click-rate", 0.25, "share of orders submitted twice at once")
	f.DurationVar(&opts.KillEvery, "kill-every", 500*time.Millisecond, "kill a random system with SIGKILL this often (0: never)")
	f.StringVar(&opts.Addr, "addr", demo.DefaultAddr, "address of the dashboard and token service (127.0.0.1:0: any free port)")
	f.StringVar(&opts.DataDir, "data", "", "directory for the stores (default: a temporary directory, removed at the end)")
	f.DurationVar(&opts.Timeout, "timeout", 3*time.Minute, "give up if the orders are not finished by then")
	f.Uint64Var(&opts.Seed, "seed", 0, "seed of the chaos and the orders (default: random, printed at the start)")
	f.BoolVar(&exit, "exit", false, "run headless: print the report and exit (status 1 if an invariant failed)")
	f.BoolVar(&verbose, "verbose", false, "log the demo's own work to stderr")
	cmd.AddCommand(newDemoSystemCommand())
	return cmd
}

// newDemoSystemCommand runs one of the demo's systems; the demo starts it
// with its configuration in the environment.
func newDemoSystemCommand() *cobra.Command {
	return &cobra.Command{
		Use:    "system",
		Short:  "Run one system of the demo (started by baton demo)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			raw := os.Getenv(demo.SystemEnv)
			if raw == "" {
				return errors.New("demo system: started outside baton demo (" + demo.SystemEnv + " is not set)")
			}
			var cfg demo.SystemConfig
			if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
				return fmt.Errorf("demo system: %s: %w", demo.SystemEnv, err)
			}
			cfg.Logger = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelInfo}))
			return demo.RunSystem(cmd.Context(), cfg)
		},
	}
}
