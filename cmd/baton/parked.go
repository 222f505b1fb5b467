package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/batonhq/baton/parked"
	"github.com/batonhq/baton/tokenservice/client"
	"github.com/batonhq/baton/transport"
	natstransport "github.com/batonhq/baton/transport/nats"
	"github.com/batonhq/baton/transport/rabbitmq"
)

// brokerFlags locate the broker whose parked signals the command reads.
type brokerFlags struct {
	nats, stream, prefix, monitor string
	allowUnsafe                   bool
	rabbitmq, rabbitmqPrefix      string
	log                           *slog.Logger // the broker's warnings; nil discards them
}

// register adds the broker flags to f; withUnsafe adds
// --allow-unsafe-durability, which a command may have for its store already.
func (b *brokerFlags) register(f *pflag.FlagSet, withUnsafe bool) {
	f.StringVar(&b.nats, "nats", envOr("BATON_NATS", ""), "NATS server URL [BATON_NATS]")
	f.StringVar(&b.stream, "stream", natstransport.DefaultStream, "JetStream stream of the signals")
	f.StringVar(&b.prefix, "prefix", natstransport.DefaultPrefix, "subject prefix of the signals")
	f.StringVar(&b.monitor, "nats-monitor", "", "the server's monitoring URL, to check that it syncs every write")
	if withUnsafe {
		f.BoolVar(&b.allowUnsafe, "allow-unsafe-durability", false, "use a NATS server that cannot be shown to sync every write")
	}
	f.StringVar(&b.rabbitmq, "rabbitmq", envOr("BATON_RABBITMQ", ""), "RabbitMQ URL, instead of NATS [BATON_RABBITMQ]")
	f.StringVar(&b.rabbitmqPrefix, "rabbitmq-prefix", rabbitmq.DefaultPrefix, "queue name prefix of the signals on RabbitMQ")
}

// configured reports whether a broker was named.
func (b *brokerFlags) configured() bool { return b.nats != "" || b.rabbitmq != "" }

// open connects to the broker's park place.
func (b *brokerFlags) open(ctx context.Context) (transport.ParkedStore, func(), error) {
	switch {
	case b.nats != "" && b.rabbitmq != "":
		return nil, nil, errors.New("give one broker: --nats or --rabbitmq")
	case b.rabbitmq != "":
		tr, err := rabbitmq.New(ctx, rabbitmq.Config{URL: b.rabbitmq, Prefix: b.rabbitmqPrefix, Logger: b.log})
		if err != nil {
			return nil, nil, withFlagNames(err)
		}
		return tr, func() { tr.Close() }, nil
	case b.nats == "":
		return nil, nil, errors.New("no broker: pass --nats URL or --rabbitmq URL (or set BATON_NATS or BATON_RABBITMQ)")
	}
	tr, err := natstransport.New(ctx, natstransport.Config{URL: b.nats, Stream: b.stream, Prefix: b.prefix,
		MonitorURL: b.monitor, AllowUnsafeDurability: b.allowUnsafe, Logger: b.log})
	if err != nil {
		return nil, nil, withFlagNames(err)
	}
	return tr, func() { tr.Close() }, nil
}

func newParkedCommand() *cobra.Command {
	var broker brokerFlags
	cmd := &cobra.Command{
		Use:   "parked",
		Short: "List, show, replay and discard parked signals",
		Long: `parked acts on the signals that consumers parked: those that can never be
processed as they are (a poison payload, a handler bug, a refused token).
A parked signal's token stays live, so a replay once the handler is fixed
applies it once; a replay of a signal whose token is gone is dropped as the
duplicate it is. discard retires the token through the token service, so the
conversation visibly ends there, and records who discarded what and why.`,
	}
	broker.register(cmd.PersistentFlags(), true)
	cmd.AddCommand(newParkedListCommand(&broker), newParkedShowCommand(&broker), newParkedReplayCommand(&broker),
		newParkedDiscardCommand(&broker))
	return cmd
}

func newParkedListCommand(broker *brokerFlags) *cobra.Command {
	var f parked.Filter
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List parked signals, oldest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// parked.Filter takes zero or less for its default limit.
			if err := positiveFlags(cmd.Flags(), "limit"); err != nil {
				return err
			}
			if err := nonNegativeFlags(cmd.Flags(), "older-than"); err != nil {
				return err
			}
			ps, closeBroker, err := broker.open(cmd.Context())
			if err != nil {
				return err
			}
			defer closeBroker()
			list, err := parked.List(cmd.Context(), ps, f, time.Now())
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if len(list) == 0 {
				fmt.Fprintln(out, "no parked signals")
				return nil
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tAGE\tDESTINATION\tTYPE\tATTEMPTS\tTOKEN\tREASON")
			for _, p := range list {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", p.ID, time.Since(p.ParkedAt).Round(time.Second), p.Signal.Destination,
					p.Signal.Type, p.Attempts, p.Signal.ID, clipText(p.Reason, 80))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&f.Destination, "destination", "", "only this destination's (required on RabbitMQ, which keeps them per destination)")
	cmd.Flags().StringVar(&f.Type, "type", "", "only signals of this type")
	cmd.Flags().StringVar(&f.Reason, "reason", "", "only those whose reason contains this text")
	cmd.Flags().DurationVar(&f.OlderThan, "older-than", 0, "only those parked at least this long ago")
	cmd.Flags().IntVar(&f.Limit, "limit", 100, "list at most this many")
	return cmd
}

func newParkedShowCommand(broker *brokerFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "show ID",
		Short: "Show one parked signal, payload included",
		Args:  oneArg("the ID of a parked signal (baton parked list shows them)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ps, closeBroker, err := broker.open(cmd.Context())
			if err != nil {
				return err
			}
			defer closeBroker()
			p, err := ps.GetParked(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "id            %s\nparked        %s (%s ago)\nreason        %s\nattempts      %d\n", p.ID,
				p.ParkedAt.UTC().Format(time.RFC3339), time.Since(p.ParkedAt).Round(time.Second), p.Reason, p.Attempts)
			s := p.Signal
			fmt.Fprintf(out, "token         %s\nconversation  %s\ncausation     %s\ndestination   %s\ntype          %s\npayload       %s\n",
				s.ID, s.Conversation, s.Causation, s.Destination, s.Type, clipText(string(s.Payload), 2000))
			return nil
		},
	}
}

func newParkedReplayCommand(broker *brokerFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "replay ID...",
		Short: "Send parked signals to their destinations again",
		Args:  someArgs("the IDs of the parked signals to replay (baton parked list shows them)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ps, closeBroker, err := broker.open(cmd.Context())
			if err != nil {
				return err
			}
			defer closeBroker()
			var errs []error
			for _, id := range args {
				p, err := parked.Replay(cmd.Context(), ps, id)
				if err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", id, err))
					continue
				}
				fmt.Fprintf(cmd.OutOrStdout(), "replayed %s: %s to %s (token %s)\n", id, p.Signal.Type, p.Signal.Destination, p.Signal.ID)
			}
			return errors.Join(errs...)
		},
	}
}

func newParkedDiscardCommand(broker *brokerFlags) *cobra.Command {
	var (
		srv           serverFlags
		operator, why string
		auditLog      string
	)
	cmd := &cobra.Command{
		Use:   "discard ID... --why TEXT",
		Short: "Discard parked signals for good: retire their tokens and record why",
		Args:  someArgs("the IDs of the parked signals to discard (baton parked list shows them)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			// Checked before anything is opened or created: no audit log
			// for discards that cannot be recorded.
			if strings.TrimSpace(why) == "" {
				return errors.New("--why TEXT is required: the reason the signals are discarded, which is recorded")
			}
			if strings.TrimSpace(operator) == "" {
				return errors.New("--operator NAME is required: who discards them, which is recorded (the default is $USER, which is not set)")
			}
			key, err := srv.apiKey()
			if err != nil {
				return err
			}
			tokens, err := client.New(srv.server, key, client.Options{UserAgent: "baton-parked"})
			if err != nil {
				return err
			}
			defer tokens.Close()
			ps, closeBroker, err := broker.open(cmd.Context())
			if err != nil {
				return err
			}
			defer closeBroker()
			audit, err := os.OpenFile(auditLog, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
			if err != nil {
				return fmt.Errorf("audit log: %w", err)
			}
			defer audit.Close()
			var errs []error
			for _, id := range args {
				d, err := parked.Discard(cmd.Context(), ps, tokens, id, operator, why, audit, time.Now())
				if err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", id, err))
					continue
				}
				retired := "token retired"
				if !d.TokenRetired {
					retired = "token was already gone"
				}
				fmt.Fprintf(cmd.OutOrStdout(), "discarded %s: %s to %s (token %s, %s); recorded in %s\n", id, d.Type, d.Destination, d.Token, retired, auditLog)
			}
			return errors.Join(errs...)
		},
	}
	srv.register(cmd, true)
	// Discarding retires the token: that takes a system that may consume the
	// destination's tokens, not an observe one (nor the dashboard's operate
	// permission, which this command does not use).
	srv.keygen = "baton serve keygen --system NAME --destination '*'"
	cmd.PersistentFlags().Lookup("key").Usage = "API key of a system that may consume the destination's tokens, such as one with destinations \"*\" (baton serve keygen --system NAME --destination '*') [BATON_API_KEY]"
	cmd.Flags().StringVar(&why, "why", "", "why the signals are discarded (required; recorded)")
	cmd.Flags().StringVar(&operator, "operator", envOr("USER", ""), "who discards them (recorded)")
	cmd.Flags().StringVar(&auditLog, "audit-log", "baton-discards.jsonl", "file the discard records are appended to, one JSON object per line")
	return cmd
}

// clipText shortens s to at most n bytes for a table or a listing.
func clipText(s string, n int) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
