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
// KEYS: the candidate lists in order, then unacked and unacked_index.
// ARGV: now (score), then the logical queue name of each candidate list.
// Returns nil when every list is empty, else {index, payload, held} where
// held is 0 for an envelope that cannot be held (not a JSON object or no
// delivery tag): the caller dead-letters it.
var popAndHold = redis.NewScript(-1, `
local nlists = #KEYS - 2
local unacked, index = KEYS[nlists + 1], KEYS[nlists + 2]
for i = 1, nlists do
  local v = redis.call('RPOP', KEYS[i])
  if v then
    local ok, env = pcall(cjson.decode, v)
    local tag, ex, rk = nil, '', ARGV[i + 1]
    if ok and type(env) == 'table' and type(env.properties) == 'table' then
      tag = env.properties.delivery_tag
      local di = env.properties.delivery_info
      if type(di) == 'table' then
        if type(di.exchange) == 'string' then ex = di.exchange end
        if type(di.routing_key) == 'string' and di.routing_key ~= '' then rk = di.routing_key end
      end
    end
    if type(tag) ~= 'string' or tag == '' then
      return {i, v, 0}
    end
    redis.call('ZADD', index, ARGV[1], tag)
    redis.call('HSET', unacked, tag, '[' .. v .. ', ' .. cjson.encode(ex) .. ', ' .. cjson.encode(rk) .. ']')
    return {i, v, 1}
  end
end
return nil`)
