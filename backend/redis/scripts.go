package redis

import goredis "github.com/redis/go-redis/v9"

// The scripts run atomically on the server: no other command runs between
// their first and last call. Redis does not roll a script back, so every
// script that writes first checks everything that could make it refuse
// and only then writes; after the checks no call can fail on keys that
// only this store writes.
//
// The "#!lua" line (Redis 7.0+) makes the server check out-of-memory,
// read-only replicas and the like once, before the script starts, instead
// of at its first write: a script is either refused whole or runs to the end.
//
// These are the standalone scripts. They derive key names from ARGV[1]
// (the prefix) and from a token's lookup key, rather than receiving them
// all in KEYS, so that one script spans conversations. A standalone server
// allows this; a cluster does not, so cluster mode uses the scripts of
// cluster_scripts.go instead.

// Every token travels between Go and Lua as tokenFields strings, in this
// order: id, conversation, causation, destination, type, digest, created,
// expires (ids and digest as hex, times as decimal unix microseconds, ""
// for a zero causation or time).
const tokenFields = 8

// errExistsPrefix starts the error a script returns when a token it should
// create already exists.
const errExistsPrefix = "BATON_EXISTS"

const luaLibrary = `
local P = ARGV[1]
local function tokenKey(conv, id) return P .. ':{' .. conv .. '}:t:' .. id end
local function convKey(conv) return P .. ':{' .. conv .. '}:conv' end
local function lookupKey(id) return P .. ':id:' .. id end
local function destKey(dest) return P .. ':dest:' .. dest end
local expKey = P .. ':exp'

local function orEmpty(v) if v then return v end return '' end

-- readToken returns the tokenFields strings of a live token, or nil.
local function readToken(id)
	local conv = redis.call('GET', lookupKey(id))
	if not conv then return nil end
	local f = redis.call('HMGET', tokenKey(conv, id), 'cause', 'dest', 'type', 'digest', 'created', 'expires')
	return {id, conv, orEmpty(f[1]), orEmpty(f[2]), orEmpty(f[3]), orEmpty(f[4]), orEmpty(f[5]), orEmpty(f[6])}
end

-- deleteToken deletes a token and its index entries. conv is the token's
-- conversation if the caller has read it already, else nil.
local function deleteToken(id, conv)
	conv = conv or redis.call('GET', lookupKey(id))
	if not conv then return 0 end
	local key = tokenKey(conv, id)
	local f = redis.call('HMGET', key, 'dest', 'expires')
	redis.call('DEL', key, lookupKey(id))
	redis.call('ZREM', convKey(conv), id)
	if f[1] then redis.call('ZREM', destKey(f[1]), id) end
	if f[2] and f[2] ~= '' then redis.call('ZREM', expKey, id) end
	return 1
end

-- createToken writes the token whose tokenFields strings start at ARGV[i].
local function createToken(i)
	local id, conv, dest, expires = ARGV[i], ARGV[i+1], ARGV[i+3], ARGV[i+7]
	redis.call('HSET', tokenKey(conv, id),
		'cause', ARGV[i+2], 'dest', dest, 'type', ARGV[i+4], 'digest', ARGV[i+5],
		'created', ARGV[i+6], 'expires', expires)
	redis.call('SET', lookupKey(id), conv)
	redis.call('ZADD', convKey(conv), 0, id)
	redis.call('ZADD', destKey(dest), 0, id)
	if expires ~= '' then redis.call('ZADD', expKey, expires, id) end
end

-- firstExisting returns the id of the first token from ARGV[from] on that
-- is already live, or nil.
local function firstExisting(from)
	for i = from, #ARGV, 8 do
		if redis.call('EXISTS', lookupKey(ARGV[i])) == 1 then return ARGV[i] end
	end
	return nil
end
`

func newScript(flags, body string) *goredis.Script {
	return goredis.NewScript("#!lua" + flags + "\n" + luaLibrary + body)
}

// transitionScript: ARGV = prefix, parent id, then the children's
// tokenFields. Returns 1 if it consumed the parent, 0 if the parent was not
// live, or an errExistsPrefix error (having applied nothing).
var transitionScript = newScript("", `
local parent = ARGV[2]
local conv = redis.call('GET', lookupKey(parent))
if not conv then return 0 end
local existing = firstExisting(3)
if existing then return redis.error_reply('`+errExistsPrefix+` ' .. existing) end
deleteToken(parent, conv)
for i = 3, #ARGV, 8 do createToken(i) end
return 1
`)

// issueScript: ARGV = prefix, then one token's tokenFields. Returns 1, or
// an errExistsPrefix error.
var issueScript = newScript("", `
local existing = firstExisting(2)
if existing then return redis.error_reply('`+errExistsPrefix+` ' .. existing) end
createToken(2)
return 1
`)

// claimRootScript: ARGV = prefix, id, now (µs). Clears the expiry of a
// live token that has not expired at now and takes it out of the expiry
// index. Returns {0} if the token is not live, {1, tokenFields} after the
// claim, {2, tokenFields} if it expired.
var claimRootScript = newScript("", `
local id = ARGV[2]
local t = readToken(id)
if not t then return {0} end
if t[8] ~= '' then
	if tonumber(ARGV[3]) >= tonumber(t[8]) then return {2, t} end
	redis.call('HSET', tokenKey(t[2], id), 'expires', '')
	redis.call('ZREM', expKey, id)
	t[8] = ''
end
return {1, t}
`)

// getScript: ARGV = prefix, id. Returns the token's tokenFields or nil.
var getScript = newScript(" flags=no-writes", `
return readToken(ARGV[2])
`)

// listConversationScript: ARGV = prefix, conversation, ZRANGEBYLEX min,
// limit. Returns a list of tokenFields lists.
var listConversationScript = newScript(" flags=no-writes", `
local ids = redis.call('ZRANGEBYLEX', convKey(ARGV[2]), ARGV[3], '+', 'LIMIT', 0, tonumber(ARGV[4]))
local out = {}
for _, id in ipairs(ids) do
	local t = readToken(id)
	if t then out[#out+1] = t end
end
return out
`)

// listDestinationScript: ARGV = prefix, destination, ZRANGEBYLEX min,
// limit. Returns a list of tokenFields lists.
var listDestinationScript = newScript(" flags=no-writes", `
local ids = redis.call('ZRANGEBYLEX', destKey(ARGV[2]), ARGV[3], '+', 'LIMIT', 0, tonumber(ARGV[4]))
local out = {}
for _, id in ipairs(ids) do
	local t = readToken(id)
	if t then out[#out+1] = t end
end
return out
`)

// expireScript: ARGV = prefix, before (µs), limit. Deletes up to limit
// tokens whose expiry is before the given time, earliest first, and
// returns how many it deleted.
var expireScript = newScript("", `
local ids = redis.call('ZRANGEBYSCORE', expKey, '-inf', '(' .. ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
local n = 0
for _, id in ipairs(ids) do
	if deleteToken(id, nil) == 1 then n = n + 1 else redis.call('ZREM', expKey, id) end
end
return n
`)
