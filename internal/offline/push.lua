-- Push-or-store, atomically on the node (or Cluster shard) that owns the user's hash tag.
-- keys[1]: the user's channel (ws:user:{id}), keys[2]: the user's offline list (ws:offline:{id})
-- args[1]: payload, args[2]: cap (offline-max), args[3]: TTL in seconds (offline-ttl)
-- Returns the number of subscribers that received the message; 0 means it was stored.
local function push(keys, args, max, ttl)
  local n = redis.call(PUBLISH_COMMAND, keys[1], args[1])
  if n > 0 then
    return n
  end
  max = tonumber(args[2]) or max
  ttl = tonumber(args[3]) or ttl
  redis.call('RPUSH', keys[2], args[1])
  redis.call('LTRIM', keys[2], -max, -1)
  redis.call('EXPIRE', keys[2], ttl)
  return 0
end
