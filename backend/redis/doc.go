// Package redis is a token store (store.TokenStore) kept in Redis 7.0 or
// later, on one standalone server or on Redis Cluster (see "Redis
// Cluster" below). Entities live elsewhere.
//
// # Guarantees
//
// On a standalone server, Transition is one Lua script, run atomically by the server: if the
// parent token is live it deletes the parent with its index entries and
// creates every child with theirs; if a child already exists it applies
// nothing and returns an error matching store.ErrExists; if the parent is
// absent it applies nothing and reports false. The script checks
// everything before its first write, because Redis does not roll a script
// back. Issue, Get, the listings and ExpireRoots are scripts too, so every
// operation is atomic and the store is linearizable on one server. The
// scripts are sent with EVALSHA and fall back to EVAL when the server does
// not have them cached. On Redis Cluster the transition is still one
// script, in the conversation's slot; see "Redis Cluster" for what
// changes around it. GetTokens and TransitionTokens (store.TokenBatcher)
// send the same scripts, one per operation, in one pipeline on a
// standalone server; on Redis Cluster they run the operations one after
// another, not pipelined.
//
// # Required server settings
//
// An acknowledged write must survive a crash (protocol R2, docs/protocol.md 3.1), so the server
// must run with
//
//	appendonly yes
//	appendfsync always
//	no-appendfsync-on-rewrite no
//
// With these, Redis writes each script's effects to the append-only file
// (wrapped in MULTI/EXEC) and fsyncs it before it replies; a crash during
// the write leaves a torn tail that Redis drops when it loads the file
// (aof-load-truncated yes, the default), so a transition survives whole or
// not at all. The third is the default, but some configurations set it to
// yes to smooth latency: Redis then skips the fsync while an AOF rewrite
// or RDB save runs in the background (rewrites start by themselves as the
// file grows), and the writes it acknowledges meanwhile are lost if the
// machine crashes. Open reads the three settings with CONFIG GET and
// refuses any other configuration with an error matching
// ErrUnsafeDurability that names the setting. It also refuses when CONFIG
// is disabled (as on many managed services), since it cannot check.
// Config.AllowUnsafeDurability opens the store anyway and logs a warning
// (level WARN) at Open; a crash may then lose acknowledged tokens. The
// settings are checked at Open only, on every master of a cluster;
// changing them later with CONFIG SET goes unnoticed.
//
// # Replicas
//
// Redis replicates asynchronously: a master acknowledges a write before
// its replicas have it, and WAIT or WAITAOF only report how many have it
// by then; they do not stop a failover from promoting one that lacks it.
// After such a failover a lost consumption revives a consumed token (a
// redelivered copy of its signal is applied a second time) and a lost
// creation drops a signal as a duplicate. TestFailoverBringsConsumedTokensBack
// shows both, deterministically; in TestFailoverUnderLoad, with a replica
// 20 ms behind and the master killed during a storm of transitions, a
// failover brought 5 of 1,848 acknowledged consumptions back and lost 32
// of 1,851 acknowledged tokens. So Open refuses a server that has
// replicas (INFO replication: connected_slaves above 0), or any master of
// a cluster that has, with an error matching ErrAsyncReplication, and
// refuses a replica itself (ErrUnsupportedServer). Config.AllowAsyncReplication
// opens the store anyway and logs a warning: for replicas that are never
// promoted. The check runs at Open; a replica attached later is not seen.
// For tokens that must survive the loss of a machine, use a store whose
// writes are replicated before they are acknowledged (PostgreSQL with
// synchronous replication).
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
// With the prefix p (Config.Prefix, default "baton"), on a standalone
// server:
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
// On Redis Cluster the same keys hold a little more, because every write
// names one creation attempt by a nonce (16 hex digits of the client's
// unix µs, 16 random):
//
//	p:{<conv>}:t:<id>   hash: as above, plus nonce (of the attempt that
//	                    created it)
//	p:{<conv>}:conv     sorted set: as above
//	p:id:<id>           set: members "<conv> <nonce>", one per attempt
//	                    that created, or may still create, a token with
//	                    this id; all name one conversation
//	p:dest:<dest>       sorted set: members "<id>:<conv>:<nonce>", score 0
//	p:exp               sorted set: members "<id>:<conv>:<nonce>",
//	                    score = expiry in µs
//
// # Redis Cluster
//
// Open switches to cluster mode when the server at Config.URL reports
// cluster_enabled:1 (it then seeds a cluster client with that node), or
// when Config.ClusterOptions is set. Every command goes to the master of
// its slot: the store forces ReadOnly, RouteByLatency and RouteRandomly
// off, since a lagging replica would report a live token as absent. The
// keys tagged {<conv>} share one hash slot; they are the only truth. The
// lookup and the two indexes hash elsewhere, so they cannot change in the
// same script; they are kept so that no live token is ever unreachable,
// and readers treat an entry without its token as absent:
//
//   - Issue and Transition first claim each new token's lookup (a script
//     on that key: add the attempt's member "<conv> <nonce>" unless the set
//     names another conversation) and add its index members, in one
//     pipelined round trip that also reads the parent's lookup. Then one
//     script in the conversation's slot, with every key in KEYS, does what
//     the standalone script does: if the parent is live, and no child
//     exists, delete the parent and create the children, atomically.
//   - A lookup naming another conversation is left alone: Issue then
//     reports store.ErrExists if that token is live, and otherwise fails
//     as not applied (store.ErrNotApplied). Transition fails as not
//     applied whenever a child's id is held by another conversation, live
//     or not (a standalone server reports store.ErrExists for a live
//     one): the token of the other conversation cannot be read in the
//     same step.
//   - After the parent is consumed (or a root expired), the member and
//     index members of the attempt that created it are removed. A call
//     that certainly created nothing (the parent was absent, a child
//     existed, the claims were stale, or the request was never sent)
//     removes its own. Members of other attempts stay, each removed by
//     its own attempt, so a repeated step 5 (a redelivered copy, the
//     sweeper, a retry) or a repeated Issue leaves nothing behind; a set
//     with no member left is deleted by the server.
//   - Get reads one member of the lookup, then the token in its slot.
//     ListByConversation is one script in the slot (it derives the token
//     keys, all in the slot, from the set). ListByDestination and
//     ExpireRoots walk their index and read or expire each token in its
//     slot, one atomic script per token; they are not snapshots across
//     conversations.
//
// Transition, Issue and Get stay linearizable: a token's lookup holds the
// member of the attempt that created it from before the token is created
// until after it is gone, and all members name the conversation of every
// live token with that id. Transition reports consumed=true at most once
// per token, never recreates a consumed token (the children's creation is
// the consuming script's), and never loses a live one.
//
// A transition's children must share their parent's conversation (the
// engine's children always do): others are refused with an error
// matching store.ErrInvalid, before anything changes. On a standalone
// server they work.
//
// Garbage and its cleanup: entries are left without a token only by a
// call whose outcome stays unknown: a client that crashes (or loses its
// connection, or times out) between the claim and the end of the script,
// or after a transition and before removing the parent's entries. There
// is at most one such set of entries per call in flight at the failure.
// No reader deletes an entry while the creation it may belong to could
// still apply: the creation script refuses (not applied) an attempt whose
// nonce is more than claimTTL (one minute) old by the clock of its node,
// and entries are pruned only when their nonce is more than pruneAge (15
// minutes) old by the pruner's clock and their token is not live with
// that nonce: by Get, Issue and Transition (lookup members, when they
// find a lookup without its token), ListByDestination (destination members) and ExpireRoots
// (expiry members). A lookup of an id that nobody reads again stays until
// it is deleted by hand (SCAN p:id:* on every master and remove members
// whose token hash, with that nonce, is absent and whose nonce is old).
//
// Clocks. The nonce carries the client's clock; the creation script
// compares it with the clock of the node that owns the conversation's
// slot, and pruners compare it with their own.
//
//   - Liveness: a client whose clock is more than about claimTTL (1
//     minute) behind a node's clock has every creation in that node's
//     slots (Issue, and Transition with children) refused as not applied,
//     and a caller that retries not-applied calls retries forever.
//   - Safety: if a pruner's clock is ahead of the clock of the
//     conversation's node by more than pruneAge - claimTTL (about 14
//     minutes), or a node's clock steps back, a stalled creation may
//     apply after its lookup member (or index member) was pruned: the
//     token is then live but Get (or the listing, or ExpireRoots) cannot
//     find it. Keep every client and node on NTP, with steps forbidden.
//
// Topology. The durability settings are checked at Open on the masters
// that the cluster reports then; masters added later (by resharding or
// failover) are not checked. The cluster client follows no redirects
// (MaxRedirects -1, like MaxRetries): a MOVED or ASK reply is a refusal
// before running (not applied) and the next call uses the reloaded slot
// map. Since ASK is not followed, every creation in a slot that is being
// migrated is refused as not applied (its keys live on two nodes) until
// the migration ends. Masters with replicas are refused, as described
// under Replicas: a cluster's automatic failover can break exactly-once.
package redis
