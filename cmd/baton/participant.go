package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/batonhq/baton/internal/participant"
)

func newParticipantCommand() *cobra.Command {
	var cfg participant.Config
	cmd := &cobra.Command{
		Use:   "participant",
		Short: "Run a ready billing participant over a token service, for other languages to talk to",
		Long: `participant runs a billing destination on the reference engine: it serves
signals over HTTP at /signals (docs/protocol.md section 5), keeps its tokens in
the token service it is given and its entities in a file in --data.

Activities: "charge" (payload {"account": "ada", "amount": 1200}; reply the
account's balance and charge count) and "conformance.count", the counting
activity that baton conformance checks with.`,
		Example: `  BATON_API_KEY=bk_... baton participant --token-service http://127.0.0.1:7451 --data ./billing-data`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Logger = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelWarn}))
			return participant.Run(cmd.Context(), cfg, func(url string) {
				fmt.Fprintf(cmd.OutOrStdout(), "participant %q serves signals at %s (token service %s, entities in %s); Ctrl-C stops it\n",
					cfg.Destination, url, cfg.TokenService, cfg.Data)
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Addr, "addr", participant.DefaultAddr, "address to serve signals on")
	f.StringVar(&cfg.TokenService, "token-service", envOr("BATON_TOKEN_SERVICE", "http://"+defaultServeAddr), "base URL of the token service [BATON_TOKEN_SERVICE]")
	f.StringVar(&cfg.Key, "key", "", "API key of this system at the token service [BATON_API_KEY]")
	f.StringVar(&cfg.Destination, "destination", envOr("BATON_DESTINATION", participant.DefaultDestination), "destination served: the system name of the key [BATON_DESTINATION]")
	f.StringVar(&cfg.Data, "data", "baton-participant-data", "directory of the entity store")
	var forward string
	f.StringVar(&forward, "forward", envOr("BATON_FORWARD", ""), "DESTINATION=URL: the counting activity passes each signal on to that destination [BATON_FORWARD]")
	cmd.PreRunE = func(*cobra.Command, []string) error {
		if cfg.Key == "" {
			cfg.Key = envOr("BATON_API_KEY", "")
		}
		if cfg.Key == "" {
			return fmt.Errorf("no API key: pass --key or set BATON_API_KEY, the key of system %q at the token service (create one with: baton serve keygen --system %s)",
				cfg.Destination, cfg.Destination)
		}
		if err := checkListenAddr("--addr", cfg.Addr); err != nil {
			return err
		}
		if !httpURL(cfg.TokenService) {
			return fmt.Errorf("--token-service %q: want the token service's http:// or https:// URL, such as http://%s", cfg.TokenService, defaultServeAddr)
		}
		if err := checkName("--destination", "destination", cfg.Destination); err != nil {
			return err
		}
		if forward != "" {
			var ok bool
			if cfg.ForwardTo, cfg.ForwardURL, ok = strings.Cut(forward, "="); !ok {
				return fmt.Errorf("--forward %q: want DESTINATION=URL", forward)
			}
			if err := checkName("--forward", "destination", cfg.ForwardTo); err != nil {
				return err
			}
			if !httpURL(cfg.ForwardURL) {
				return fmt.Errorf("--forward %q: want DESTINATION=URL with an http:// or https:// URL", forward)
			}
		}
		return nil
	}
	return cmd
}

// checkListenAddr refuses an address to listen on that is not host:port
// with a port from 0 to 65535, naming the flag.
func checkListenAddr(flag, addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err == nil {
		var n uint64
		if n, err = strconv.ParseUint(port, 10, 16); err == nil && n > 65535 {
			err = errors.New("port out of range")
		}
	}
	if err != nil {
		return fmt.Errorf("%s %q: want HOST:PORT with a port from 0 to 65535 (0 picks a free one)", flag, addr)
	}
	return nil
}

// httpURL reports whether s is an absolute http or https URL with a host.
func httpURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}
