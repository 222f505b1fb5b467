// Package etcd is a token store on an etcd cluster: every acknowledged
// write is on a quorum of members' disks before it is answered (Raft, and
// an fsync of each member's log), so it survives the loss of any minority
// of machines, the leader included.
//
// Every operation is one etcd transaction or one linearizable read: a
// transition compares the consumed token's revision with the one read
// and the children's keys with absence, and then deletes the token's keys
// and writes the children's, all or nothing. The read before a transaction
// may be served by the member the client talks to without asking the
// leader (serializable, possibly stale): the transaction's comparison
// catches a stale one, and every answer that no transaction checks ("the
// token is absent", "the root has expired") comes from a linearizable read. A token is kept under its own
// key and, for the listings, under its conversation's, its destination's
// and (an expiring root) its expiry's; all are written in one transaction.
//
// What the cluster must allow: a transaction holds 3 operations per token
// it creates plus 4, so --max-txn-ops (default 128) takes transitions of up
// to 41 children; set it to 3100 for the 1,000 a token store must take.
// etcd keeps every revision of every key until it is compacted, and stops
// all writes when its database reaches its quota (--quota-backend-bytes,
// 2 GiB by default; the NOSPACE alarm): with tokens created and deleted at
// the rate of the traffic, run the members with automatic compaction
// (--auto-compaction-mode=periodic --auto-compaction-retention=5m) and
// defragment now and then (etcdctl defrag). The store holds only the
// signals in flight, so compacted, its database stays small.
// Members must not run with --unsafe-no-fsync: the store cannot see that
// setting, and with it an acknowledged transition can be lost when the
// machines of a quorum fail together.
//
// Errors: a failed read or a transaction the server refused as too large
// apply nothing (store.ErrNotApplied); any other failed transaction's
// outcome is unknown (the leader may have committed it before failing),
// which the protocol retries safely.
//
// Batches (store.TokenBatcher, the engine's plain path with Config.Batch):
// a batch's reads are one read-only transaction (one round trip), and its
// transitions are transactions of their own, as Transition runs them, in
// flight together so that the cluster commits them in shared raft rounds
// (BenchmarkBatches: 16 reads and 16 transitions about 3.3 times faster
// than one after another).
//
// The store implements store.RootCreator, so it can be a part of a store
// split by conversation (backend/split): one etcd cluster per part.
package etcd
