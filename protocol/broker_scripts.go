package protocol

import "github.com/gomodule/redigo/redis"

// Every Redis state change of a delivery is one of the Lua scripts in this
// file (or a MULTI in broker.go), so that the whole life of a message in
// Redis can be read in one place:
//
//	popAndHold   fetch: pop up to N waiting messages and hold them
//	holdPopped   fetch: hold a message BRPOP handed over
//	commitBatch  group commit: start (count + STARTED), finish (result +
//	             ack), publish events, for many tasks at once
//	poisonHeld   a message that killed or hung N workers: FAILURE + dead
//	             letter instead of running it
//
// Delivery counts (poison-message detection) live in string keys
// "<prefix>celery.deliveries.<delivery tag>" with a TTL: one per message
// that started on a Go worker and has not finished yet. Only the start of
// a handler increments it, never the fetch, so messages that were merely
// prefetched next to a message that killed its worker are not blamed.

// luaHold defines hold(v, queue) for the fetch scripts: it reads the
// envelope with cjson only to find the delivery tag, the delivery_info and
// the redelivered flag, records it in unacked/unacked_index (kombu's
// QoS.append) and returns the tag and the number of earlier unfinished
// starts of this message. The stored payload is the original string,
// untouched, so big ints keep their precision.
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
local function hold(v, queue)
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
  if type(tag) ~= 'string' or tag == '' then
    redis.call('LPUSH', dead, cjson.encode({reason = reason, queue = queue, time = nowISO, raw = v}))
    return '', 0
  end
  redis.call('ZADD', index, now, tag)
  redis.call('HSET', unacked, tag, '[' .. v .. ', ' .. cjson.encode(ex) .. ', ' .. cjson.encode(rk) .. ']')
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
// JSON, result TTL seconds (0: no expiry), the start count to record.
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
    redis.call('DEL', cprefix .. tag)
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
