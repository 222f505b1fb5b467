package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	batonredis "github.com/batonhq/baton/backend/redis"
	"github.com/batonhq/baton/tokenservice"
	"github.com/batonhq/baton/tokenservice/client"
)

// openBatonService keeps entities in PostgreSQL and tokens behind the
// token service (HTTP on the loopback, in this process) over the
// benchmark's redis-server that fsyncs every write: the setup of systems
// that share one token service.
func openBatonService(ctx context.Context, env *env, name string, opts batonOptions) (system, error) {
	s := &batonSystem{w: env.workload, log: env.log, opts: opts}
	st, app, err := openPostgresStore(ctx, env, s, name)
	if err != nil {
		return nil, err
	}
	s.entities = st
	redisTokens, err := batonredis.Open(ctx, batonredis.Config{URL: env.redisServer.url(), Prefix: env.uniqueName(name), Logger: env.log})
	if err != nil {
		s.close()
		return nil, fmt.Errorf("redis: %w", err)
	}
	s.closers = append(s.closers, redisTokens.Close)
	key, hash := tokenservice.NewAPIKey()
	handler, err := tokenservice.New(tokenservice.Config{Tokens: redisTokens, Logger: env.log, Systems: []tokenservice.System{{
		Name: "bench", KeySHA256: hash, Destinations: []string{tokenservice.AnyDestination}, IssueRoots: true, Observe: true}}})
	if err != nil {
		s.close()
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		s.close()
		return nil, err
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			env.log.Error("token service stopped", "err", err)
		}
	}()
	s.closers = append(s.closers, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(ctx)
	})
	tokens, err := client.New("http://"+ln.Addr().String(), key, client.Options{})
	if err != nil {
		s.close()
		return nil, err
	}
	s.closers = append(s.closers, tokens.Close)
	s.tokens = tokens
	s.pids = func(ctx context.Context) []int {
		return append(backendPIDs(ctx, env.monitor, app), env.redisServer.pids()...)
	}
	if s.b, err = startBroker(ctx, env.dir(name)); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}
