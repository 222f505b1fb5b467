package demo_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton/internal/demo"
	"github.com/batonhq/baton/internal/syncio"
	"github.com/batonhq/baton/store"
	"github.com/batonhq/baton/tokenservice/client"
)

// parentEnv makes the test binary run a whole demo, as `baton demo` would,
// so that a test can kill it: its value is the data directory.
const parentEnv = "BATON_DEMO_TEST_PARENT"

func init() {
	dir := os.Getenv(parentEnv)
	if dir == "" || os.Getenv(demo.SystemEnv) != "" {
		return
	}
	// A slow run that keeps its systems busy until it is killed.
	_, err := demo.Run(context.Background(), demo.Options{
		Orders: 100000, Rate: 2, Addr: "127.0.0.1:0", DataDir: dir, Timeout: time.Hour,
		Command: systemCommand,
		Ready:   func(_, shop string) { fmt.Printf("SHOP %s\n", shop) },
	})
	fmt.Fprintln(os.Stderr, "demo ended:", err)
	os.Exit(0)
}

// TestInterruptedRunSaysSo: a run stopped half way (Ctrl-C, SIGTERM) says it
// was interrupted and what it left, checks what happened for steps applied
// twice, and reports no violation for the orders it did not finish.
func TestInterruptedRunSaysSo(t *testing.T) {
	t.Parallel()
	ctx, interrupt := context.WithCancel(t.Context())
	var out strings.Builder
	report, err := demo.Run(ctx, demo.Options{
		Orders: 400, Rate: 20, Addr: "127.0.0.1:0", Command: systemCommand, Progress: &out,
		Chaos: demo.Chaos{DuplicateRate: 0.2}, DoubleClickRate: 0.3,
		Ready: func(string, string) { time.AfterFunc(2*time.Second, interrupt) },
	})
	if err != nil {
		t.Fatal(err)
	}
	report.Write(&out)
	t.Log(out.String())
	if !report.Interrupted || !report.OK || len(report.Violations) != 0 {
		t.Fatalf("interrupted run: interrupted %v, ok %v, violations %v", report.Interrupted, report.OK, report.Violations)
	}
	if report.Placed == 0 || report.Placed >= 400 || report.LostOrders != 0 {
		t.Errorf("placed %d of 400, lost %d: want some placed, not all, none lost", report.Placed, report.LostOrders)
	}
	if strings.Contains(out.String(), "placing orders: 400/400") || !strings.Contains(out.String(), "INTERRUPTED") {
		t.Errorf("the output does not say the run was interrupted, or claims every order was placed:\n%s", out.String())
	}
}

// TestReusedDataDirectory: a second run over the --data directory of a
// first passes, and counts the first run's orders apart.
func TestReusedDataDirectory(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for run := 1; run <= 2; run++ {
		report, err := demo.Run(t.Context(), demo.Options{Orders: 5, Addr: "127.0.0.1:0", DataDir: dir, Command: systemCommand})
		if err != nil {
			t.Fatal(err)
		}
		if !report.OK || report.Shipped != 5 {
			t.Fatalf("run %d over a reused --data: ok %v, shipped %d, violations %v", run, report.OK, report.Shipped, report.Violations)
		}
		if want := (run - 1) * 5; report.EarlierOrders != want {
			t.Errorf("run %d: %d orders of earlier runs, want %d", run, report.EarlierOrders, want)
		}
	}
}

// TestSystemsStopWhenTheDemoDies: a demo killed with SIGKILL leaves no
// system running, and the next run over its data directory starts.
func TestSystemsStopWhenTheDemoDies(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	parent := exec.Command(os.Args[0], "-test.run=^$")
	parent.Env = append(os.Environ(), parentEnv+"="+dir)
	parent.Stderr = os.Stderr
	stdout, err := parent.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := parent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = parent.Process.Kill(); _ = parent.Wait() })
	shop := ""
	lines := bufio.NewScanner(stdout)
	for shop == "" && lines.Scan() {
		shop, _ = strings.CutPrefix(lines.Text(), "SHOP ")
	}
	if shop == "" {
		t.Fatal("the demo never said where its shop is")
	}
	pid := systemPID(t, shop)

	if err := parent.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = parent.Wait()
	deadline := time.Now().Add(15 * time.Second)
	for running(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("the shop (pid %d) still runs 15s after its demo was killed", pid)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// The next run over the same data opens the stores the systems held.
	report, err := demo.Run(t.Context(), demo.Options{Orders: 2, Addr: "127.0.0.1:0", DataDir: dir, Command: systemCommand})
	if err != nil {
		t.Fatalf("the next run over the killed demo's data: %v", err)
	}
	if !report.OK {
		t.Fatalf("the next run over the killed demo's data: %v", report.Violations)
	}
}

// systemPID asks a system for its process id.
func systemPID(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st demo.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil || st.PID == 0 {
		t.Fatalf("status of %s: %+v, %v", url, st, err)
	}
	return st.PID
}

// running reports whether pid is a live process (a zombie is not).
func running(pid int) bool {
	raw, err := os.ReadFile(filepath.Join("/proc", fmt.Sprint(pid), "stat"))
	if err != nil {
		return syscall.Kill(pid, 0) == nil
	}
	// The state follows the command name in parentheses.
	fields := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+1:]))
	return len(fields) > 0 && fields[0] != "Z"
}

// TestInspectKeyReadsTheDemo: the read-only key the demo prints lets a
// person list tokens with `baton tokens` (here: its client), and the
// dashboard API answers at the same address for `baton conversations`.
func TestInspectKeyReadsTheDemo(t *testing.T) {
	t.Parallel()
	var out syncio.Buffer
	var checked error
	_, err := demo.Run(t.Context(), demo.Options{Orders: 3, Addr: "127.0.0.1:0", Command: systemCommand, Progress: &out,
		Ready: func(dashboard, _ string) { checked = readWithPrintedKey(t.Context(), dashboard, out.String()) }})
	if err != nil {
		t.Fatal(err)
	}
	if checked != nil {
		t.Fatal(checked)
	}
}

func readWithPrintedKey(ctx context.Context, dashboard, printed string) error {
	_, rest, ok := strings.Cut(printed, "BATON_API_KEY=")
	if !ok {
		return fmt.Errorf("the demo printed no key:\n%s", printed)
	}
	key, _, _ := strings.Cut(rest, " ")
	if !strings.Contains(printed, "BATON_SERVER="+dashboard+" ") {
		return fmt.Errorf("the demo printed no BATON_SERVER=%s:\n%s", dashboard, printed)
	}
	c, err := client.New(dashboard, key, client.Options{})
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.ListByDestination(ctx, demo.Shop, store.Page{}); err != nil {
		return fmt.Errorf("list tokens with the printed key: %w", err)
	}
	resp, err := http.Get(dashboard + "/api/conversations?limit=5")
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("dashboard API at the printed address: %s", resp.Status)
	}
	return nil
}

// TestShopKeepsItsAddress: after the run, when the demo keeps serving for a
// person, the shop answers at the address printed at the start.
func TestShopKeepsItsAddress(t *testing.T) {
	t.Parallel()
	ctx, stop := context.WithCancel(t.Context())
	defer stop()
	var out syncio.Buffer
	var shopURL string
	checked := make(chan error, 1)
	_, err := demo.Run(ctx, demo.Options{Orders: 3, Addr: "127.0.0.1:0", Command: systemCommand, Progress: &out, Linger: true,
		Ready: func(_, shop string) { shopURL = shop },
		OnReport: func(demo.Report) {
			go func() {
				defer stop()
				deadline := time.Now().Add(30 * time.Second)
				for !strings.Contains(out.String(), "still serving") {
					if time.Now().After(deadline) {
						checked <- fmt.Errorf("the demo did not go on serving:\n%s", out.String())
						return
					}
					time.Sleep(20 * time.Millisecond)
				}
				if !strings.Contains(out.String(), "shop "+shopURL) {
					checked <- fmt.Errorf("the shop moved from %s:\n%s", shopURL, out.String())
					return
				}
				resp, err := http.Get(shopURL + "/")
				if err == nil {
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("the shop's page at %s: %s", shopURL, resp.Status)
					}
				}
				checked <- err
			}()
		}})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-checked; err != nil {
		t.Fatal(err)
	}
}

// TestDashboardReportIsTheVerifiedOne: while the run goes on the
// dashboard's report says so and claims nothing; afterwards it is the
// verified report, number for number.
func TestDashboardReportIsTheVerifiedOne(t *testing.T) {
	t.Parallel()
	ctx, stop := context.WithCancel(t.Context())
	defer stop()
	type shown struct {
		Report demo.Report `json:"report"`
	}
	read := func(dashboard string) (demo.Report, error) {
		resp, err := http.Get(dashboard + "/api/report")
		if err != nil {
			return demo.Report{}, err
		}
		defer resp.Body.Close()
		var s shown
		err = json.NewDecoder(resp.Body).Decode(&s)
		return s.Report, err
	}
	var dashboardURL string
	during := make(chan error, 1)
	after := make(chan error, 1)
	_, err := demo.Run(ctx, demo.Options{Orders: 5, Addr: "127.0.0.1:0", Command: systemCommand, Linger: true,
		Ready: func(dashboard, _ string) {
			dashboardURL = dashboard
			r, err := read(dashboard)
			if err == nil && (!r.Running || r.OK) {
				err = fmt.Errorf("during the run the dashboard's report says running %v, ok %v", r.Running, r.OK)
			}
			during <- err
		},
		OnReport: func(final demo.Report) {
			go func() {
				defer stop()
				r, err := read(dashboardURL)
				if err == nil && (r.Running || r.OK != final.OK || r.Shipped != final.Shipped || r.Activities != final.Activities || r.Placed != final.Placed) {
					err = fmt.Errorf("after the run the dashboard shows %+v, the verified report is %+v", r, final)
				}
				after <- err
			}()
		}})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-during; err != nil {
		t.Errorf("during the run: %v", err)
	}
	if err := <-after; err != nil {
		t.Errorf("after the run: %v", err)
	}
}
