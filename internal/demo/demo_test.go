package demo_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton/internal/demo"
)

// TestMain lets the test binary serve as a system process of the demo: the
// demo starts it again with the system's configuration in the environment.
func TestMain(m *testing.M) {
	if raw := os.Getenv(demo.SystemEnv); raw != "" {
		var cfg demo.SystemConfig
		if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
		defer stop()
		if err := demo.RunSystem(ctx, cfg); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func systemCommand() *exec.Cmd { return exec.Command(os.Args[0], "-test.run=^$") }

// TestDemoUnderChaos runs the whole demo with separate processes killed by
// SIGKILL, duplicates, lost responses and double clicks, and requires the
// verification to pass with every fault kind injected.
func TestDemoUnderChaos(t *testing.T) {
	t.Parallel()
	var out strings.Builder
	report, err := demo.Run(t.Context(), demo.Options{
		Orders:          40,
		Rate:            40,
		Chaos:           demo.Chaos{DuplicateRate: 0.2, LostResponseRate: 0.2},
		DoubleClickRate: 0.3,
		KillEvery:       300 * time.Millisecond,
		Timeout:         90 * time.Second,
		Addr:            "127.0.0.1:0",
		Seed:            1,
		Command:         systemCommand,
		Progress:        &out,
	})
	if err != nil {
		t.Fatal(err)
	}
	report.Write(&out)
	t.Log(out.String())
	if !report.OK {
		t.Fatalf("verification failed: %v", report.Violations)
	}
	if report.Crashes == 0 || report.DoubleClicks == 0 || report.DuplicatesInjected == 0 || report.LostResponses == 0 {
		t.Errorf("a fault kind was never injected: %+v", report)
	}
	if report.Shipped != 40 || report.DoubleCharges != 0 || report.LostOrders != 0 {
		t.Errorf("report = %+v", report)
	}
}

// TestVerificationCatchesADoubleCharge proves the report can fail: a
// system that charges every order twice is caught.
func TestVerificationCatchesADoubleCharge(t *testing.T) {
	t.Parallel()
	report, err := demo.Run(t.Context(), demo.Options{
		Orders: 5,
		Addr:   "127.0.0.1:0",
		Command: func() *exec.Cmd {
			c := systemCommand()
			c.Env = append(os.Environ(), demo.BrokenEnv+"=double-charge")
			return c
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if report.OK || report.DoubleCharges == 0 {
		t.Fatalf("a double charge went unnoticed: %+v", report)
	}
}
