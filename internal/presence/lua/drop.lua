-- drop: remove from one presence bucket every connection of some processes (a dead node's, or a
-- restarted node's earlier ones). KEYS as connect.lua's. ARGV: the node (for its users' events),
-- then the processes' numbers. Returns {events…}: offline for each user left with no
-- connection. Idempotent, so a reaping that died half way is simply done again.
local key, node = KEYS[1], ARGV[1]
local gone = {}
for i = 2, #ARGV do
  gone[ARGV[i]] = true
end
local out = {}
local all = redis.call('HGETALL', key)
for i = 1, #all, 2 do
  local kept, changed = {}, false
  for conn in string.gmatch(all[i + 1], '[^,]+') do
    if gone[string.match(conn, '^[^.]*')] then
      changed = true
    else
      kept[#kept + 1] = conn
    end
  end
  if changed then
    if #kept == 0 then
      redis.call('HDEL', key, all[i])
      report(KEYS[2] ~= nil, KEYS[2], EVENTS_MAXLEN, out, {'offline', all[i], node, 0})
    else
      redis.call('HSET', key, all[i], table.concat(kept, ','))
    end
  end
end
return out
