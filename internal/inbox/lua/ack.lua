-- ack: move the user's acknowledged position forward. KEYS[1]: the inbox [, KEYS[2]: the events
-- stream, in single-node Redis]; ARGV: the position, resume-ttl in ms, user, node. An ack at or
-- below the position, or above the latest number, changes nothing. Returns {position,
-- events…}: a delivered event for each message pushed with a receipt up to the new position
-- (appended here when the stream is a key of this script, else by the caller).
--
-- Acknowledged messages stay readable (for since=) at least resume-ttl. Instead of a time per
-- message, the state keeps one mark: the position as it was at marktime. Once resume-ttl has
-- passed since marktime, everything up to the mark was acknowledged at least that long ago and
-- is trimmed, and the mark moves to the current position. So a message goes between 1 and 2
-- resume-ttl after its ack (at the first ack after that), or earlier under the offline-max cap.
local inbox = KEYS[1]
local state = inbox .. ':state'
local s = redis.call('HMGET', state, 'seq', 'ack', 'mark', 'marktime')
local seq, ack = tonumber(s[1]), tonumber(s[2]) or 0
local want, resume = tonumber(ARGV[1]), tonumber(ARGV[2])
if not seq or want > seq or want <= ack then
  return {ack}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local mark, marktime = tonumber(s[3]), tonumber(s[4])
if marktime and now - marktime >= resume then
  local drop = mark - (seq - redis.call('LLEN', inbox) + 1) + 1
  if drop > 0 then
    redis.call('LTRIM', inbox, drop, -1)
  end
  marktime = nil
end
if marktime then
  redis.call('HSET', state, 'ack', want)
else
  redis.call('HSET', state, 'ack', want, 'mark', want, 'marktime', now)
end
-- The acknowledged history must outlive resume-ttl even when the last push is long ago.
if redis.call('PTTL', state) < resume then
  redis.call('PEXPIRE', state, resume)
  if redis.call('EXISTS', inbox) == 1 then
    redis.call('PEXPIRE', inbox, resume)
  end
end
local out = {want}
local receipts = inbox .. ':receipts'
for _, s in ipairs(redis.call('ZRANGEBYSCORE', receipts, '-inf', want)) do
  report(KEYS[2] ~= nil, KEYS[2], EVENTS_MAXLEN, out, {'delivered', ARGV[3], ARGV[4], s})
end
redis.call('ZREMRANGEBYSCORE', receipts, '-inf', want)
return out
