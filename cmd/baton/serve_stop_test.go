package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton/internal/syncio"
)

// A SIGTERM stops `baton serve` normally while clients stall mid-request,
// on the API's address and on the dashboard's: after the grace period the
// connections still open are closed, a warning says how many, the stop is
// logged and the exit status is 0. (It waited for the stalled upload until
// the deadline, then exited 1 with "shutdown: context deadline exceeded"
// and never logged the stop; found in review.)
func TestServeStopsOnSIGTERMDespiteStalledRequests(t *testing.T) {
	t.Parallel()
	systems, k := systemsFile(t, false)
	cmd := exec.Command(os.Args[0], "serve", "--addr", "127.0.0.1:0", "--dashboard-addr", "127.0.0.1:0",
		"--data-dir", t.TempDir(), "--systems", systems, "--log-level", "info")
	cmd.Env = append(os.Environ(), asBatonEnv+"=300ms", "BATON_SYSTEM=")
	var stderr syncio.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	must(t, err)
	must(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	out := bufio.NewScanner(stdout)
	apiAddr := printedAddr(t, out, "listening on http://")
	dashboardAddr := printedAddr(t, out, "dashboard on http://")
	go io.Copy(io.Discard, stdout)

	// The API's client asks for 100-continue, so that the interim answer
	// shows the handler reading the body, and then sends 6 of 100 bytes.
	api := dial(t, apiAddr)
	fmt.Fprintf(api, "POST /v1/tokens/read HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n"+
		"Content-Type: application/json\r\nContent-Length: 100\r\nExpect: 100-continue\r\n\r\n", k.edge)
	if line, err := bufio.NewReader(api).ReadString('\n'); err != nil || !strings.HasPrefix(line, "HTTP/1.1 100 ") {
		t.Fatalf("stalled upload: got %q, %v; want 100 Continue", line, err)
	}
	_, err = io.WriteString(api, `{"ids"`)
	must(t, err)

	// The dashboard's client sends the headers of a request with a body
	// and then stalls too. (A connection in the middle of its headers
	// counts as idle, and is closed at once.)
	board := dial(t, dashboardAddr)
	_, err = io.WriteString(board, "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{")
	must(t, err)
	time.Sleep(200 * time.Millisecond) // for the server to accept it

	must(t, cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-exited:
		exited <- err // for the cleanup
		if err != nil {
			t.Fatalf("baton serve after SIGTERM: %v; want exit status 0\n%s", err, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("baton serve did not stop within 10s of SIGTERM (grace period 300ms)\n%s", stderr.String())
	}
	log := stderr.String()
	for _, want := range []string{
		`level=WARN msg="shutdown: grace period over, closed the connections still open" grace=300ms connections=2`,
		`level=INFO msg="token service stopped"`,
	} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
}

// printedAddr reads stdout's next line, which must start with prefix, and
// returns its rest.
func printedAddr(t *testing.T, stdout *bufio.Scanner, prefix string) string {
	t.Helper()
	if !stdout.Scan() {
		t.Fatalf("baton serve printed no line starting with %q: %v", prefix, stdout.Err())
	}
	addr, ok := strings.CutPrefix(stdout.Text(), prefix)
	if !ok {
		t.Fatalf("baton serve printed %q, want a line starting with %q", stdout.Text(), prefix)
	}
	return addr
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	must(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}
