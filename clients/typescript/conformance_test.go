package typescript_test

import (
	"context"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/conformance"
	"github.com/batonhq/baton/tokenservice"
)

// TestTypeScriptParticipantPassesConformance runs the conformance kit
// against examples/participant.ts, built on the client's participant core.
func TestTypeScriptParticipantPassesConformance(t *testing.T) {
	t.Parallel()
	node := requireNode(t)
	key, _ := tokenservice.NewAPIKey()
	kit, err := conformance.Start(conformance.Config{Destination: "billing", ParticipantKey: key,
		TokenServiceAddr: "127.0.0.1:0", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = kit.Close() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(t.Context())
	cmd := exec.CommandContext(ctx, node, "dist/examples/participant.js")
	cmd.Env = append(os.Environ(), "BATON_TOKEN_SERVICE="+kit.TokenServiceURL(), "BATON_API_KEY="+key,
		"BATON_DESTINATION=billing", "BATON_ADDR="+addr, "BATON_DATA="+t.TempDir())
	var log strings.Builder
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = cmd.Wait() })
	report, err := kit.Check(t.Context(), "http://"+addr+"/signals")
	if err != nil {
		t.Fatalf("%v; the participant printed:\n%s", err, log.String())
	}
	var table strings.Builder
	_ = report.WriteTable(&table)
	t.Logf("conformance of the TypeScript participant:\n%s", table.String())
	if !report.Passed() {
		t.Errorf("the TypeScript participant failed checks:\n%s\nit printed:\n%s", table.String(), log.String())
	}
}
