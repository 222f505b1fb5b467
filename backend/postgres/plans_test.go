package postgres

import (
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// TestStatementsLookUpEntitiesByKey plans every statement that reads or
// writes entities as PostgreSQL plans a prepared statement it runs often
// (a generic plan, blind to the parameters) over a table of many entities,
// and fails on a plan that reads the whole table. A plan is the planner's
// guess from row estimates: a set-returning function it expects 1000 rows
// from (generate_series over a parameter) turned the batched load into a
// scan of every entity, per call.
func TestStatementsLookUpEntitiesByKey(t *testing.T) {
	t.Parallel()
	ctx, s := t.Context(), newStore(t)
	if _, err := s.Pool().Exec(ctx, "INSERT INTO "+Config{Schema: s.Schema()}.table("entities")+
		" (key, version, state, outbox) SELECT 'entity-' || i, 1, '\\x00', '[]' FROM generate_series(1, 20000) AS i"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pool().Exec(ctx, "ANALYZE "+Config{Schema: s.Schema()}.table("entities")); err != nil {
		t.Fatal(err)
	}
	conn, err := s.Pool().Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SET plan_cache_mode = force_generic_plan"); err != nil {
		t.Fatal(err)
	}
	defer conn.Exec(ctx, "RESET plan_cache_mode") //nolint:errcheck // the pool's next user must not inherit it
	statements := map[string]string{
		"load": s.sql.load, "loadWithToken": s.sql.loadWithToken, "loadWithTokens": s.sql.loadWithTokens,
		"updateEntity": s.sql.updateEntity, "commitBatch": s.sql.commitBatch, "commitTransitions": s.sql.commitTransitions,
		"fastPath update": s.sql.fastPath[0][0], "fastPath update with children": s.sql.fastPath[0][1],
	}
	param := regexp.MustCompile(`\$(\d+)`)
	for name, statement := range statements {
		n := 0
		for _, m := range param.FindAllStringSubmatch(statement, -1) {
			var i int
			fmt.Sscan(m[1], &i)
			n = max(n, i)
		}
		nulls := strings.TrimSuffix(strings.Repeat("NULL, ", n), ", ")
		if _, err := conn.Exec(ctx, "PREPARE planned AS "+statement); err != nil {
			t.Fatalf("%s: prepare: %v", name, err)
		}
		rows, err := conn.Query(ctx, "EXPLAIN EXECUTE planned("+nulls+")", pgx.QueryExecModeSimpleProtocol)
		if err != nil {
			t.Fatalf("%s: explain: %v", name, err)
		}
		var plan []string
		for rows.Next() {
			var line string
			if err := rows.Scan(&line); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, line)
		}
		if err := rows.Err(); err != nil {
			t.Fatalf("%s: explain: %v", name, err)
		}
		if _, err := conn.Exec(ctx, "DEALLOCATE planned"); err != nil {
			t.Fatal(err)
		}
		if text := strings.Join(plan, "\n"); strings.Contains(text, "Seq Scan on entities") {
			t.Errorf("%s reads every entity:\n%s", name, text)
		}
	}
}
