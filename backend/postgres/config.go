package postgres

import (
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5"
)

// DefaultSchema is the schema that the zero Config selects.
const DefaultSchema = "baton"

// ErrInvalidConfig wraps every error of a Config that New, Open or Migrate
// refuses.
var ErrInvalidConfig = errors.New("postgres: invalid config")

// Config configures a Store and Migrate. The zero value is ready to use.
type Config struct {
	// Schema is the PostgreSQL schema that holds this store's tables. It is
	// created if missing. Zero selects DefaultSchema. It must be 1 to 63
	// letters, digits or underscores, not start with a digit or "pg_", and
	// is used exactly as given (quoted, so case matters). Separate schemas
	// are separate stores: tests give each store a schema of its own.
	Schema string

	// SkipMigrate stops New and Open from running Migrate. The zero value,
	// false, migrates on construction, which is safe when several processes
	// start at once (Migrate serializes them). Set it when the schema is
	// migrated by a deployment step and the application's database role may
	// not create tables; construction then fails unless the schema is at
	// LatestSchemaVersion.
	SkipMigrate bool

	// AllowUnsafe lets the store use connections whose commits are not
	// durable (synchronous_commit or fsync off), logging one warning.
	// Acknowledged tokens and entity commits may then be lost in a server
	// crash, which breaks protocol rule R2. The zero value, false, refuses such a
	// server in New and Open, and such a connection opened later in every
	// call, with ErrUnsafeServer. Only for tests and throw-away data.
	AllowUnsafe bool

	// Logger receives migration and startup events. Nil discards. The DSN
	// and its password are never logged.
	Logger *slog.Logger
}

// identifier checks schema names before they are quoted into SQL. Only
// this strict form is accepted, so no caller input reaches SQL unchecked.
var identifier = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}$`)

func (c Config) withDefaults() (Config, error) {
	if c.Schema == "" {
		c.Schema = DefaultSchema
	}
	if !identifier.MatchString(c.Schema) {
		return c, fmt.Errorf("%w: schema %q must be 1 to 63 letters, digits or underscores, not starting with a digit", ErrInvalidConfig, c.Schema)
	}
	if strings.HasPrefix(c.Schema, "pg_") {
		return c, fmt.Errorf("%w: schema %q: names starting with pg_ are reserved by PostgreSQL", ErrInvalidConfig, c.Schema)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// quotedSchema returns the schema as a quoted SQL identifier.
func (c Config) quotedSchema() string { return pgx.Identifier{c.Schema}.Sanitize() }

// table returns the schema-qualified, quoted name of one of this package's
// tables.
func (c Config) table(name string) string { return pgx.Identifier{c.Schema, name}.Sanitize() }
