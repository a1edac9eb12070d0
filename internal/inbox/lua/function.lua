
-- FCALL wsgateway_push 2 <prefix>user:{<id>} <prefix>inbox:{<id>} <payload> [<push id>]
-- Everything is checked before anything is written: a bad call is an error reply and changes
-- nothing. Cap, TTLs and undelivered-after are the gateway's settings, fixed when the gateway
-- loaded the library. (In a Cluster the undelivered schedule lives in another slot: a push made
-- here gets no undelivered event there.)
local function valid_id(s)
  return #s >= 1 and #s <= 128 and not string.find(s, '[^A-Za-z0-9_.:@%-]')
end

local function fcall_push(keys, args)
  if #keys ~= 2 then
    return redis.error_reply('ERR wsgateway_push takes 2 keys: ' .. PREFIX .. 'user:{<id>} and ' .. PREFIX .. 'inbox:{<id>}')
  end
  if #args < 1 or #args > 2 then
    return redis.error_reply('ERR wsgateway_push takes a payload and an optional push id')
  end
  local user = string.match(keys[2], '^' .. PREFIX_PATTERN .. 'inbox:{(.*)}$')
  if not user or not valid_id(user) or keys[1] ~= PREFIX .. 'user:{' .. user .. '}' then
    return redis.error_reply('ERR wsgateway_push keys must be ' .. PREFIX .. 'user:{<id>} and ' .. PREFIX .. 'inbox:{<id>} of one valid user id')
  end
  local id = args[2] or ''
  if id ~= '' and not valid_id(id) then
    return redis.error_reply('ERR wsgateway_push id must be 1-128 bytes of A-Z a-z 0-9 _ . : @ -')
  end
  local r = push(keys[1], keys[2], args[1], id, MAX, TTL, DEDUP_TTL, PUBLISH_COMMAND, false,
    UNDELIVERED_MS, DUE_KEY, user)
  return {r[1], r[2]}
end

redis.register_function('wsgateway_push', fcall_push)
