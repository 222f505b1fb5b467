package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/batonhq/baton/conformance"
	"github.com/batonhq/baton/tokenservice"
)

func newConformanceCommand() *cobra.Command {
	var (
		cfg         conformance.Config
		participant string
		run         string
	)
	cmd := &cobra.Command{
		Use:   "conformance --participant URL",
		Short: "Check that a participant in any language follows docs/protocol.md, over HTTP",
		Long: `conformance checks a participant over HTTP: duplicates, concurrent copies,
tampered bodies, wrong destinations, unknown and expired tokens, lost
responses and token service outages. It prints a table of checks against the
sections of docs/protocol.md and exits 1 if any failed.

The kit runs its own token service (--token-service-addr), which the
participant must use as the system named --destination with the key
--participant-key; the participant must have the counting activity of type
--type (payload {"entity": name}, reply {"count": n}; see the conformance
package). With --run the kit starts the participant itself, with the
environment BATON_TOKEN_SERVICE, BATON_API_KEY and BATON_DESTINATION set,
and stops it at the end.`,
		Example: `  baton conformance --participant http://127.0.0.1:7470/signals \
    --run 'baton participant --data /tmp/billing'
  BATON_API_KEY=bk_... baton conformance --participant http://127.0.0.1:8000/signals`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if participant == "" {
				return errors.New("--participant URL is required: where the participant serves signals")
			}
			if cfg.ParticipantKey == "" {
				cfg.ParticipantKey = os.Getenv("BATON_API_KEY")
			}
			if cfg.ParticipantKey == "" {
				if run == "" {
					return errors.New("--participant-key (or BATON_API_KEY) is required: the key the participant uses at the kit's token service; with --run the kit makes one")
				}
				cfg.ParticipantKey, _ = tokenservice.NewAPIKey()
			}
			out := cmd.OutOrStdout()
			cfg.Progress = out
			kit, err := conformance.Start(cfg)
			if err != nil {
				return err
			}
			defer kit.Close()
			fmt.Fprintf(out, "conformance: token service for %q at %s; checking %s\n", cfg.Destination, kit.TokenServiceURL(), participant)
			if run != "" {
				stop, err := startParticipant(run, kit.TokenServiceURL(), cfg)
				if err != nil {
					return err
				}
				defer stop()
			}
			report, err := kit.Check(cmd.Context(), participant)
			if err != nil {
				return err
			}
			fmt.Fprintln(out)
			if err := report.WriteTable(out); err != nil {
				return err
			}
			if !report.Passed() {
				return exitError{code: 1, msg: fmt.Sprintf("conformance: %d of %d checks failed", report.Failed(), len(report.Results))}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&participant, "participant", "", "URL at which the participant serves signals (required)")
	f.StringVar(&cfg.Destination, "destination", "billing", "the participant's destination: its system name at the kit's token service")
	f.StringVar(&cfg.ParticipantKey, "participant-key", "", "API key the participant uses at the kit's token service [BATON_API_KEY]")
	f.StringVar(&cfg.TokenServiceAddr, "token-service-addr", conformance.DefaultTokenServiceAddr, "where the kit's token service listens")
	f.StringVar(&cfg.Type, "type", conformance.DefaultType, "type of the participant's counting activity")
	f.DurationVar(&cfg.Timeout, "timeout", conformance.DefaultTimeout, "bound of each request, and of the wait for the participant to answer")
	f.StringVar(&run, "run", "", "shell command that starts the participant (run with sh -c; stopped at the end)")
	return cmd
}

// startParticipant runs command with the kit's token service in its
// environment and returns a function that stops it.
func startParticipant(command, tokenService string, cfg conformance.Config) (stop func(), err error) {
	c := exec.Command("sh", "-c", command)
	c.Env = append(os.Environ(), "BATON_TOKEN_SERVICE="+tokenService, "BATON_API_KEY="+cfg.ParticipantKey,
		"BATON_DESTINATION="+cfg.Destination)
	c.Stdout, c.Stderr = os.Stderr, os.Stderr
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.Start(); err != nil {
		return nil, fmt.Errorf("conformance: starting the participant: %w", err)
	}
	return func() {
		_ = syscall.Kill(-c.Process.Pid, syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = c.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
			<-done
		}
	}, nil
}
