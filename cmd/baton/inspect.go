package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/conversation"
	"github.com/batonhq/baton/internal/demo"
	"github.com/batonhq/baton/store"
	"github.com/batonhq/baton/tokenservice"
	"github.com/batonhq/baton/tokenservice/client"
)

// serverFlags locate a running baton serve (or baton demo) for the
// commands that inspect it.
type serverFlags struct {
	server string
	key    string
	// keygen is the command that creates a key the command can use; empty:
	// an observe system's.
	keygen string
}

// register adds --server (and --key for the token API). The token API is
// baton serve's --addr, or baton demo's address with the read-only key the
// demo prints; the dashboard API is baton serve's --dashboard-addr, or baton
// demo's address.
func (s *serverFlags) register(cmd *cobra.Command, needsKey bool) {
	if needsKey {
		cmd.PersistentFlags().StringVar(&s.server, "server", envOr("BATON_SERVER", "http://"+defaultServeAddr),
			"address of baton serve's API, or of baton demo (http://"+demo.DefaultAddr+") [BATON_SERVER]")
		cmd.PersistentFlags().StringVar(&s.key, "key", "", "API key of a system allowed to read the tokens (an observe system to see all; baton demo prints one) [BATON_API_KEY]")
		return
	}
	cmd.PersistentFlags().StringVar(&s.server, "server", envOr("BATON_SERVER", "http://"+defaultDashboardAddr),
		"address of baton serve's dashboard (--dashboard-addr), or of baton demo (http://"+demo.DefaultAddr+"); by default the first that answers [BATON_SERVER]")
}

// dashboardJSON reads one document of the dashboard API from --server; when
// --server was left to its default and nothing answers there, from baton
// demo's address, saying so on stderr.
func (s *serverFlags) dashboardJSON(cmd *cobra.Command, path string, into any) error {
	err := getJSON(cmd.Context(), s.server, path, into)
	var unreachable errUnreachable
	if !errors.As(err, &unreachable) || cmd.Flags().Changed("server") || os.Getenv("BATON_SERVER") != "" {
		return err
	}
	demoURL := "http://" + demo.DefaultAddr
	if getJSON(cmd.Context(), demoURL, path, into) != nil {
		return fmt.Errorf("%w (nor does baton demo at %s; pass --server or set BATON_SERVER)", err, demoURL)
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "nothing answers at %s; read baton demo at %s\n", s.server, demoURL)
	return nil
}

func (s *serverFlags) apiKey() (string, error) {
	if s.key == "" {
		s.key = os.Getenv("BATON_API_KEY")
	}
	if s.key == "" {
		keygen := s.keygen
		if keygen == "" {
			keygen = "baton serve keygen --system NAME --observe"
		}
		return "", fmt.Errorf("no API key: pass --key or set BATON_API_KEY (create one with: %s)", keygen)
	}
	return s.key, nil
}

func newTokensCommand() *cobra.Command {
	var srv serverFlags
	cmd := &cobra.Command{
		Use:   "tokens",
		Short: "List and read live tokens of a running token service",
		Long: `tokens reads live tokens from a running "baton serve" over its API. Live tokens
are exactly the signals still in flight: a token that is listed here long after
it was created belongs to a signal that is stuck or parked.`,
	}
	srv.register(cmd, true)

	var conv, dest string
	var limit int
	list := &cobra.Command{
		Use:     "list",
		Short:   "List the live tokens of a conversation or a destination",
		Example: "  baton tokens list --destination billing\n  baton tokens list --conversation 5f0c...",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (conv == "") == (dest == "") {
				return errors.New("give exactly one of --conversation and --destination")
			}
			if err := nonNegativeFlags(cmd.Flags(), "limit"); err != nil {
				return err
			}
			c, err := srv.client()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			page := store.Page{Limit: min(limit, store.MaxPageLimit)}
			var toks []baton.Token
			for limit <= 0 || len(toks) < limit {
				var batch []baton.Token
				if conv != "" {
					id, err := baton.ParseTokenID(conv)
					if err != nil {
						return fmt.Errorf("--conversation: %w", err)
					}
					batch, err = c.ListByConversation(ctx, id, page)
					if err != nil {
						return serverError(srv.server, err)
					}
				} else if batch, err = c.ListByDestination(ctx, dest, page); err != nil {
					return serverError(srv.server, err)
				}
				toks = append(toks, batch...)
				if len(batch) < page.Size() {
					break
				}
				page.After = batch[len(batch)-1].ID
			}
			writeTokens(cmd.OutOrStdout(), toks, time.Now())
			return nil
		},
	}
	list.Flags().StringVar(&conv, "conversation", "", "conversation id")
	list.Flags().StringVar(&dest, "destination", "", "destination name")
	list.Flags().IntVar(&limit, "limit", 1000, "list at most this many (0: all)")

	get := &cobra.Command{
		Use:   "get TOKEN-ID",
		Short: "Show one live token",
		Args:  oneArg("the id of a live token (baton tokens list shows them)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := baton.ParseTokenID(args[0])
			if err != nil {
				return err
			}
			c, err := srv.client()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			tok, err := c.Get(ctx, id)
			if errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("token %s is not live: never issued, or already consumed (its signal was processed)", id)
			}
			if err != nil {
				return serverError(srv.server, err)
			}
			// As the API writes it: a root token has no causation field.
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			return enc.Encode(tokenservice.EncodeToken(tok))
		},
	}
	cmd.AddCommand(list, get, newStuckCommand(&srv))
	return cmd
}

// newStuckCommand lists the live tokens older than a threshold: signals
// stuck (a destination down, a lost message) or parked.
func newStuckCommand(srv *serverFlags) *cobra.Command {
	var destinations []string
	var olderThan time.Duration
	var olderThanFor map[string]string
	var graphs int
	cmd := &cobra.Command{
		Use:     "stuck --destination NAME...",
		Short:   "List live tokens older than --older-than: signals stuck or parked",
		Example: "  baton tokens stuck --destination billing --destination shipping --older-than 10m --older-than-for shipping=24h",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(destinations) == 0 {
				return errors.New("--destination NAME is required (repeat it for several)")
			}
			if err := nonNegativeFlags(cmd.Flags(), "graphs", "older-than"); err != nil {
				return err
			}
			byDestination, err := parseThresholds("--older-than-for", olderThanFor)
			if err != nil {
				return err
			}
			// Not telemetry.StuckAfter, whose zero is its default (10m):
			// --older-than 0 asks for every live token.
			threshold := func(destination string) time.Duration {
				if d, ok := byDestination[destination]; ok {
					return d
				}
				return olderThan
			}
			c, err := srv.client()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), time.Minute)
			defer cancel()
			now := time.Now()
			var stuck []baton.Token
			for _, d := range destinations {
				page := store.Page{Limit: store.MaxPageLimit}
				for {
					batch, err := c.ListByDestination(ctx, d, page)
					if err != nil {
						return serverError(srv.server, err)
					}
					for _, t := range batch {
						if now.Sub(t.CreatedAt) >= threshold(d) {
							stuck = append(stuck, t)
						}
					}
					if len(batch) < page.Size() {
						break
					}
					page.After = batch[len(batch)-1].ID
				}
			}
			slices.SortFunc(stuck, func(a, b baton.Token) int { return a.CreatedAt.Compare(b.CreatedAt) })
			out := cmd.OutOrStdout()
			if len(stuck) == 0 {
				fmt.Fprintf(out, "no live token older than %s\n", describeThresholds(olderThan, byDestination))
				return nil
			}
			writeTokens(out, stuck, now)
			fmt.Fprintf(out, "older than %s; parked ones: baton parked list\n", describeThresholds(olderThan, byDestination))
			drawn := map[baton.TokenID]bool{}
			for _, t := range stuck {
				if len(drawn) == graphs {
					break
				}
				if drawn[t.Conversation] {
					continue
				}
				drawn[t.Conversation] = true
				fmt.Fprintln(out)
				if err := drawConversation(ctx, out, srv, c, t.Conversation, now); err != nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&graphs, "graphs", 3, "draw the conversations of the oldest stuck tokens, up to this many")
	cmd.Flags().StringSliceVar(&destinations, "destination", nil, "destination whose tokens to read (repeat for several)")
	cmd.Flags().DurationVar(&olderThan, "older-than", 10*time.Minute, "age from which a live token counts as stuck (0: every live token)")
	cmd.Flags().StringToStringVar(&olderThanFor, "older-than-for", nil, "destinations with thresholds of their own, as DEST=DURATION,... (shipping=24h)")
	return cmd
}

// drawConversation draws a conversation as the service's dashboard
// recorded it, or, where the service keeps no record of it (a dashboard
// off, the conversation evicted, a bare token service), lists its live
// tokens, which are the signals it still waits for.
func drawConversation(ctx context.Context, out io.Writer, srv *serverFlags, c *client.Client, id baton.TokenID, now time.Time) error {
	var recorded conversation.Conversation
	if err := getJSONWithKey(ctx, srv.server, srv.key, "/api/conversations/"+id.String(), &recorded); err == nil {
		return recorded.WriteText(out)
	}
	live, err := c.ListByConversation(ctx, id, store.Page{Limit: store.MaxPageLimit})
	if err != nil {
		return serverError(srv.server, err)
	}
	fmt.Fprintf(out, "conversation %s (no graph recorded at %s; its live tokens, the signals it waits for):\n", id, srv.server)
	for _, t := range live {
		fmt.Fprintf(out, "  %s @%s  token %s  %s old\n", t.Type, t.Destination, t.ID, now.Sub(t.CreatedAt).Round(time.Second))
	}
	return nil
}

// parseThresholds reads the DEST=DURATION pairs of flag.
func parseThresholds(flag string, pairs map[string]string) (map[string]time.Duration, error) {
	out := make(map[string]time.Duration, len(pairs))
	for dest, text := range pairs {
		d, err := time.ParseDuration(text)
		if err != nil || d <= 0 || dest == "" {
			return nil, fmt.Errorf("%s %s=%s: want DESTINATION=DURATION with a positive duration like 24h", flag, dest, text)
		}
		out[dest] = d
	}
	return out, nil
}

// describeThresholds says which ages count as stuck, for a listing.
func describeThresholds(def time.Duration, byDestination map[string]time.Duration) string {
	text := def.String()
	for _, dest := range slices.Sorted(maps.Keys(byDestination)) {
		text += fmt.Sprintf(", %s for %s", byDestination[dest], dest)
	}
	return text
}

func (s *serverFlags) client() (*client.Client, error) {
	key, err := s.apiKey()
	if err != nil {
		return nil, err
	}
	return client.New(s.server, key, client.Options{})
}

func writeTokens(w io.Writer, toks []baton.Token, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TOKEN\tDESTINATION\tTYPE\tCONVERSATION\tAGE")
	for _, t := range toks {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.ID, t.Destination, t.Type, t.Conversation, now.Sub(t.CreatedAt).Round(time.Second))
	}
	tw.Flush()
	fmt.Fprintf(w, "%d live tokens\n", len(toks))
}

// serverError says in one line that the server could not be asked.
func serverError(server string, err error) error {
	msg := strings.Join(strings.Fields(err.Error()), " ")
	if errors.Is(err, store.ErrNotApplied) && strings.Contains(msg, "connect") {
		return fmt.Errorf("cannot reach %s: is baton serve running? baton demo serves on http://%s: pass --server or set BATON_SERVER (%s)", server, demo.DefaultAddr, msg)
	}
	return errors.New(msg)
}

func newConversationsCommand() *cobra.Command {
	var srv serverFlags
	cmd := &cobra.Command{
		Use:   "conversations",
		Short: "List recent conversations of a running baton serve or demo, or draw one",
		Long: `conversations reads the conversations that a running "baton serve" or
"baton demo" recorded from the transitions it saw, from its dashboard API.`,
	}
	srv.register(cmd, false)
	var limit int
	list := &cobra.Command{
		Use:   "list",
		Short: "List the most recently active conversations",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := positiveFlags(cmd.Flags(), "limit"); err != nil {
				return err
			}
			var resp struct {
				Total         int                    `json:"total"`
				Conversations []conversation.Summary `json:"conversations"`
			}
			if err := srv.dashboardJSON(cmd, fmt.Sprintf("/api/conversations?limit=%d", limit), &resp); err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "CONVERSATION\tSIGNALS\tIN FLIGHT\tPARKED\tDUPLICATES\tUPDATED")
			for _, c := range resp.Conversations {
				fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%s\n", c.ID, c.Signals, c.InFlight, c.Parked, c.Duplicates, c.Updated.Format(time.TimeOnly))
			}
			tw.Flush()
			fmt.Fprintf(cmd.OutOrStdout(), "%d of %d recorded conversations\n", len(resp.Conversations), resp.Total)
			return nil
		},
	}
	list.Flags().IntVar(&limit, "limit", 20, "how many to list (at most 500)")
	show := &cobra.Command{
		Use:   "show CONVERSATION-ID",
		Short: "Draw a conversation as a text graph of its signals",
		Args:  oneArg("the id of a conversation (baton conversations list shows them)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := baton.ParseTokenID(args[0])
			if err != nil {
				return err
			}
			var c conversation.Conversation
			if err := srv.dashboardJSON(cmd, "/api/conversations/"+id.String(), &c); err != nil {
				return err
			}
			return c.WriteText(cmd.OutOrStdout())
		},
	}
	cmd.AddCommand(list, show)
	return cmd
}

// errUnreachable says no server answered at all.
type errUnreachable struct{ error }

func (e errUnreachable) Unwrap() error { return e.error }

// dashboardClient follows no redirect: net/http would send the key along
// to another port or scheme of the same host, or a subdomain. A redirect
// is answered as an error (its status).
var dashboardClient = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// getJSON reads one document of the dashboard API.
func getJSON(ctx context.Context, server, path string, into any) error {
	return getJSONWithKey(ctx, server, "", path, into)
}

// getJSONWithKey reads one document of the dashboard API, with an observe
// system's key where the dashboard needs one (on baton serve's --addr).
func getJSONWithKey(ctx context.Context, server, key, path string, into any) error {
	base, err := url.Parse(server)
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return fmt.Errorf("--server %q: want http://host:port", server)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(server, "/")+path, nil)
	if err != nil {
		return err
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := dashboardClient.Do(req)
	if err != nil {
		return errUnreachable{fmt.Errorf("cannot reach %s: is baton serve or baton demo running? (%v)", server, err)}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(body, &e)
		return fmt.Errorf("%s: %s %s", server, resp.Status, e.Error)
	}
	return json.Unmarshal(body, into)
}
