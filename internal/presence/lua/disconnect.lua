-- disconnect: a connection of a user ended. KEYS as connect.lua's. ARGV: user, connection,
-- node. Returns {events…}. Idempotent: a connection already gone changes nothing.
local key, user, conn = KEYS[1], ARGV[1], ARGV[2]
local v = redis.call('HGET', key, user)
if not v then
  return {}
end
local s = ',' .. v .. ','
local at = string.find(s, ',' .. conn .. ',', 1, true)
if not at then
  return {}
end
s = string.sub(s, 1, at) .. string.sub(s, at + #conn + 2)
local out = {}
if s == ',' then
  redis.call('HDEL', key, user)
  report(KEYS[2] ~= nil, KEYS[2], EVENTS_MAXLEN, out, {'offline', user, ARGV[3], 0})
else
  redis.call('HSET', key, user, string.sub(s, 2, -2))
end
return out
