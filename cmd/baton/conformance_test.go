package main

import (
	"bytes"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// runBaton runs the command line in-process and returns what it printed
// and its error.
func runBaton(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	root := newRootCommand()
	root.SetArgs(args)
	root.SetOut(&out)
	root.SetErr(&out)
	err := root.ExecuteContext(t.Context())
	return out.String(), err
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestConformanceCommandPassesTheReferenceParticipant: `baton conformance
// --run` starts `baton participant` against its own token service, prints
// the table and exits 0.
func TestConformanceCommandPassesTheReferenceParticipant(t *testing.T) {
	t.Parallel()
	bin := filepath.Join(t.TempDir(), "baton")
	if out, err := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	addr := freeAddr(t)
	cmd := exec.Command(bin, "conformance", "--participant", "http://"+addr+"/signals", "--token-service-addr", "127.0.0.1:0",
		"--run", bin+" participant --addr "+addr+" --data "+t.TempDir())
	out, err := cmd.CombinedOutput()
	t.Logf("%s", out)
	if err != nil {
		t.Fatalf("baton conformance: %v", err)
	}
	if !strings.Contains(string(out), "PASS: http://"+addr+"/signals passed all") {
		t.Error("no PASS line")
	}
	if strings.Contains(string(out), "bk_") {
		t.Error("the participant's key was printed")
	}
}

// TestConformanceCommandFailsABrokenParticipant: a participant that
// answers 200 to everything fails, the table says which checks, and the
// exit status is 1.
func TestConformanceCommandFailsABrokenParticipant(t *testing.T) {
	t.Parallel()
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(`{"count":1}`))
	}))
	t.Cleanup(broken.Close)
	out, err := runBaton(t, "conformance", "--participant", broken.URL, "--participant-key", "bk_test",
		"--token-service-addr", "127.0.0.1:0")
	var exit exitError
	if !errors.As(err, &exit) || exit.code != 1 {
		t.Fatalf("error %v, want exit status 1\n%s", err, out)
	}
	for _, want := range []string{"a copy after processing is a duplicate", "FAIL", "FAIL: " + broken.URL + " failed"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// TestConformanceCommandRefusesMissingFlags: without a participant, or
// without a key and --run, it says what is missing.
func TestConformanceCommandRefusesMissingFlags(t *testing.T) {
	t.Setenv("BATON_API_KEY", "")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"conformance"}, "--participant URL is required"},
		{[]string{"conformance", "--participant", "http://127.0.0.1:1/signals"}, "--participant-key"},
		{[]string{"conformance", "--participant", "ftp://x", "--participant-key", "k", "--token-service-addr", "127.0.0.1:0"}, "not an http or https URL"},
	} {
		_, err := runBaton(t, c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want one that says %q", c.args, err, c.want)
		}
	}
}

// baton participant without a key names --key and BATON_API_KEY (found in
// review).
func TestReferenceParticipantWithoutAKeyNamesTheFlag(t *testing.T) {
	t.Setenv("BATON_API_KEY", "")
	refusals(t, []refusal{
		{[]string{"participant", "--data", t.TempDir()}, "pass --key or set BATON_API_KEY"},
		{[]string{"participant", "--data", t.TempDir(), "--destination", "shop"}, "baton serve keygen --system shop"},
	})
}
