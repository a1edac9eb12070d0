-- connect: one more connection of a user, unless the user is at the deployment's cap.
-- KEYS[1]: the user's presence bucket (field: user, value: the user's connections,
-- '<proc>.<conn>,…'); in single-node Redis also KEYS[2] the events stream (else the caller
-- appends the events).
-- ARGV: user, connection, cap, node. Returns {allowed (1/0), events…}. Idempotent: a retry of
-- a connect that ran is allowed again and changes nothing.
local key, user, conn = KEYS[1], ARGV[1], ARGV[2]
local v = redis.call('HGET', key, user)
local n = 0
if v then
  if string.find(',' .. v .. ',', ',' .. conn .. ',', 1, true) then
    return {1}
  end
  local _, commas = string.gsub(v, ',', '')
  n = commas + 1
  if n >= tonumber(ARGV[3]) then
    return {0}
  end
  v = v .. ',' .. conn
else
  v = conn
end
redis.call('HSET', key, user, v)
local out = {1}
if n == 0 then
  report(KEYS[2] ~= nil, KEYS[2], EVENTS_MAXLEN, out, {'online', user, ARGV[4], 0})
end
return out
