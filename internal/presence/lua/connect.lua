
-- connect: one more connection of a user, unless the user is at the deployment's cap.
-- KEYS[1]: the user's presence hash (field per connection: '<node>/<conn>'); in single-node
-- Redis also KEYS[2] the events stream and KEYS[3] this node's user set (else the caller
-- appends the events and updates the set).
-- ARGV: field, cap, user, node. Returns {allowed (1/0), events…}. Idempotent: a retry of a
-- connect that ran is allowed again and changes nothing.
local key, field = KEYS[1], ARGV[1]
if redis.call('HEXISTS', key, field) == 1 then
  return {1}
end
local n = redis.call('HLEN', key)
if n >= tonumber(ARGV[2]) then
  return {0}
end
redis.call('HSET', key, field, '1')
local out = {1}
local inline = KEYS[2] ~= nil
if inline then
  redis.call('SADD', KEYS[3], ARGV[3])
end
if n == 0 then
  report(inline, KEYS[2], EVENTS_MAXLEN, out, {'online', ARGV[3], ARGV[4], 0})
end
return out
