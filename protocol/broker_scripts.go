package protocol

import "github.com/gomodule/redigo/redis"

// popAndHold is the fast path of Consumer.Fetch: it pops the first waiting
// message in kombu's order and records it in unacked/unacked_index in the
// same atomic step, so a worker killed at any instant never loses a message
// it popped (kombu's BRPOP-then-MULTI has a small window where it does).
// It reads the envelope with cjson only to find the delivery tag and the
// delivery_info; the stored payload is the original string, untouched, so
// big ints keep their precision.
//
// An envelope that cannot be held (not a JSON object cjson can read, or no
// string delivery tag) goes to the dead-letter list in the same step, for
// the same reason: once popped, it must be somewhere in Redis.
//
// KEYS: the candidate lists in order, then unacked, unacked_index and the
// dead-letter list.
// ARGV: now (score), now (dead-letter time), then the logical queue name of
// each candidate list.
// Returns nil when every list is empty, else {index, payload, tag}; tag is
// "" when the envelope was dead-lettered instead of held.
var popAndHold = redis.NewScript(-1, `
local nlists = #KEYS - 3
local unacked, index, dead = KEYS[nlists + 1], KEYS[nlists + 2], KEYS[nlists + 3]
for i = 1, nlists do
  local v = redis.call('RPOP', KEYS[i])
  if v then
    local queue = ARGV[i + 2]
    local ok, env = pcall(cjson.decode, v)
    local tag, ex, rk = nil, '', queue
    local reason = 'invalid-json: the envelope is not a JSON object'
    if ok and type(env) == 'table' then
      reason = 'no-delivery-tag: properties.delivery_tag is missing or not a non-empty string'
      if type(env.properties) == 'table' then
        tag = env.properties.delivery_tag
        local di = env.properties.delivery_info
        if type(di) == 'table' then
          if type(di.exchange) == 'string' then ex = di.exchange end
          if type(di.routing_key) == 'string' and di.routing_key ~= '' then rk = di.routing_key end
        end
      end
    end
    if type(tag) ~= 'string' or tag == '' then
      redis.call('LPUSH', dead, cjson.encode({reason = reason, queue = queue, time = ARGV[2], raw = v}))
      return {i, v, ''}
    end
    redis.call('ZADD', index, ARGV[1], tag)
    redis.call('HSET', unacked, tag, '[' .. v .. ', ' .. cjson.encode(ex) .. ', ' .. cjson.encode(rk) .. ']')
    return {i, v, tag}
  end
end
return nil`)
