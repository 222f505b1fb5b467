package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/internal/testenv"
	"github.com/batonhq/baton/store"
)

// startMariaDB runs a server of the test's own (mariadbd from Debian's
// package) over a fresh data directory, with args added to its settings,
// and returns its DSN. Outside CI it skips loudly when mariadbd is missing.
func startMariaDB(t *testing.T, args ...string) string {
	t.Helper()
	server, errServer := exec.LookPath("mariadbd")
	if errServer != nil {
		server, errServer = exec.LookPath("/usr/sbin/mariadbd")
	}
	install, errInstall := exec.LookPath("mariadb-install-db")
	if errServer != nil || errInstall != nil {
		if testenv.CI() {
			t.Fatalf("mariadbd and mariadb-install-db are needed under CI=true to test the durability checks: %v %v", errServer, errInstall)
		}
		t.Skip("SKIPPED: mariadbd or mariadb-install-db is not installed; install Debian's mariadb-server to test the durability checks")
	}
	dir := t.TempDir()
	// A temporary directory of its own: servers bootstrapped side by side
	// in a shared /tmp were seen to collide on their temporary tables'
	// names ("Could not remove temporary table '/tmp/#sql-temptable-...'").
	tmp := filepath.Join(dir, "tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(install, "--no-defaults", "--datadir="+filepath.Join(dir, "data"), "--auth-root-authentication-method=normal",
		"--skip-test-db", "--user=root", "--tmpdir="+tmp).CombinedOutput(); err != nil {
		t.Fatalf("mariadb-install-db: %v\n%s", err, out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := exec.Command(server, append([]string{"--no-defaults", "--datadir=" + filepath.Join(dir, "data"),
		"--socket=" + filepath.Join(dir, "sock"), fmt.Sprintf("--port=%d", port), "--bind-address=127.0.0.1", "--user=root",
		"--innodb-buffer-pool-size=32M", "--tmpdir=" + tmp}, args...)...)
	logFile, err := os.Create(filepath.Join(dir, "server.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	dsn := fmt.Sprintf("root@tcp(127.0.0.1:%d)/mysql", port)
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	deadline := time.Now().Add(30 * time.Second)
	for db.Ping() != nil {
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "server.log"))
			t.Fatalf("mariadbd did not answer within 30s:\n%s", log)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := db.Exec("CREATE DATABASE baton"); err != nil {
		t.Fatal(err)
	}
	return strings.Replace(dsn, "/mysql", "/baton", 1)
}

func TestDurabilityProblem(t *testing.T) {
	t.Parallel()
	safe := map[string]string{"innodb_flush_log_at_trx_commit": "1", "sync_binlog": "0", "log_bin": "OFF", "innodb_flush_method": "O_DIRECT"}
	with := func(changes ...string) map[string]string {
		m := maps.Clone(safe)
		for i := 0; i < len(changes); i += 2 {
			m[changes[i]] = changes[i+1]
		}
		return m
	}
	for _, c := range []struct {
		settings map[string]string
		want     string
	}{
		{safe, ""},
		{with("log_bin", "ON", "sync_binlog", "1"), ""},
		{with("innodb_flush_method", "fsync"), ""},
		{with("innodb_flush_method", "O_DIRECT_NO_FSYNC"), ""},
		{with("Innodb_redo_log_enabled", "ON"), ""},
		{with("innodb_flush_log_at_trx_commit", "2"), "innodb_flush_log_at_trx_commit is 2"},
		{with("innodb_flush_log_at_trx_commit", "0", "log_bin", "ON", "sync_binlog", "1"), "innodb_flush_log_at_trx_commit is 0"},
		{with("log_bin", "ON"), "sync_binlog is 0"},
		{with("log_bin", "1", "sync_binlog", "100"), "sync_binlog is 100"},
		{with("innodb_flush_method", "nosync"), "innodb_flush_method is nosync"},
		{with("innodb_flush_method", "littlesync"), "innodb_flush_method is littlesync"},
		{with("Innodb_redo_log_enabled", "OFF"), "redo log is disabled"},
	} {
		got := durabilityProblem(c.settings)
		if (c.want == "") != (got == "") || !strings.Contains(got, c.want) {
			t.Errorf("durabilityProblem(%v) = %q, want %q", c.settings, got, c.want)
		}
	}
}

// TestRefusesServersThatMayLoseCommits: a server that flushes its redo log
// less than at every commit, or syncs its binary log less often, is
// refused unless the caller accepts it.
func TestRefusesServersThatMayLoseCommits(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"flush log every second", []string{"--innodb-flush-log-at-trx-commit=2"}, "innodb_flush_log_at_trx_commit is 2"},
		{"binary log not synced", []string{"--log-bin=binlog", "--sync-binlog=0"}, "sync_binlog is 0"},
		{"files never synced", []string{"--innodb-flush-method=nosync"}, "innodb_flush_method is nosync"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dsn := startMariaDB(t, c.args...)
			_, err := Open(t.Context(), dsn, Config{})
			if !errors.Is(err, ErrUnsafeDurability) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Open = %v, want ErrUnsafeDurability saying %q", err, c.want)
			}
			s, err := Open(t.Context(), dsn, Config{AllowUnsafeDurability: true})
			if err != nil {
				t.Fatalf("Open with AllowUnsafeDurability = %v", err)
			}
			s.Close()
		})
	}
}

// TestChecksEveryNewConnection: a server that stops syncing while the
// store runs is noticed on the next connection the store opens.
func TestChecksEveryNewConnection(t *testing.T) {
	t.Parallel()
	dsn := startMariaDB(t, "--log-bin=binlog", "--sync-binlog=1")
	s, err := Open(t.Context(), dsn, Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.DB().Exec("SET GLOBAL sync_binlog = 0"); err != nil {
		t.Fatal(err)
	}
	s.DB().SetMaxIdleConns(0) // no idle connection to reuse: the next call opens one
	_, err = s.Load(context.Background(), "k")
	if !errors.Is(err, ErrUnsafeDurability) {
		t.Fatalf("Load on a new connection after SET GLOBAL sync_binlog = 0: %v, want ErrUnsafeDurability", err)
	}
	_, err = s.Issue(context.Background(), baton.Token{Destination: "billing", Type: "charge", Digest: baton.DigestOf(nil), CreatedAt: time.Now()})
	if !errors.Is(err, ErrUnsafeDurability) || !errors.Is(err, store.ErrNotApplied) {
		t.Fatalf("Issue on a new connection after SET GLOBAL sync_binlog = 0: %v, want ErrUnsafeDurability and ErrNotApplied", err)
	}
}
