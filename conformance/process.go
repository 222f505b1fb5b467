package conformance

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"

	"github.com/batonhq/baton/internal/syncio"
	"github.com/batonhq/baton/tokenservice"
)

// CheckCommand starts the kit, then the participant that cmd runs, with
// BATON_TOKEN_SERVICE, BATON_API_KEY, BATON_DESTINATION and BATON_ADDR (a
// free loopback address) added to its environment, checks it at
// http://BATON_ADDR/signals, and stops it. It returns the report and what
// the participant printed. cfg.ParticipantKey is made up when empty.
func CheckCommand(ctx context.Context, cfg Config, cmd *exec.Cmd) (Report, string, error) {
	if cfg.ParticipantKey == "" {
		cfg.ParticipantKey, _ = tokenservice.NewAPIKey()
	}
	kit, err := Start(cfg)
	if err != nil {
		return Report{}, "", err
	}
	defer kit.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return Report{}, "", err
	}
	addr := ln.Addr().String()
	ln.Close()
	if cmd.Env == nil {
		cmd.Env = os.Environ()
	}
	cmd.Env = append(cmd.Env, "BATON_TOKEN_SERVICE="+kit.TokenServiceURL(), "BATON_API_KEY="+kit.cfg.ParticipantKey,
		"BATON_DESTINATION="+kit.cfg.Destination, "BATON_ADDR="+addr)
	var out syncio.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return Report{}, "", fmt.Errorf("conformance: start the participant: %w", err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	report, err := kit.Check(ctx, "http://"+addr+"/signals")
	return report, out.String(), err
}
