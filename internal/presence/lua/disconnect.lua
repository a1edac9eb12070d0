
-- disconnect: a connection of a user ended. KEYS as connect.lua's. ARGV: field, user, node,
-- last (1: the node's last connection of the user: leave its user set). Returns {events…}.
-- Idempotent: a connection already gone changes nothing.
local key = KEYS[1]
local inline = KEYS[2] ~= nil
if inline and ARGV[4] == '1' then
  redis.call('SREM', KEYS[3], ARGV[2])
end
if redis.call('HDEL', key, ARGV[1]) == 0 then
  return {}
end
local out = {}
if redis.call('HLEN', key) == 0 then
  report(inline, KEYS[2], EVENTS_MAXLEN, out, {'offline', ARGV[2], ARGV[3], 0})
end
return out
