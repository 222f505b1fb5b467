package typescript_test

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/conformance"
)

// TestTypeScriptParticipantPassesConformance runs the conformance kit
// against examples/participant.ts, built on the client's participant core.
func TestTypeScriptParticipantPassesConformance(t *testing.T) {
	t.Parallel()
	node := requireNode(t)
	cmd := exec.Command(node, "dist/examples/participant.js")
	cmd.Env = append(os.Environ(), "BATON_DATA="+t.TempDir())
	report, printed, err := conformance.CheckCommand(t.Context(), conformance.Config{Destination: "billing",
		TokenServiceAddr: "127.0.0.1:0", Timeout: 5 * time.Second}, cmd)
	if err != nil {
		t.Fatalf("%v; the participant printed:\n%s", err, printed)
	}
	var table strings.Builder
	_ = report.WriteTable(&table)
	t.Logf("conformance of the TypeScript participant:\n%s", table.String())
	if !report.Passed() {
		t.Errorf("the TypeScript participant failed checks:\n%s\nit printed:\n%s", table.String(), printed)
	}
}
