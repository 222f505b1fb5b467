package mysql

import "strings"

// statements is the SQL of the store, for one table prefix.
type statements struct {
	getToken, byConversation, byDestination, insertToken, deleteToken string
	lockToken, claim, expire                                          string
	load, loadWithToken, insertEntity, updateEntity, lockEntity       string
	loadBatch, stale                                                  string
	upsertEntities, upsertEntitiesUpdate, insertEntities              string
	insertStart, loadStart, updateStart, deleteStart, pendingStarts   string
}

const (
	tokenColumns = "id, conversation, causation, destination, type, digest, created_s, created_ns, expires_s, expires_ns"
	startColumns = "id, version, root, claimed, destination, type, payload, traceparent, tracestate, created_s, created_ns"
)

func newStatements(prefix string) statements {
	r := strings.NewReplacer(
		"{tokens}", table(prefix, "tokens"),
		"{entities}", table(prefix, "entities"),
		"{starts}", table(prefix, "starts"),
		"{columns}", tokenColumns,
		"{start_columns}", startColumns,
	)
	return statements{
		getToken:       r.Replace("SELECT {columns} FROM {tokens} WHERE id = ?"),
		byConversation: r.Replace("SELECT {columns} FROM {tokens} WHERE conversation = ? AND id > ? ORDER BY id LIMIT ?"),
		byDestination:  r.Replace("SELECT {columns} FROM {tokens} WHERE destination = ? AND id > ? ORDER BY id LIMIT ?"),
		insertToken:    r.Replace("INSERT INTO {tokens} ({columns}) VALUES "),
		deleteToken:    r.Replace("DELETE FROM {tokens} WHERE id = ?"),
		lockToken:      r.Replace("SELECT {columns} FROM {tokens} WHERE id = ? FOR UPDATE"),
		claim:          r.Replace("UPDATE {tokens} SET expires_s = NULL, expires_ns = NULL WHERE id = ?"),
		expire:         r.Replace("DELETE FROM {tokens} WHERE expires_s IS NOT NULL AND (expires_s, expires_ns) < (?, ?) ORDER BY expires_s, expires_ns LIMIT ?"),

		load: r.Replace("SELECT version, state, outbox FROM {entities} WHERE `key` = ?"),
		// LoadBatch appends the keys' placeholders: "(?, ?, ...)".
		loadBatch: r.Replace("SELECT `key`, version, state, outbox FROM {entities} WHERE `key` IN "),
		// One statement reads both at one instant (one consistent read).
		loadWithToken: r.Replace("SELECT e.version, e.state, e.outbox, {columns} FROM (SELECT 1 AS one) AS x " +
			"LEFT JOIN {entities} AS e ON e.`key` = ? LEFT JOIN {tokens} AS t ON t.id = ?"),
		insertEntity: r.Replace("INSERT INTO {entities} (`key`, version, state, outbox, oldest_outbox_s, oldest_outbox_ns) VALUES (?, 1, ?, ?, ?, ?)"),
		updateEntity: r.Replace("UPDATE {entities} SET version = version + 1, state = ?, outbox = ?, oldest_outbox_s = ?, oldest_outbox_ns = ? WHERE `key` = ? AND version = ?"),
		// CommitBatch appends the rows' placeholders, and to upsertEntities
		// upsertEntitiesUpdate.
		upsertEntities: r.Replace("INSERT INTO {entities} (`key`, version, state, outbox, oldest_outbox_s, oldest_outbox_ns) VALUES "),
		upsertEntitiesUpdate: " ON DUPLICATE KEY UPDATE version = VALUES(version), state = VALUES(state), outbox = VALUES(outbox), " +
			"oldest_outbox_s = VALUES(oldest_outbox_s), oldest_outbox_ns = VALUES(oldest_outbox_ns)",
		insertEntities: r.Replace("INSERT INTO {entities} (`key`, version, state, outbox, oldest_outbox_s, oldest_outbox_ns) VALUES "),
		lockEntity:     r.Replace("SELECT version FROM {entities} WHERE `key` = ? FOR UPDATE"),
		stale:          r.Replace("SELECT `key` FROM {entities} WHERE oldest_outbox_s IS NOT NULL AND (oldest_outbox_s, oldest_outbox_ns) < (?, ?) ORDER BY oldest_outbox_s, oldest_outbox_ns LIMIT ?"),

		insertStart:   r.Replace("INSERT INTO {starts} ({start_columns}) VALUES (?, 1, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
		loadStart:     r.Replace("SELECT {start_columns} FROM {starts} WHERE id = ?"),
		updateStart:   r.Replace("UPDATE {starts} SET version = version + 1, root = ?, claimed = ? WHERE id = ? AND version = ?"),
		deleteStart:   r.Replace("DELETE FROM {starts} WHERE id = ?"),
		pendingStarts: r.Replace("SELECT {start_columns} FROM {starts} WHERE (created_s, created_ns) < (?, ?) ORDER BY created_s, created_ns, id LIMIT ?"),
	}
}
