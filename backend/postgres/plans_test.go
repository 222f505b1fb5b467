package postgres

import (
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// TestStatementsLookUpByKey plans every statement that reads or writes
// entities or tokens by key as PostgreSQL plans a prepared statement it runs often
// (a generic plan, blind to the parameters) over tables of many entities
// and tokens (an incident can leave many signals in flight), and fails on
// a plan that reads a whole table. A plan is the planner's
// guess from row estimates: a set-returning function it expects 1000 rows
// from (generate_series over a parameter) turned the batched load into a
// scan of every entity, per call.
func TestStatementsLookUpByKey(t *testing.T) {
	t.Parallel()
	ctx, s := t.Context(), newStore(t)
	if _, err := s.Pool().Exec(ctx, "INSERT INTO "+Config{Schema: s.Schema()}.table("entities")+
		" (key, version, state, outbox) SELECT 'entity-' || i, 1, '\\x00', '[]' FROM generate_series(1, 20000) AS i"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pool().Exec(ctx, "INSERT INTO "+Config{Schema: s.Schema()}.table("tokens")+" ("+tokenColumns+")"+
		" SELECT id, id, NULL, 'billing', 'charge', sha256(id), now(), 0, NULL, NULL FROM (SELECT decode(md5(i::text), 'hex') AS id FROM generate_series(1, 20000) AS i) AS g"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pool().Exec(ctx, "ANALYZE "+Config{Schema: s.Schema()}.table("entities")+", "+Config{Schema: s.Schema()}.table("tokens")); err != nil {
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
		"load": s.sql.load, "loadBatch": s.sql.loadBatch, "loadWithToken": s.sql.loadWithToken, "loadWithTokens": s.sql.loadWithTokens,
		"updateEntity": s.sql.updateEntity, "commitBatch": s.sql.commitBatch, "commitTransitions": s.sql.commitTransitions,
		"fastPath update": s.sql.fastPath[0][0], "fastPath update with children": s.sql.fastPath[0][1],
		"fastPath insert with children": s.sql.fastPath[1][1], "transition": s.sql.transition, "get": s.sql.get, "getMany": s.sql.getMany,
		"claimRoot": s.sql.claimRoot, "issue": s.sql.issue, "stale": s.sql.stale, "expireRoots": s.sql.expireRoots,
		"listByConversation": s.sql.listByConversation, "listByDestination": s.sql.listByDestination,
		"tx lock": s.tx.lock, "tx insertRoot": s.tx.insertRoot,
	}
	param := regexp.MustCompile(`\$(\d+)`)
	for name, statement := range statements {
		n := 0
		for _, m := range param.FindAllStringSubmatch(statement, -1) {
			i, err := strconv.Atoi(m[1])
			if err != nil {
				t.Fatal(err)
			}
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
		if text := strings.Join(plan, "\n"); strings.Contains(text, "Seq Scan on entities") || strings.Contains(text, "Seq Scan on tokens") {
			t.Errorf("%s reads a whole table:\n%s", name, text)
		}
	}
}
