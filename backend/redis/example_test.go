package redis_test

import (
	"context"
	"log"
	"log/slog"

	"github.com/batonhq/baton/backend/redis"
)

// Open refuses a server that does not fsync every write before replying.
// Start it with: redis-server --appendonly yes --appendfsync always
func ExampleOpen() {
	ctx := context.Background()
	tokens, err := redis.Open(ctx, redis.Config{
		URL:    "redis://127.0.0.1:6379/0",
		Prefix: "shop",
		Logger: slog.Default(),
	})
	if err != nil {
		log.Fatal(err) // for example: ErrUnsafeDurability, naming the setting to change
	}
	defer tokens.Close()
	// Pass tokens as engine.Config.Tokens.
}
