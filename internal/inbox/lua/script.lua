
-- The gateway's own call. KEYS: channel, inbox. ARGV: payload, id ('' = none), cap, TTL (s),
-- de-duplication TTL (s). The gateway checks its arguments before it calls.
return push(KEYS[1], KEYS[2], ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]),
  tonumber(ARGV[5]), PUBLISH_COMMAND)
