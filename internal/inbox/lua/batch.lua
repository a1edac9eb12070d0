-- A batch of pushes in one script run (single-node Redis only: it names the keys of many users).
-- One call instead of one per message spares Redis the per-call cost, and one record for the
-- batch replaces the per-push id the gateway would make up for a retry.
--
-- KEYS: the batch's record, then the channel and inbox of each message, then (when undelivered
-- > 0) the global undelivered schedule. ARGV: n, cap, TTL (s), de-duplication TTL (s),
-- undelivered after (ms), record TTL (s), then per message: payload, id ('' = none), receipt
-- (1/0), user.
--
-- Returns one {seq, receivers, duplicate, deadline} per message (push.lua), or {-1, 0, 0, 0} for a
-- message whose push failed (an error reply from one of its commands: a key of the wrong type).
-- The same batch sent again (its reply was lost) answers its record and changes nothing.
local record = KEYS[1]
local done = redis.call('GET', record)
if done then
  return cjson.decode(done)
end
local n, max, ttl, dedupttl, undelivered = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
  tonumber(ARGV[4]), tonumber(ARGV[5])
local duekey = nil
if undelivered > 0 then
  duekey = KEYS[2 * n + 2]
end
local out = {}
for i = 1, n do
  local a = 6 + (i - 1) * 4
  local ok, r = pcall(push, KEYS[2 * i], KEYS[2 * i + 1], ARGV[a + 1], ARGV[a + 2], max, ttl, dedupttl,
    'PUBLISH', ARGV[a + 3] == '1', undelivered, duekey, ARGV[a + 4])
  if ok then
    out[i] = r
  else
    out[i] = {-1, 0, 0, 0}
  end
end
redis.call('SET', record, cjson.encode(out), 'EX', tonumber(ARGV[6]))
return out
