-- due: emit undelivered for each of a user's messages whose deadline passed while it is still
-- unacknowledged. KEYS[1]: the inbox [, KEYS[2]: the events stream, in single-node Redis];
-- ARGV: user, node. Returns {next deadline (ms, 0: none), events…}. Each deadline is taken
-- once: its entry goes in the same step as its event.
local inbox = KEYS[1]
local due = inbox .. ':due'
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ack = tonumber(redis.call('HGET', inbox .. ':state', 'ack')) or 0
local out = {0}
for _, s in ipairs(redis.call('ZRANGEBYSCORE', due, '-inf', now)) do
  if tonumber(s) > ack then
    report(KEYS[2] ~= nil, KEYS[2], EVENTS_MAXLEN, out, {'undelivered', ARGV[1], ARGV[2], s})
  end
end
redis.call('ZREMRANGEBYSCORE', due, '-inf', now)
local nxt = redis.call('ZRANGE', due, 0, 0, 'WITHSCORES')
if #nxt == 2 then
  out[1] = tonumber(nxt[2])
end
return out
