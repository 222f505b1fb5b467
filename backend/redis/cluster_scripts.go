package redis

import goredis "github.com/redis/go-redis/v9"

// The scripts of cluster mode (see doc.go, "Redis Cluster"). Each runs in
// one hash slot and receives its keys in KEYS, so the cluster routes it to
// the node that owns them: the lookup and index scripts touch one key, the
// token scripts only keys tagged {<conv>}. The one exception is
// listConversationScript, which derives token keys from the ids in the
// conversation's set; they carry the set's tag, so they are in its slot.

// errStalePrefix starts the error with which clusterCreateScript refuses
// a creation whose claims are older than claimTTL (see cluster.go).
const errStalePrefix = "BATON_STALE"

// claimScript: KEYS = the lookup of an id (a set); ARGV = "<conv>
// <nonce>". Adds the value to the set unless the set holds a member of
// another conversation (all its members share one conversation), which it
// returns as "other <member>" instead; returns "ok" if it added it.
var claimScript = `#!lua
local v = redis.call('SRANDMEMBER', KEYS[1])
if v and string.sub(v, 1, 32) ~= string.sub(ARGV[1], 1, 32) then
	return 'other ' .. v
end
redis.call('SADD', KEYS[1], ARGV[1])
return 'ok'
`

// clusterCreateScript: KEYS = the conversation's set, the parent's token
// key if ARGV[1] is not "", then the children's token keys. ARGV = parent
// id or "", conversation, nonce, nonce time (µs), claimTTL (µs), then
// tokenFields strings per child. Returns {0} if the parent is not live,
// {1} for an Issue, {1, dest, expires, nonce} of the consumed parent, or
// an errExistsPrefix or errStalePrefix error (having applied nothing).
var clusterCreateScript = goredis.NewScript(`#!lua
local parent, nonce = ARGV[1], ARGV[3]
local first = 2
if parent ~= '' then
	first = 3
	if redis.call('EXISTS', KEYS[2]) == 0 then return {0} end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
if now - tonumber(ARGV[4]) > tonumber(ARGV[5]) then
	return redis.error_reply('` + errStalePrefix + ` claims drawn too long ago')
end
for k = first, #KEYS do
	if redis.call('EXISTS', KEYS[k]) == 1 then
		return redis.error_reply('` + errExistsPrefix + ` ' .. ARGV[6 + (k - first) * 8])
	end
end
local out = {1}
if parent ~= '' then
	local f = redis.call('HMGET', KEYS[2], 'dest', 'expires', 'nonce')
	redis.call('DEL', KEYS[2])
	redis.call('ZREM', KEYS[1], parent)
	out = {1, f[1] or '', f[2] or '', f[3] or ''}
end
for k = first, #KEYS do
	local i = 6 + (k - first) * 8
	redis.call('HSET', KEYS[k],
		'cause', ARGV[i+2], 'dest', ARGV[i+3], 'type', ARGV[i+4], 'digest', ARGV[i+5],
		'created', ARGV[i+6], 'expires', ARGV[i+7], 'nonce', nonce)
	redis.call('ZADD', KEYS[1], 0, ARGV[i])
end
return out
`)

// clusterGetScript: KEYS = token keys of one conversation; ARGV =
// conversation, then per key its id and the nonce it must carry ("" for
// any). Returns per key the token's tokenFields, or 0 if it is not live
// (or carries another nonce: the index entry that named it is stale).
var clusterGetScript = goredis.NewScript(`#!lua flags=no-writes
local out = {}
for k = 1, #KEYS do
	local id, want = ARGV[2*k], ARGV[2*k+1]
	local f = redis.call('HMGET', KEYS[k], 'cause', 'dest', 'type', 'digest', 'created', 'expires', 'nonce')
	if f[2] and (want == '' or f[7] == want) then
		out[k] = {id, ARGV[1], f[1] or '', f[2], f[3] or '', f[4] or '', f[5] or '', f[6] or ''}
	else
		out[k] = 0
	end
end
return out
`)

// clusterListConversationScript: KEYS = the conversation's set; ARGV =
// token key prefix of the conversation, conversation, ZRANGEBYLEX min,
// limit. Returns a list of tokenFields lists.
var clusterListConversationScript = goredis.NewScript(`#!lua flags=no-writes
local ids = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[3], '+', 'LIMIT', 0, tonumber(ARGV[4]))
local out = {}
for _, id in ipairs(ids) do
	local f = redis.call('HMGET', ARGV[1] .. id, 'cause', 'dest', 'type', 'digest', 'created', 'expires')
	if f[2] then out[#out+1] = {id, ARGV[2], f[1] or '', f[2], f[3] or '', f[4] or '', f[5] or '', f[6] or ''} end
end
return out
`)

// clusterClaimScript: KEYS = a token key; ARGV = id, conversation, now
// (µs). Clears the token's expiry if it is live and not expired at now.
// Returns {0} if it is not live, {1, tokenFields} if it had no expiry,
// {1, tokenFields, nonce} after clearing one, {2, tokenFields} if it
// expired.
var clusterClaimScript = goredis.NewScript(`#!lua
local f = redis.call('HMGET', KEYS[1], 'cause', 'dest', 'type', 'digest', 'created', 'expires', 'nonce')
if not f[2] then return {0} end
local t = {ARGV[1], ARGV[2], f[1] or '', f[2], f[3] or '', f[4] or '', f[5] or '', f[6] or ''}
if t[8] == '' then return {1, t} end
if tonumber(ARGV[3]) >= tonumber(t[8]) then return {2, t} end
redis.call('HSET', KEYS[1], 'expires', '')
t[8] = ''
return {1, t, f[7] or ''}
`)

// clusterExpireScript: KEYS = the conversation's set, a token key; ARGV =
// id, nonce, before (µs). Deletes the token if it carries that nonce and
// expires before the given time. Returns {1, dest} if it deleted it,
// {0, 1} if the token with that nonce is live and not expired, {0, 0} if
// no token carries that nonce.
var clusterExpireScript = goredis.NewScript(`#!lua
local f = redis.call('HMGET', KEYS[2], 'expires', 'nonce', 'dest')
if (not f[2]) or f[2] ~= ARGV[2] then return {0, 0} end
if (not f[1]) or f[1] == '' or tonumber(f[1]) >= tonumber(ARGV[3]) then return {0, 1} end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[1], ARGV[1])
return {1, f[3] or ''}
`)
