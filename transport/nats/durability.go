package nats

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// ErrUnsafeDurability: New cannot show that the server fsyncs every write
// before it acknowledges it, so a server crash may lose acknowledged
// signals. New refuses such a server unless Config.AllowUnsafeDurability
// is set.
var ErrUnsafeDurability = errors.New("nats transport: the server may lose acknowledged signals in a crash; it needs jetstream { sync_interval: always }")

// varzTimeout bounds the read of one server's /varz.
const varzTimeout = 5 * time.Second

// checkDurability refuses a server that New cannot show syncs every write,
// unless the config accepts the risk, which it then logs as a warning.
func (t *Transport) checkDurability(ctx context.Context) error {
	problem := t.durabilityProblem(ctx)
	if problem == "" {
		return nil
	}
	if !t.cfg.AllowUnsafeDurability {
		return fmt.Errorf("%w: %s; set sync_interval: always in the server's jetstream block and Config.MonitorURL to its monitoring address (http_port) so that New can see it, or set Config.AllowUnsafeDurability to accept that a server crash may lose acknowledged signals", ErrUnsafeDurability, problem)
	}
	t.log.Warn("nats transport: durability is not guaranteed (Config.AllowUnsafeDurability): a NATS server crash may lose acknowledged signals, whose tokens then stay live with no message to deliver them",
		"reason", problem, "required", "jetstream { sync_interval: always }, checked through Config.MonitorURL")
	return nil
}

// durabilityProblem returns why New cannot show that the server syncs
// every write, or "" if it can: the embedded server's own JetStream
// config, or else /varz of every server that Config.MonitorURL names. A
// client connection does not reveal the setting.
func (t *Transport) durabilityProblem(ctx context.Context) string {
	if t.cfg.embedded != nil {
		jsc := t.cfg.embedded.JetStreamConfig()
		if jsc == nil || !jsc.SyncAlways {
			return "the embedded server does not sync every write (its JetStream config has SyncAlways off)"
		}
		return ""
	}
	if t.cfg.MonitorURL == "" {
		return "Config.MonitorURL is not set, and a client connection cannot see whether the server syncs every write"
	}
	var problems []string
	for _, u := range strings.Split(t.cfg.MonitorURL, ",") {
		u = strings.TrimSpace(u)
		always, err := serverSyncsAlways(ctx, u)
		switch {
		case err != nil:
			problems = append(problems, fmt.Sprintf("cannot read the sync setting from %s: %v", redactURL(u), err))
		case !always:
			problems = append(problems, fmt.Sprintf("the server monitored at %s does not sync every write (its /varz shows jetstream.config.sync_always false)", redactURL(u)))
		}
	}
	return strings.Join(problems, "; ")
}

// serverSyncsAlways reads the server's /varz and reports whether JetStream
// syncs every write.
func serverSyncsAlways(ctx context.Context, monitorURL string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, varzTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(monitorURL, "/")+"/varz", nil)
	if err != nil {
		return false, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		// The caller names the address, without credentials; the
		// client's error would quote it whole.
		var urlErr *url.Error
		if errors.As(err, &urlErr) {
			return false, urlErr.Err
		}
		return false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("GET /varz: %s", resp.Status)
	}
	var varz struct {
		JetStream struct {
			Config struct {
				SyncAlways bool `json:"sync_always"`
			} `json:"config"`
		} `json:"jetstream"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(nil, resp.Body, 1<<20)).Decode(&varz); err != nil {
		return false, fmt.Errorf("decode /varz: %w", err)
	}
	return varz.JetStream.Config.SyncAlways, nil
}
