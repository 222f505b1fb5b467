// Package python_test runs the Python client's tests from go test: its
// unit tests under python3 -m unittest (the token service client against a
// real token service), and the conformance kit against its example
// participant. Python 3.11 or later with only its standard library is
// needed; without python3 the tests skip loudly, and fail under CI=true.
package python_test

import (
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/backend/memory"
	"github.com/batonhq/baton/conformance"
	"github.com/batonhq/baton/internal/testenv"
	"github.com/batonhq/baton/tokenservice"
)

func requirePython(t *testing.T) string {
	t.Helper()
	python, err := exec.LookPath("python3")
	if err != nil {
		if testenv.CI() {
			t.Fatal("python3 is not on PATH (CI=true: the machine's python3 runs the Python client's tests)")
		}
		t.Skip("SKIPPED: python3 is not on PATH; install Python 3.11 or later to run the Python client's tests")
	}
	out, err := exec.Command(python, "-c", "import sys; print(sys.version_info >= (3, 11))").Output()
	if err != nil || strings.TrimSpace(string(out)) != "True" {
		t.Fatalf("python3 must be 3.11 or later: %v %s", err, out)
	}
	return python
}

// TestPythonUnitTests runs the package's unit tests, with a token service
// for the client's tests against the real API. Its small body limit lets
// a test send a batch the service finds too large (413).
func TestPythonUnitTests(t *testing.T) {
	t.Parallel()
	python := requirePython(t)
	edgeKey, edgeHash := tokenservice.NewAPIKey()
	billingKey, billingHash := tokenservice.NewAPIKey()
	const maxBody = 64 << 10
	api, err := tokenservice.New(tokenservice.Config{Tokens: memory.NewTokenStore(), MaxBodyBytes: maxBody, Systems: []tokenservice.System{
		{Name: "edge", KeySHA256: edgeHash, IssueRoots: true, Observe: true},
		{Name: "billing", KeySHA256: billingHash},
	}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	cmd := exec.Command(python, "-W", "error::ResourceWarning", "-m", "unittest", "discover", "-s", "tests", "-t", ".", "-v")
	cmd.Env = append(os.Environ(), "BATON_TEST_TOKEN_SERVICE="+srv.URL, "BATON_TEST_EDGE_KEY="+edgeKey,
		"BATON_TEST_BILLING_KEY="+billingKey, "BATON_TEST_MAX_BODY="+strconv.Itoa(maxBody), "PYTHONDONTWRITEBYTECODE=1")
	out, err := cmd.CombinedOutput()
	t.Logf("python3 -m unittest:\n%s", out)
	if err != nil {
		t.Fatalf("the Python unit tests failed: %v", err)
	}
	if strings.Contains(string(out), "skipped") {
		t.Error("a Python test skipped although the token service was given")
	}
}

// TestPythonParticipantPassesConformance runs the conformance kit against
// examples/participant.py.
func TestPythonParticipantPassesConformance(t *testing.T) {
	t.Parallel()
	python := requirePython(t)
	cmd := exec.Command(python, "-m", "examples.participant")
	cmd.Env = append(os.Environ(), "BATON_DATA="+t.TempDir(), "PYTHONDONTWRITEBYTECODE=1")
	report, printed, err := conformance.CheckCommand(t.Context(), conformance.Config{Destination: "billing",
		TokenServiceAddr: "127.0.0.1:0", Timeout: 5 * time.Second}, cmd)
	if err != nil {
		t.Fatalf("%v; the participant printed:\n%s", err, printed)
	}
	var table strings.Builder
	_ = report.WriteTable(&table)
	t.Logf("conformance of the Python participant:\n%s", table.String())
	if !report.Passed() {
		t.Errorf("the Python participant failed checks:\n%s\nit printed:\n%s", table.String(), printed)
	}
}
