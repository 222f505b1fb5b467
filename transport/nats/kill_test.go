package nats

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/batonhq/baton"
)

// The helper process for TestEmbeddedSurvivesKill: it runs an embedded
// server on the directory named by killHelperEnv, publishes signals in a
// loop and prints each token id once Publish returned, until it is killed.
const killHelperEnv = "BATON_NATS_KILL_HELPER_DIR"

func TestMain(m *testing.M) {
	if dir := os.Getenv(killHelperEnv); dir != "" {
		os.Exit(runKillHelper(dir, os.Getenv("BATON_NATS_KILL_HELPER_STREAM")))
	}
	os.Exit(m.Run())
}

func runKillHelper(dir, stream string) int {
	e, err := StartEmbedded(EmbeddedConfig{DataDir: dir})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	tr, err := e.NewTransport(context.Background(), Config{Stream: stream, Prefix: stream})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	for {
		sig := newSignal("killed")
		if err := tr.Publish(context.Background(), sig); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		fmt.Println(sig.ID)
	}
}

// TestEmbeddedSurvivesKill kills (SIGKILL) a process in the middle of
// publishing and checks that every signal whose Publish returned is
// delivered by a new server on the same directory. A process kill keeps
// the kernel's page cache, so this shows that an acknowledged signal has
// left the process, not that it was fsynced; that the embedded server
// fsyncs every write is checked by TestEmbeddedDefaultsAndListen.
func TestEmbeddedSurvivesKill(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	stream := uniqueName("KILL")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), killHelperEnv+"="+dir, "BATON_NATS_KILL_HELPER_STREAM="+stream)
	cmd.Stderr = testWriter{t}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	acked := map[baton.TokenID]bool{}
	lines := bufio.NewScanner(out)
	for len(acked) < 50 && lines.Scan() {
		id, err := baton.ParseTokenID(lines.Text())
		if err != nil {
			t.Fatalf("helper printed %q", lines.Text())
		}
		acked[id] = true
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	for lines.Scan() { // ids printed before the kill landed were acknowledged too
		if id, err := baton.ParseTokenID(lines.Text()); err == nil {
			acked[id] = true
		}
	}
	cmd.Wait()
	if len(acked) < 50 {
		t.Fatalf("helper acknowledged only %d publishes before it stopped", len(acked))
	}

	e := startEmbedded(t, EmbeddedConfig{DataDir: dir})
	tr := newEmbeddedTransport(t, e, Config{Stream: stream, Prefix: stream, AckWait: testAckWait})
	sub := mustSubscribe(t, tr, "killed")
	for len(acked) > 0 {
		d, err := nextWithin(t, sub, 5*time.Second)
		if err != nil {
			t.Fatalf("after the kill, %d acknowledged signals were not delivered: %v", len(acked), err)
		}
		delete(acked, d.Signal().ID) // unacknowledged ones that made it are fine too
		if err := d.Ack(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
}
