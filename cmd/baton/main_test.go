package main

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/internal/testenv/etcdcluster"
)

// asBatonEnv makes this test binary run as baton with the arguments it is
// given, with the variable's value as shutdownGrace: a test that needs a
// process of its own (signals, exit status) starts it so.
const asBatonEnv = "BATON_TEST_AS_BATON_SHUTDOWN_GRACE"

func TestMain(m *testing.M) {
	etcdcluster.MemberMain() // the etcd members of TestServeOnEtcd run in processes of this binary
	if grace := os.Getenv(asBatonEnv); grace != "" {
		var err error
		if shutdownGrace, err = time.ParseDuration(grace); err != nil {
			fmt.Fprintf(os.Stderr, "%s=%q: %v\n", asBatonEnv, grace, err)
			os.Exit(2)
		}
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// refusal is a command line that must fail with an error that says want.
type refusal struct {
	args []string
	want string
}

// refusals runs each command line and checks that it fails with a one-line
// error that says what it should.
func refusals(t *testing.T, cases []refusal) {
	t.Helper()
	for _, c := range cases {
		_, err := runBaton(t, c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("baton %s: %v; want a one-line error that says %q", strings.Join(c.args, " "), err, c.want)
		}
	}
}

// bench refuses a zero or negative value given on the command line, naming
// the flag, instead of running the default (found in review). The unknown
// variant makes a run without the check fail at once, without running.
func TestBenchRefusesValuesBelowOne(t *testing.T) {
	t.Parallel()
	refusals(t, []refusal{
		{[]string{"bench", "--variants", "nosuch", "--duration", "0"}, "--duration must be positive, got 0s"},
		{[]string{"bench", "--variants", "nosuch", "--duration", "-5s"}, "--duration must be positive"},
		{[]string{"bench", "--variants", "nosuch", "--rounds", "0"}, "--rounds must be positive, got 0"},
		{[]string{"bench", "--variants", "nosuch", "--workers", "0"}, "--workers must be positive"},
		{[]string{"bench", "--variants", "nosuch", "--workers", "-1"}, "--workers must be positive"},
		{[]string{"bench", "--variants", "nosuch", "--warmup", "0s"}, "--warmup must be positive"},
		{[]string{"bench", "--variants", "nosuch", "--in-flight", "0"}, "--in-flight must be positive"},
		{[]string{"bench", "--variants", "nosuch", "--signals", "-1"}, "--signals must not be negative"},
		{[]string{"bench", "--variants", "nosuch", "--scaling-workers", "1,0"}, "--scaling-workers must be positive"},
		{[]string{"bench", "--variants", "nosuch", "--quick", "--scaling-duration", "0s"}, "--scaling-duration must be positive"},
	})
}

// sim and demo refuse values that they would otherwise run with a default
// or as unlimited, naming the flag (found in review). The rate out of range
// makes a demo without the check fail at once, before it starts anything.
func TestSimAndDemoRefuseValuesBelowOne(t *testing.T) {
	t.Parallel()
	refusals(t, []refusal{
		{[]string{"sim", "--seeds", "1", "--steps", "1", "--conversations", "0"}, "--conversations must be positive, got 0"},
		{[]string{"sim", "--seeds", "1", "--conversations", "1", "--steps", "-5"}, "--steps must be positive, got -5"},
		{[]string{"demo", "--exit", "--duplicate-rate", "2", "--rate", "-1"}, "--rate must not be negative, got -1"},
		{[]string{"demo", "--exit", "--duplicate-rate", "2", "--people", "0"}, "--people must be positive, got 0"},
		{[]string{"demo", "--exit", "--duplicate-rate", "2", "--people", "-2"}, "--people must be positive"},
		{[]string{"demo", "--exit", "--duplicate-rate", "2", "--kill-every", "-1s"}, "--kill-every must not be negative"},
		{[]string{"demo", "--exit", "--duplicate-rate", "2", "--timeout", "0s"}, "--timeout must be positive"},
	})
}

// demo --help describes the random default of --seed instead of showing a
// new number on every call (found in review).
func TestDemoHelpIsStable(t *testing.T) {
	t.Parallel()
	first, err := runBaton(t, "demo", "--help")
	must(t, err)
	time.Sleep(time.Millisecond)
	second, err := runBaton(t, "demo", "--help")
	must(t, err)
	if first != second {
		t.Errorf("baton demo --help differs between two calls:\n%s\n---\n%s", first, second)
	}
	if !strings.Contains(first, "(default: random, printed at the start)") {
		t.Errorf("baton demo --help does not describe --seed's default:\n%s", first)
	}
}

// A command without the argument it needs says which, with its usage line,
// instead of cobra's "accepts 1 arg(s), received 0" (found in review).
func TestCommandsSayWhichArgumentTheyNeed(t *testing.T) {
	t.Parallel()
	refusals(t, []refusal{
		{[]string{"parked", "show"}, "parked show takes one argument, the ID of a parked signal"},
		{[]string{"parked", "show", "a", "b"}, "got 2; usage: baton parked show ID"},
		{[]string{"parked", "replay"}, "parked replay needs the IDs of the parked signals"},
		{[]string{"parked", "discard", "--why", "x"}, "usage: baton parked discard ID... --why TEXT"},
		{[]string{"tokens", "get"}, "tokens get takes one argument, the id of a live token"},
		{[]string{"conversations", "show"}, "conversations show takes one argument, the id of a conversation"},
	})
}

// The inspecting commands refuse a limit, age or count that they would
// otherwise take for their default or for no limit (found in review).
func TestInspectingCommandsRefuseNegativeValues(t *testing.T) {
	t.Parallel()
	refusals(t, []refusal{
		{[]string{"parked", "list", "--limit", "0"}, "--limit must be positive, got 0"},
		{[]string{"parked", "list", "--older-than", "-1h"}, "--older-than must not be negative"},
		{[]string{"tokens", "list", "--destination", "billing", "--limit", "-1"}, "--limit must not be negative"},
		{[]string{"tokens", "stuck", "--destination", "billing", "--graphs", "-1"}, "--graphs must not be negative"},
		{[]string{"tokens", "stuck", "--destination", "billing", "--older-than", "-1m"}, "--older-than must not be negative"},
		{[]string{"conversations", "list", "--limit", "0"}, "--limit must be positive"},
	})
}

// participant refuses bad flag values at start, naming the flag: a bad
// --addr or --token-service was refused in the words of a library
// (listen tcp, base URL) and a --destination that no token service accepts
// was taken. (--data /proc/nope makes a run without the checks fail at
// once, without serving.)
func TestParticipantRefusesBadFlagsNamingThem(t *testing.T) {
	t.Parallel()
	base := []string{"participant", "--key", "bk_x", "--data", "/proc/nope"}
	refusals(t, []refusal{
		{append(base, "--addr", "127.0.0.1:99999"), "--addr"},
		{append(base, "--addr", "nohost"), "--addr"},
		{append(base, "--token-service", "notaurl"), "--token-service"},
		{append(base, "--token-service", "ftp://tokens"), "--token-service"},
		{append(base, "--destination", "bad name!"), "--destination"},
		{append(base, "--forward", "ship ping=http://127.0.0.1:1/signals"), "--forward"},
		{append(base, "--forward", "shipping=notaurl"), "--forward"},
	})
}
