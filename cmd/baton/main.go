// Command baton runs baton's demo, token service, simulation and
// benchmarks. Run `baton --help` for the commands.
package main

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRootCommand()
	if err := root.ExecuteContext(ctx); err != nil {
		msg := err.Error()
		if !strings.HasPrefix(msg, "baton: ") {
			msg = "baton: " + msg
		}
		fmt.Fprintln(os.Stderr, msg)
		os.Exit(exitCode(err))
	}
}

// exitError carries a specific exit status, for example when a
// verification failed rather than the command itself.
type exitError struct {
	code int
	msg  string
}

func (e exitError) Error() string { return e.msg }

func exitCode(err error) int {
	if e, ok := err.(exitError); ok {
		return e.code
	}
	return 1
}

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "baton",
		Short: "Exactly-once business processes across systems, with one-time tokens",
		Long: `baton makes a process that spans many systems apply every step exactly once.
Before a signal is emitted, a token for it is created in a shared token store;
processing the signal consumes the token; a signal without a token is a
duplicate and is dropped.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newSimCommand(), newDemoCommand())
	root.AddCommand(newServeCommand(), newTokensCommand(), newConversationsCommand())
	root.AddCommand(newBenchCommand())
	root.AddCommand(newParticipantCommand(), newConformanceCommand())
	root.AddCommand(newParkedCommand())
	return root
}

// positiveFlags refuses a value of zero or less of any of the named number
// or duration flags, naming the flag: a library would take zero for its
// default and a negative value for something else, silently.
func positiveFlags(f *pflag.FlagSet, names ...string) error {
	for _, name := range names {
		if fl := f.Lookup(name); flagSign(fl) <= 0 {
			return fmt.Errorf("--%s must be positive, got %s", name, fl.Value)
		}
	}
	return nil
}

// nonNegativeFlags refuses a negative value of any of the named number or
// duration flags, naming the flag.
func nonNegativeFlags(f *pflag.FlagSet, names ...string) error {
	for _, name := range names {
		if fl := f.Lookup(name); flagSign(fl) < 0 {
			return fmt.Errorf("--%s must not be negative, got %s", name, fl.Value)
		}
	}
	return nil
}

// flagSign is the sign of a number or duration flag's value.
func flagSign(fl *pflag.Flag) int {
	text := fl.Value.String()
	if d, err := time.ParseDuration(text); err == nil {
		return cmp.Compare(d, 0)
	}
	n, _ := strconv.ParseFloat(text, 64)
	return cmp.Compare(n, 0)
}

// oneArg is the Args of a command that takes one argument, what: without
// it, or with more, the command says what it expects, with its usage line.
func oneArg(what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != 1 {
			return fmt.Errorf("%s takes one argument, %s, got %d; usage: %s", subcommand(cmd), what, len(args), cmd.UseLine())
		}
		return nil
	}
}

// someArgs is the Args of a command that takes one or more arguments,
// what: without any, the command says what it expects, with its usage line.
func someArgs(what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			return fmt.Errorf("%s needs %s; usage: %s", subcommand(cmd), what, cmd.UseLine())
		}
		return nil
	}
}

// subcommand is cmd's path without the root's name, which errors get as
// their prefix: "parked show".
func subcommand(cmd *cobra.Command) string {
	return strings.TrimPrefix(cmd.CommandPath(), cmd.Root().Name()+" ")
}
