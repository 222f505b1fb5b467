// Package redis is a token store (store.TokenStore) kept in Redis 7.0 or
// later, on one standalone server. Entities live elsewhere.
//
// # Guarantees
//
// Transition is one Lua script, run atomically by the server: if the
// parent token is live it deletes the parent with its index entries and
// creates every child with theirs; if a child already exists it applies
// nothing and returns an error matching store.ErrExists; if the parent is
// absent it applies nothing and reports false. The script checks
// everything before its first write, because Redis does not roll a script
// back. Issue, Get, the listings and ExpireRoots are scripts too, so every
// operation is atomic and the store is linearizable on one server. The
// scripts are sent with EVALSHA and fall back to EVAL when the server does
// not have them cached.
//
// # Required server settings
//
// An acknowledged write must survive a crash (DESIGN R2), so the server
// must run with
//
//	appendonly yes
//	appendfsync always
//
// With these, Redis writes each script's effects to the append-only file
// (wrapped in MULTI/EXEC) and fsyncs it before it replies; a crash during
// the write leaves a torn tail that Redis drops when it loads the file
// (aof-load-truncated yes, the default), so a transition survives whole or
// not at all. Open reads both settings with CONFIG GET and refuses any
// other configuration with an error matching ErrUnsafeDurability. It also
// refuses when CONFIG is disabled (as on many managed services), since it
// cannot check. Config.AllowUnsafeDurability opens the store anyway and
// logs a warning once; a crash may then lose acknowledged tokens. The
// settings are checked at Open only; changing them later with CONFIG SET
// goes unnoticed.
//
// Replication is out of scope: the store does not use WAIT or WAITAOF, so
// an acknowledgement means "fsynced on the primary". A replica promoted by
// Sentinel or by a managed service's failover may lack the last
// acknowledged writes. A lost creation drops a signal as a duplicate; a
// lost consumption revives a consumed token and lets a duplicate through.
// Run one primary without automatic failover, or accept that a failover
// can break exactly-once.
//
// # Failure semantics
//
// Not applied (safe to retry, nothing happened): store.ErrExists,
// store.ErrInvalid, store.ErrClosed, and errors matching
// store.ErrNotApplied: the context was done before the call, no connection
// could be made (dial failed, pool timeout), or the server refused the
// script before running it (OOM, READONLY, LOADING, BUSY, MISCONF, NOPERM,
// NOAUTH, and the like). Every other error leaves the outcome unknown: a
// timeout, a connection lost after the command was written, a script that
// failed while running. The client's own retries are disabled
// (MaxRetries -1), because a retried transition whose first attempt
// applied would report "not consumed" and a retried Issue "exists".
//
// Times are stored as unix microseconds and come back in UTC. ExpireRoots
// deletes roots whose ExpiresAt, at microsecond precision, is before the
// given time, earliest expiry first, in atomic batches of at most 1000.
//
// # Key layout
//
// With the prefix p (Config.Prefix, default "baton"):
//
//	p:{<conv>}:t:<id>   hash: a token's fields (cause, dest, type, digest,
//	                    created, expires)
//	p:{<conv>}:conv     sorted set: the conversation's live token ids
//	p:id:<id>           string: the conversation of a live token, so that
//	                    Get and Transition find a token by id alone
//	p:dest:<dest>       sorted set: the live token ids addressed to dest
//	p:exp               sorted set: expiring roots, score = expiry in µs
//
// Ids are 32 lowercase hex digits. Index members have score 0 and are
// paged with ZRANGEBYLEX. Sets that become empty disappear, so once every
// token is consumed or expired no key is left: space is proportional to
// the signals in flight.
//
// # Redis Cluster
//
// Not supported: Open refuses a server with cluster mode enabled (error
// matching ErrUnsupportedServer). The keys of one conversation share the
// hash tag {<conv>}, so the core of a transition (the parent and children
// of one conversation with its index) fits one slot. But the id lookup,
// the destination index and the expiry index span conversations and hash
// to other slots, and the scripts derive key names from the lookup instead
// of declaring them in KEYS; a cluster rejects both (CROSSSLOT). A cluster
// mode would need the caller to pass the parent's conversation, a
// transition script limited to that slot, and the cross-conversation
// indexes kept outside it (written before a token is created, deleted after
// it is consumed, and checked against the conversation's keys on read).
// Children in a conversation other than their parent's would then need a
// second slot; on one server they work.
package redis
