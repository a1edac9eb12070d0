-- push: number a message, append it to the user's inbox and publish it, atomically on the node
-- (or Cluster shard) that owns the user's hash tag. Shared by the script the gateway runs and
-- the Redis Function wsgateway_push (function.lua); both validate their arguments first.
--
-- chan: the user's channel ws:user:{id}; inbox: the list ws:inbox:{id} (payloads, oldest
-- first); its state hash inbox..':state' holds seq (the latest number) and ack (the
-- acknowledged position); inbox..':id:'..id remembers a push id for dedupttl seconds.
-- The list holds the messages numbered seq-LLEN+1 .. seq: it is only ever trimmed from the
-- head, so a message's number is its position, and no number is stored per message.
--
-- With receipt, the number goes to inbox..':receipts', for a delivered event at its first ack
-- (ack.lua). With undelivered (ms) > 0 it goes to inbox..':due' with its deadline, for an
-- undelivered event if it is still unacknowledged then (due.lua); the user joins the global
-- schedule duekey when it is given (single-node Redis; in a Cluster the caller adds it).
--
-- Returns {seq, receivers, duplicate, deadline}: receivers is what PUBLISH counted (nodes that
-- took it live; 0: it waits in the inbox); duplicate is 1 when id was seen: nothing was stored
-- or sent; deadline (ms, Redis time) is when it counts as undelivered, 0 for never.
local function push(chan, inbox, payload, id, max, ttl, dedupttl, publish, receipt, undelivered, duekey, user)
  local idkey
  if id ~= '' then
    idkey = inbox .. ':id:' .. id
    local seen = redis.call('GET', idkey)
    if seen then
      return {tonumber(seen), 0, 1, 0}
    end
  end
  local state = inbox .. ':state'
  local seq = redis.call('HINCRBY', state, 'seq', 1)
  if redis.call('RPUSH', inbox, payload) > max then
    redis.call('LTRIM', inbox, -max, -1)
  end
  local keys = {inbox, state}
  if receipt then
    redis.call('ZADD', inbox .. ':receipts', seq, seq)
    keys[#keys + 1] = inbox .. ':receipts'
  end
  local deadline = 0
  if undelivered > 0 then
    local t = redis.call('TIME')
    deadline = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + undelivered
    redis.call('ZADD', inbox .. ':due', deadline, seq)
    keys[#keys + 1] = inbox .. ':due'
    if duekey then
      redis.call('ZADD', duekey, 'LT', deadline, user)
    end
  end
  -- Every key lives ttl after the last push, within 1 % (an ack may have set a longer TTL, and a
  -- fresh key has none: TTL -1). Refreshing only when 1 % of it has passed spares most pushes
  -- the EXPIREs.
  local slack = math.max(1, math.floor(ttl / 100))
  for _, k in ipairs(keys) do
    if redis.call('TTL', k) < ttl - slack then
      redis.call('EXPIRE', k, ttl)
    end
  end
  if idkey then
    redis.call('SET', idkey, seq, 'EX', dedupttl)
  end
  -- A NUL byte, the number and a space mark a numbered message: the gateway's nodes strip the
  -- header, and a plain PUBLISH (which cannot start with it by accident) stays unnumbered.
  local n = redis.call(publish, chan, '\0' .. seq .. ' ' .. payload)
  return {seq, n, 0, deadline}
end
