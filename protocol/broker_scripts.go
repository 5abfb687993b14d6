package protocol

import "github.com/gomodule/redigo/redis"

// This file is the index of every Redis write the package makes. Each
// state change that must be atomic is one of the Lua scripts below, so
// that the whole life of a message and of a result can be read in one
// place; the rest are MULTI blocks in broker.go and single commands, all
// listed here.
//
// Lua scripts (this file), and who runs them:
//
//	popAndHold         fetch (Consumer.FetchN): pop up to N waiting
//	                   messages and hold them in unacked/unacked_index
//	holdPopped         fetch: hold a message BRPOP handed over
//	commitBatch        group commit (Broker.Commit): start (count +
//	                   STARTED), finish (result + ack), publish events, for
//	                   many tasks at once
//	poisonHeld         Broker.Poison: a message that killed or hung N
//	                   workers: FAILURE + dead letter instead of running it
//	storeAndAckScript  Broker.storeAndAck: result, then ack
//	forwardHeld        Broker.Forward: publish to another queue and ack,
//	                   only while still held
//	resultStoreScript  Backend.Store: SET(EX) + PUBLISH of
//	                   celery-task-meta-<id>, never over a SUCCESS
//	chordPartScript    Backend.ChordPartReturn: join a chord part, return
//	                   every part when the chord is complete
//	touchLeases        Broker.Touch: lease refresh, moving scores only
//	                   forward
//	releaseMutex       Broker.RestoreExpired: drop unacked_mutex if ours
//
// MULTI/EXEC blocks (publish.go, then broker.go):
//
//	Broker.PublishWith  SADD the queue's binding (first publish to it),
//	                    the caller's extra Commands (the gateway's owner
//	                    key) and LPUSH of the message; Publish uses it,
//	                    and a plain LPUSH once the queue is declared and
//	                    there is nothing else to write. Publishes that
//	                    queue behind busy lanes are pipelined together,
//	                    each its own block
//	Broker.Ack          ZREM unacked_index, HDEL unacked, DEL the count
//	restoreByTag        under WATCH unacked: ZREM/HDEL, push the payload
//	                    back (Restore, RestoreStarted: RPUSH; requeue:
//	                    LPUSH) or dead-letter an unreadable one, DECR the
//	                    count for RestoreStarted
//	Broker.DeadLetter   ZREM/HDEL if held, LPUSH the dead-letter list, DEL
//	                    the count
//
// Single commands:
//
//	broker.go    DeclareQueue SADD binding; RestoreExpired SET NX PX unacked_mutex;
//	             restoreByTag ZREM of an index entry without a payload
//	consumer.go  BRPOP of one message (then holdPopped); pushBack RPUSH of
//	             a popped message that could not be held
//	backend.go   forget DEL celery-task-meta-<id>
//	chord.go     ChordCleanup DEL of the chord's .j, .t and .s keys
//	events.go    EventDispatcher.Send PUBLISH on the celeryev channel
//	pidbox.go    Mailbox.Run SADD/SREM of the node's pidbox binding;
//	             replies LPUSHed onto the caller's reply queue
//	control.go   Control.Broadcast SADD of the reply binding, PUBLISH of
//	             the request, BRPOP of the replies, then DEL of the reply
//	             queue and SREM of the binding
//
// Key and channel names are built in keys.go.
//
// Delivery counts (poison-message detection) live in string keys
// "<prefix>celery.deliveries.<delivery tag>" with a TTL: one per message
// that started on a Go worker and has not finished yet. Only the start of
// a handler increments it, never the fetch, so messages that were merely
// prefetched next to a message that killed its worker are not blamed.

// luaHold defines hold(v, queue) for the fetch scripts: it reads the
// envelope's delivery tag, delivery_info and redelivered flag, records it
// in unacked/unacked_index (kombu's QoS.append) and returns the tag and
// the number of earlier unfinished starts of this message. The stored
// payload is the original string, untouched, so big ints keep their
// precision.
//
// Two readers find those fields. fields_any decodes any layout with
// cjson, which cost ~5 us of the ~11 us a held message costs Redis, and
// Redis's CPU is what bounds a busy worker's drain. fields_std reads the
// layout Celery and Encode write, in which properties ends the envelope,
// its only nested object is delivery_info and delivery_tag is its last
// member, with plain string searches, and returns nil for anything else.
// It answers only where valid JSON allows no other reading: a quote after
// a comma, a brace or a space opens a key, and the object that closes
// just before the envelope's own last brace, with no other brace after
// its one nested object, is the top-level properties. (An envelope that
// is not JSON but has that tail is held, and the consumer's decoder
// dead-letters it a moment later, as it does any envelope cjson read but
// Decode refused.) Any text ending in vered" (redelivered", discovered")
// makes it read as redelivered: that costs only a GET of a count that may
// not exist. The searches look for a key without its opening quote, whose
// first letter memchr finds far less often than a quote, and only in the
// envelope's tail where they can. TestHoldFieldsAgree checks the two
// readers against each other. A held message costs Redis ~7.2 us instead
// of ~10.4.
//
// An envelope that cannot be held (not a JSON object cjson can read, or no
// string delivery tag) goes to the dead-letter list in the same step: once
// popped, it must be somewhere in Redis; hold then returns an empty tag.
//
// Only a redelivered message (kombu's restore sets the flag) can have a
// count, so a fresh one costs no extra read.
//
// The caller assigns the locals declared first (Redis 7 forbids globals).
const luaHold = `
local unacked, index, dead, now, nowISO, cprefix
local function opens(s, at)
  if at < 2 then return false end
  local b = string.byte(s, at - 1)
  return b == 44 or b == 123 or b == 32
end
local function last(s, needle, from)
  local at
  while true do
    local j = string.find(s, needle, from, true)
    if not j then return at end
    at, from = j, j + 1
  end
end
local function fields_std(v, queue)
  local n = #v
  if string.byte(v, 1) ~= 123 or string.byte(v, n) ~= 125 or string.byte(v, n - 1) ~= 125 then return nil end
  local t = last(v, 'delivery_tag"', math.max(1, n - 160))
  if not t then return nil end
  t = t - 1
  if not opens(v, t) then return nil end
  local tag = string.match(v, '^"delivery_tag": ?"([^"\\]+)"}}$', t)
  if not tag then return nil end
  local p = last(v, 'properties"', math.max(1, n - 1024))
  if not p then return nil end
  p = p - 1
  if not opens(v, p) then return nil end
  local _, b0 = string.find(v, '^"properties": ?{', p)
  if not b0 then return nil end
  local b1 = string.find(v, '{', b0 + 1, true)
  local c1 = string.find(v, '}', b0 + 1, true)
  if not b1 or not c1 or c1 < b1 or string.find(v, '{', b1 + 1, true) or string.find(v, '}', c1 + 1, true) ~= n - 1 then return nil end
  local k = b1 - 17
  if string.sub(v, k, b1 - 1) ~= '"delivery_info": ' then
    k = b1 - 16
    if string.sub(v, k, b1 - 1) ~= '"delivery_info":' then return nil end
  end
  if not opens(v, k) then return nil end
  local _, e, ex, rk = string.find(v, '^{"exchange": ?"([^"\\]*)", ?"routing_key": ?"([^"\\]*)"', b1)
  if not e then return nil end
  if e + 1 ~= c1 and not string.find(string.sub(v, e + 1, c1 - 1), '^, ?"redelivered": ?%a+$') then return nil end
  if string.find(v, '"delivery_info"', c1, true) then return nil end
  local rkj = '"' .. rk .. '"'
  if rk == '' then rkj = cjson.encode(queue) end
  return tag, '"' .. ex .. '"', rkj, string.find(v, 'vered"', 1, true) ~= nil
end
local function fields_any(v, queue)
  local ok, env = pcall(cjson.decode, v)
  local tag, ex, rk = nil, '', queue
  local redelivered = false
  local reason = 'invalid-json: the envelope is not a JSON object'
  if ok and type(env) == 'table' then
    reason = 'no-delivery-tag: properties.delivery_tag is missing or not a non-empty string'
    if type(env.properties) == 'table' then
      tag = env.properties.delivery_tag
      local di = env.properties.delivery_info
      if type(di) == 'table' then
        if type(di.exchange) == 'string' then ex = di.exchange end
        if type(di.routing_key) == 'string' and di.routing_key ~= '' then rk = di.routing_key end
        if di.redelivered == true then redelivered = true end
      end
    end
    if type(env.headers) == 'table' and env.headers.redelivered == true then redelivered = true end
  end
  if type(tag) ~= 'string' or tag == '' then return nil, nil, nil, false, reason end
  return tag, cjson.encode(ex), cjson.encode(rk), redelivered
end
local function hold(v, queue)
  local tag, exj, rkj, redelivered, reason = fields_std(v, queue)
  if not tag then
    tag, exj, rkj, redelivered, reason = fields_any(v, queue)
  end
  if not tag then
    redis.call('LPUSH', dead, cjson.encode({reason = reason, queue = queue, time = nowISO, raw = v}))
    return '', 0
  end
  redis.call('ZADD', index, now, tag)
  redis.call('HSET', unacked, tag, '[' .. v .. ', ' .. exj .. ', ' .. rkj .. ']')
  local starts = 0
  if redelivered then
    starts = tonumber(redis.call('GET', cprefix .. tag) or '0') or 0
    if starts < 0 then starts = 0 end
  end
  return tag, starts
end
`

// popAndHold is the fast path of Consumer.FetchN: it pops up to max waiting
// messages in kombu's order (priority-major; round-robin across queues
// within a band, rotating the served queue to the end after every message,
// as a sequence of kombu fetches would) and holds each in the same atomic
// step, so a worker killed at any instant never loses a message it popped
// (kombu's BRPOP-then-MULTI has a small window where it does), and a batch
// costs one round trip.
//
// KEYS: the candidate lists, band-major (nqueues lists per band), then
// unacked, unacked_index and the dead-letter list.
// ARGV: now (score), now (dead-letter time), max, count key prefix,
// nqueues, then the logical queue name of each queue in cycle order.
// Returns a flat array: {queue index (1-based), payload, tag, starts} per
// message; tag is "" when the envelope was dead-lettered instead of held.
var popAndHold = redis.NewScript(-1, luaHold+`
local nq = tonumber(ARGV[5])
local nlists = #KEYS - 3
local nbands = nlists / nq
unacked, index, dead = KEYS[nlists + 1], KEYS[nlists + 2], KEYS[nlists + 3]
now, nowISO, cprefix = ARGV[1], ARGV[2], ARGV[4]
local max = tonumber(ARGV[3])
local order = {}
for q = 1, nq do order[q] = q end
local out = {}
local taken = 0
while taken < max do
  local hit = false
  for b = 1, nbands do
    for oi = 1, nq do
      local q = order[oi]
      local v = redis.call('RPOP', KEYS[(b - 1) * nq + q])
      if v then
        local tag, starts = hold(v, ARGV[5 + q])
        out[#out + 1] = q
        out[#out + 1] = v
        out[#out + 1] = tag
        out[#out + 1] = starts
        table.remove(order, oi)
        order[#order + 1] = q
        hit = true
        break
      end
    end
    if hit then break end
  end
  if not hit then break end
  taken = taken + 1
end
return out`)

// holdPopped holds one message BRPOP handed over (the blocking path of a
// fetch, taken only when every list was empty).
//
// KEYS: unacked, unacked_index, the dead-letter list.
// ARGV: now, now (ISO), count key prefix, payload, logical queue.
// Returns {tag, starts}; tag "" when the envelope was dead-lettered.
var holdPopped = redis.NewScript(3, luaHold+`
unacked, index, dead = KEYS[1], KEYS[2], KEYS[3]
now, nowISO, cprefix = ARGV[1], ARGV[2], ARGV[3]
local tag, starts = hold(ARGV[4], ARGV[5])
return {tag, starts}`)

// commitBatch applies a batch of task state changes in one atomic step
// (group commit). Ops, six ARGV each after the two fixed ones:
//
//	"s" start:   when the message is still held, count the start (SET its
//	             delivery count to the given value, with the TTL) and
//	             store STARTED (when a key is given). Returns 1 held, 0
//	             not held.
//	"f" finish:  when held: store the result (when a key is given), ack
//	             (ZREM + HDEL) and drop the delivery count; returns 1.
//	             When not held but its delivery count exists, another
//	             consumer restored it after this worker started it (a
//	             visibility timeout shorter than the task): nothing is
//	             written, the new owner's run writes the result; returns
//	             2. When neither exists Redis lost it (restarted empty):
//	             the result is stored anyway, since nobody else has the
//	             message; returns 0.
//	"p" publish: PUBLISH meta on channel key (task events); returns 1.
//
// The count is SET rather than INCRed: only the holder of a message
// starts it, and it read the count when it fetched the message, so one
// command does what INCR + EXPIRE would.
//
// KEYS: unacked, unacked_index. ARGV: count key prefix, count TTL
// seconds, then per op: kind, delivery tag, result key or channel, meta
// JSON, result TTL seconds (0: no expiry), the start count to record (for
// a finish: 0 when no start was ever counted, which skips the DEL).
var commitBatch = redis.NewScript(2, luaStoreResult+`
local unacked, index = KEYS[1], KEYS[2]
local cprefix, cttl = ARGV[1], ARGV[2]
local out = {}
for i = 3, #ARGV, 6 do
  local kind, tag, key, meta, ttl = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local st = 1
  if kind == 'p' then
    redis.call('PUBLISH', key, meta)
  elseif kind == 's' then
    if redis.call('HEXISTS', unacked, tag) == 1 then
      redis.call('SET', cprefix .. tag, ARGV[i + 5], 'EX', cttl)
      if key ~= '' then store_result(key, meta, ttl) end
    else
      st = 0
    end
  elseif redis.call('ZREM', index, tag) == 1 then
    if key ~= '' then store_result(key, meta, ttl) end
    redis.call('HDEL', unacked, tag)
    if ARGV[i + 5] ~= '0' then redis.call('DEL', cprefix .. tag) end
  elseif redis.call('EXISTS', cprefix .. tag) == 1 then
    st = 2
  else
    if key ~= '' then store_result(key, meta, ttl) end
    redis.call('HDEL', unacked, tag)
    st = 0
  end
  out[#out + 1] = st
end
return out`)

// poisonHeld fails a poison message instead of running it: when it is
// still held, store the FAILURE, move the envelope to the dead-letter list
// with its reason, ack it and drop its delivery count, all at once.
//
// KEYS: unacked, unacked_index, dead-letter list, result key (or "" for
// none), delivery count key. ARGV: tag, dead-letter entry, meta, result
// TTL. Returns 1, or 0 when the message was no longer held.
var poisonHeld = redis.NewScript(5, luaStoreResult+`
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
if KEYS[4] ~= '' then store_result(KEYS[4], ARGV[3], ARGV[4]) end
redis.call('LPUSH', KEYS[3], ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[5])
return 1`)

// resultStoreScript is RedisBackend._store_result + _set in one atomic step: keep
// a stored SUCCESS (Celery reads the current meta first and returns without
// writing), else SET/SETEX and PUBLISH the same bytes on the key's channel.
// Every Celery writer puts "status" first, so a prefix match avoids decoding
// a large stored result; cjson is the fallback for other layouts.
//
// KEYS[1] key; ARGV[1] meta JSON; ARGV[2] TTL seconds (0: no expiry).
// Returns 1 when stored, 0 when a SUCCESS was kept.
var resultStoreScript = redis.NewScript(1, luaStoreResult+`
return store_result(KEYS[1], ARGV[1], ARGV[2])
`)

// luaStoreResult defines store_result(key, meta, ttl) for the scripts that
// write a result: the store script above and Broker.storeAndAck.
const luaStoreResult = `
local function store_result(key, meta, ttl)
  local cur = redis.call('GET', key)
  if cur then
    local status = string.match(cur, '^%s*{%s*"status"%s*:%s*"([^"]*)"')
    if status == nil then
      local ok, m = pcall(cjson.decode, cur)
      if ok and type(m) == 'table' then status = m['status'] end
    end
    if status == 'SUCCESS' then return 0 end
  end
  ttl = tonumber(ttl)
  if ttl > 0 then
    redis.call('SETEX', key, ttl, meta)
  else
    redis.call('SET', key, meta)
  end
  redis.call('PUBLISH', key, meta)
  return 1
end
`

// chordPartScript is RedisBackend.on_chord_part_return's pipeline (Celery
// 5.2, result_chord_ordered=True) as one atomic step, plus the ZRANGE the
// completing worker does next: record the part in the .j sorted set
// scored by its group index, count the parts, read the .t adjustment and
// the .s size, refresh the three TTLs, and when the count reaches
// size+adjustment return every part in order. Python does the ZRANGE in a
// second round trip; doing it here changes nothing a peer can observe.
//
// The keys are not deleted here: the caller deletes them (ChordCleanup)
// only after the body is sent, so a worker killed in between leaves the
// chord complete, and the redelivered part (same member) completes it
// again.
//
// KEYS[1] .j, KEYS[2] .t, KEYS[3] .s; ARGV[1] member, ARGV[2] score,
// ARGV[3] TTL seconds (0: none).
// Returns {0, ready, total} while incomplete (total -1: no .s, the chord
// was never sized or is already joined) or {1, ready, total, parts}.
var chordPartScript = redis.NewScript(3, `
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
local ready = redis.call('ZCOUNT', KEYS[1], '-inf', '+inf')
local diff = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
local size = redis.call('GET', KEYS[3])
local ttl = tonumber(ARGV[3])
if ttl > 0 then
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
  redis.call('EXPIRE', KEYS[3], ttl)
end
if not size or size == '' then return {0, ready, -1} end
local total = (tonumber(size) or 0) + diff
if ready ~= total then return {0, ready, total} end
return {1, ready, total, redis.call('ZRANGE', KEYS[1], 0, -1)}
`)

// storeAndAckScript is resultStoreScript followed by Broker.Ack, in one
// atomic step: the result is written (or a stored SUCCESS kept) before the
// message leaves unacked, and a failure in the store stops the script
// before the ack, so late-ack semantics hold with one round trip instead of
// two.
//
// KEYS[1] result key, KEYS[2] unacked_index, KEYS[3] unacked, KEYS[4] the
// delivery count; ARGV[1] meta
// JSON, ARGV[2] TTL seconds (0: no expiry), ARGV[3] delivery tag.
// Returns {stored, held}: stored 0 when a SUCCESS was kept, held 0 when the
// message was no longer in unacked_index.
var storeAndAckScript = redis.NewScript(4, luaStoreResult+`
local stored = store_result(KEYS[1], ARGV[1], ARGV[2])
local held = redis.call('ZREM', KEYS[2], ARGV[3])
redis.call('HDEL', KEYS[3], ARGV[3])
redis.call('DEL', KEYS[4])
return {stored, held}
`)

// forwardHeld publishes a new envelope and drops the held original in one
// step, only while the original is still held: a retry after a lost reply,
// or a message another process already restored, publishes nothing.
var forwardHeld = redis.NewScript(5, `
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('SADD', KEYS[4], ARGV[3])
redis.call('LPUSH', KEYS[3], ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[5])
return 1`)

// touchLeases is Broker.Touch: it moves each held tag's lease score
// forward to now, never back. A refresh delayed in the network (sent
// before a partition, delivered after it) would otherwise write its old
// time over the lease of the worker that has held the message since, and
// make a restorer take that worker's message from under it. (ZADD GT does
// this in one command, but only from Redis 6.2.)
//
// KEYS[1] unacked_index; ARGV[1] now (score), then the tags.
var touchLeases = redis.NewScript(1, `
local now = tonumber(ARGV[1])
for i = 2, #ARGV do
  local cur = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if cur and tonumber(cur) < now then
    redis.call('ZADD', KEYS[1], 'XX', ARGV[1], ARGV[i])
  end
end
return 0`)

// releaseMutex deletes the mutex only if it still holds our token, like
// redis-py's Lock.release.
var releaseMutex = redis.NewScript(1, `
if redis.call("GET", KEYS[1]) == ARGV[1] then
  return redis.call("DEL", KEYS[1])
end
return 0`)
