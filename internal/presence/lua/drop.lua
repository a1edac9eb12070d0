
-- drop: remove every connection a dead node held for a user. KEYS as connect.lua's (KEYS[3]
-- unused). ARGV: the dead node's field prefix ('<node>/'), user, node, and a prefix to keep
-- ('' or '<node>/<incarnation>.': a restarted node removing only what its earlier process
-- left). Returns {events…}: offline when the user has no connection left. Idempotent, so a
-- reaping that died half way is simply done again.
local key, prefix, keep = KEYS[1], ARGV[1], ARGV[4]
local removed = 0
for _, f in ipairs(redis.call('HKEYS', key)) do
  if string.sub(f, 1, #prefix) == prefix and (keep == '' or string.sub(f, 1, #keep) ~= keep) then
    redis.call('HDEL', key, f)
    removed = removed + 1
  end
end
local out = {}
if removed > 0 and redis.call('HLEN', key) == 0 then
  report(KEYS[2] ~= nil, KEYS[2], EVENTS_MAXLEN, out, {'offline', ARGV[2], ARGV[3], 0})
end
return out
