package bench

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
)

// Some servers run with autovacuum off (this project's CI machines do).
// Every variant churns rows (baton's tokens and entities, classic's outbox
// and entities), and without vacuum the dead rows pile up and slow index
// scans, more so the longer a run lasts: nothing like a production server.
// When autovacuum is off the benchmark stands in for it, for every variant
// alike: it vacuums the tables of this run's schemas every vacuumEvery.
const vacuumEvery = 5 * time.Second

// autovacuumOff reports whether the server has autovacuum turned off.
func (e *env) autovacuumOff(ctx context.Context) bool {
	if e.monitor == nil {
		return false
	}
	var on string
	if err := e.monitor.QueryRow(ctx, "SELECT current_setting('autovacuum')").Scan(&on); err != nil {
		return false
	}
	return on == "off"
}

// vacuumLoop vacuums this run's tables until ctx ends.
func (e *env) vacuumLoop(ctx context.Context) {
	for sleepCtx(ctx, vacuumEvery) == nil {
		rows, err := e.monitor.Query(ctx, "SELECT schemaname, tablename FROM pg_tables WHERE schemaname LIKE $1",
			"bench\\_%\\_"+e.runID+"%") // the contended run's too (env.contended)
		if err != nil {
			continue
		}
		tables, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (pgx.Identifier, error) {
			var schema, table string
			err := r.Scan(&schema, &table)
			return pgx.Identifier{schema, table}, err
		})
		if err != nil {
			continue
		}
		for _, t := range tables {
			if _, err := e.monitor.Exec(ctx, "VACUUM "+t.Sanitize()); err != nil && ctx.Err() == nil {
				e.log.Warn("bench: vacuum failed", "table", t.Sanitize(), "err", err)
			}
		}
	}
}
