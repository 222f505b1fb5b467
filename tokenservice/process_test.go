package tokenservice_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/tokenservice"
)

var (
	batonOnce sync.Once
	batonBin  string
	batonErr  error
)

// TestMain removes the baton binary that the process tests built.
func TestMain(m *testing.M) {
	code := m.Run()
	if batonBin != "" {
		os.RemoveAll(filepath.Dir(batonBin))
	}
	os.Exit(code)
}

// buildBaton compiles cmd/baton once for all the tests of this package.
func buildBaton(t *testing.T) string {
	t.Helper()
	batonOnce.Do(func() {
		dir, err := os.MkdirTemp("", "baton-serve-test-")
		if err != nil {
			batonErr = err
			return
		}
		batonBin = filepath.Join(dir, "baton")
		goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
		if _, err := os.Stat(goTool); err != nil {
			goTool = "go"
		}
		out, err := exec.Command(goTool, "build", "-o", batonBin, "github.com/batonhq/baton/cmd/baton").CombinedOutput()
		if err != nil {
			batonErr = fmt.Errorf("go build ./cmd/baton: %v\n%s", err, out)
		}
	})
	if batonErr != nil {
		t.Fatal(batonErr)
	}
	return batonBin
}

// keygen runs `baton serve keygen` and returns the key and the systems
// file entry it printed.
func keygen(t *testing.T, bin string, args ...string) (key string, entry tokenservice.System) {
	t.Helper()
	out, err := exec.Command(bin, append([]string{"serve", "keygen"}, args...)...).Output()
	if err != nil {
		t.Fatalf("baton serve keygen %v: %v", args, err)
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if !strings.HasPrefix(l, "#") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 2 {
		t.Fatalf("keygen printed %q, want a key and an entry", out)
	}
	if err := json.Unmarshal([]byte(lines[1]), &entry); err != nil {
		t.Fatalf("keygen entry %q: %v", lines[1], err)
	}
	if strings.Contains(lines[1], lines[0]) || entry.KeySHA256 != tokenservice.HashAPIKey(lines[0]) {
		t.Fatalf("keygen entry %q does not hold exactly the key's hash", lines[1])
	}
	return lines[0], entry
}

// process is a running `baton serve`.
type process struct {
	cmd    *exec.Cmd
	url    string
	mu     sync.Mutex
	stderr bytes.Buffer
	done   chan error
}

func (p *process) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.Write(b)
}

func (p *process) logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

// startServe starts `baton serve` with args and waits for the address it
// prints.
func startServe(t *testing.T, bin string, args ...string) *process {
	t.Helper()
	p := &process{cmd: exec.Command(bin, append([]string{"serve"}, args...)...), done: make(chan error, 1)}
	p.cmd.Stderr = p
	p.cmd.Env = append(os.Environ(), "BATON_SYSTEM=", // only the systems file
		"BATON_DASHBOARD_ADDR=127.0.0.1:0") // not 7452, which another service may hold
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
	})
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
		io.Copy(io.Discard, stdout)
	}()
	select {
	case line := <-lines:
		url, ok := strings.CutPrefix(line, "listening on ")
		if !ok || !strings.HasPrefix(url, "http://127.0.0.1:") {
			t.Fatalf("baton serve printed %q, want \"listening on http://127.0.0.1:PORT\"", line)
		}
		p.url = url
	case err := <-p.done:
		t.Fatalf("baton serve exited before listening: %v\n%s", err, p.logs())
	case <-time.After(30 * time.Second):
		t.Fatalf("baton serve did not print its address within 30s\n%s", p.logs())
	}
	return p
}

// stop sends SIGTERM and waits for a clean exit.
func (p *process) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		p.done <- err // for the cleanup
		if err != nil {
			t.Fatalf("baton serve exited with %v after SIGTERM\n%s", err, p.logs())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("baton serve did not stop within 20s of SIGTERM\n%s", p.logs())
	}
}

// The real `baton serve` process refuses, with a clear problem document
// and without changing anything, every request it must refuse.
func TestServeProcess(t *testing.T) {
	t.Parallel()
	bin := buildBaton(t)
	ordersKey, ordersEntry := keygen(t, bin, "--system", "orders", "--issue-roots")
	billingKey, billingEntry := keygen(t, bin, "--system", "billing")
	dir := t.TempDir()
	systemsFile := filepath.Join(dir, "systems.json")
	data, _ := json.Marshal(tokenservice.SystemsFile{Systems: []tokenservice.System{ordersEntry, billingEntry}})
	if err := os.WriteFile(systemsFile, data, 0o600); err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(dir, "data")
	p := startServe(t, bin, "--addr", "127.0.0.1:0", "--data-dir", dataDir, "--systems", systemsFile, "--log-level", "debug")
	t.Logf("baton serve: listening on %s", p.url)

	// orders issues a root addressed to itself.
	root := issueRoot(t, p.url, ordersKey, rootToken("orders"))
	want := tokenservice.EncodeToken(root)

	// unchanged checks that the store holds exactly the root, and nothing
	// addressed to billing.
	unchanged := func(after string) {
		t.Helper()
		var got tokenservice.Token
		call(t, "GET", p.url+"/v1/tokens/"+root.ID.String(), ordersKey, nil).decode(t, 200, &got)
		if got != want {
			t.Fatalf("after %s the root is %+v, want %+v", after, got, want)
		}
		var list tokenservice.TokenList
		call(t, "GET", p.url+"/v1/destinations/orders/tokens", ordersKey, nil).decode(t, 200, &list)
		if len(list.Tokens) != 1 {
			t.Fatalf("after %s orders has %d live tokens, want 1", after, len(list.Tokens))
		}
		call(t, "GET", p.url+"/v1/destinations/billing/tokens", billingKey, nil).decode(t, 200, &list)
		if len(list.Tokens) != 0 {
			t.Fatalf("after %s billing has %d live tokens, want 0", after, len(list.Tokens))
		}
	}
	child := childOf(root, "billing")
	consumeRoot := transitionBody(root.ID, child)
	report := func(what string, a answer, status int, typ string) {
		t.Helper()
		a.wantProblem(t, status, typ)
		t.Logf("%-40s -> %d %s", what, a.status, bytes.TrimSpace(a.body))
		unchanged(what)
	}

	report("no credentials", call(t, "POST", p.url+"/v1/transitions", "", consumeRoot), 401, tokenservice.ProblemUnauthorized)
	report("wrong key", call(t, "POST", p.url+"/v1/transitions", "bk_"+strings.Repeat("A", 43), consumeRoot), 401, tokenservice.ProblemUnauthorized)
	report("billing consumes orders' token", call(t, "POST", p.url+"/v1/transitions", billingKey, consumeRoot), 403, tokenservice.ProblemNotYourToken)
	malformed := fmt.Sprintf(`{"consume":%q,"create":[]}`, strings.ToUpper(root.ID.String()))
	report("malformed token id", call(t, "POST", p.url+"/v1/transitions", ordersKey, malformed), 400, tokenservice.ProblemInvalid)
	report("malformed token id in the path", call(t, "GET", p.url+"/v1/tokens/not-a-token", ordersKey, nil), 400, tokenservice.ProblemInvalid)

	// A well-formed forged id is the protocol's duplicate: consumed=false,
	// and its children are not created.
	forged := baton.NewTokenID()
	forgedChild := childOf(baton.Token{ID: forged, Conversation: forged}, "billing")
	var tr tokenservice.TransitionResponse
	a := call(t, "POST", p.url+"/v1/transitions", billingKey, transitionBody(forged, forgedChild))
	a.decode(t, 200, &tr)
	t.Logf("%-40s -> %d %s", "forged well-formed token id", a.status, bytes.TrimSpace(a.body))
	if tr.Consumed {
		t.Fatal("a forged token id was consumed")
	}
	call(t, "GET", p.url+"/v1/tokens/"+forgedChild.ID.String(), billingKey, nil).wantProblem(t, 404, tokenservice.ProblemNotFound)
	unchanged("forged well-formed token id")

	big := append([]byte(`{"consume":"`+root.ID.String()+`"}`), bytes.Repeat([]byte(" "), tokenservice.DefaultMaxBodyBytes)...)
	report("oversized body (over 2 MiB)", call(t, "POST", p.url+"/v1/transitions", ordersKey, big), 413, tokenservice.ProblemTooLarge)

	// The rightful destination consumes it, once.
	call(t, "POST", p.url+"/v1/transitions", ordersKey, consumeRoot).decode(t, 200, &tr)
	if !tr.Consumed {
		t.Fatal("orders could not consume its own token")
	}
	call(t, "POST", p.url+"/v1/transitions", ordersKey, consumeRoot).decode(t, 200, &tr)
	if tr.Consumed {
		t.Fatal("a duplicate transition consumed the token again")
	}
	logs := p.logs()
	for _, key := range []string{ordersKey, billingKey} {
		if strings.Contains(logs, key) {
			t.Fatal("an API key appears in the service's logs")
		}
	}
	p.stop(t)
	t.Logf("SIGTERM: exited cleanly; last log line: %s", lastLine(p.logs()))

	// The embedded store kept the child across the restart.
	p = startServe(t, bin, "--addr", "127.0.0.1:0", "--data-dir", dataDir, "--systems", systemsFile)
	var got tokenservice.Token
	call(t, "GET", p.url+"/v1/tokens/"+child.ID.String(), billingKey, nil).decode(t, 200, &got)
	if got != tokenservice.EncodeToken(child) {
		t.Errorf("after a restart the child is %+v, want %+v", got, tokenservice.EncodeToken(child))
	}
	p.stop(t)
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// Bad flags and an unreachable store are one-line errors, never traces.
func TestServeProcessErrors(t *testing.T) {
	t.Parallel()
	bin := buildBaton(t)
	_, entry := keygen(t, bin, "--system", "ops")
	bootstrap, _ := json.Marshal(entry)
	for _, c := range []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"unknown flag", nil, []string{"--bogus"}, "unknown flag: --bogus"},
		{"no systems", []string{"BATON_SYSTEM="}, []string{"--addr", "127.0.0.1:0"}, "no systems registered"},
		{"bad store", []string{"BATON_SYSTEM=" + string(bootstrap)}, []string{"--store", "mysql"}, `--store "mysql"`},
		{"unreachable postgres", []string{"BATON_SYSTEM=" + string(bootstrap)},
			[]string{"--store", "postgres", "--postgres-dsn", "postgres://nobody@127.0.0.1:1/none?connect_timeout=2"}, "open postgres token store"},
		{"bad env", []string{"BATON_SYSTEM=" + string(bootstrap), "BATON_MAX_BODY=lots"}, nil, "BATON_MAX_BODY"},
		{"missing systems file", nil, []string{"--systems", "/nonexistent/systems.json"}, "systems file"},
		{"tls key without cert", []string{"BATON_SYSTEM=" + string(bootstrap)}, []string{"--tls-key", "k.pem"}, "--tls-cert and --tls-key"},
	} {
		cmd := exec.Command(bin, append([]string{"serve"}, c.args...)...)
		cmd.Env = append(os.Environ(), c.env...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		msg := strings.TrimSpace(stderr.String())
		if err == nil || strings.Count(msg, "\n") != 0 || !strings.HasPrefix(msg, "baton: ") || !strings.Contains(msg, c.want) {
			t.Errorf("%s: exit %v, stderr %q; want a one-line error containing %q", c.name, err, msg, c.want)
		}
	}
}
