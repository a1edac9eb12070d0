
-- The gateway's own call. KEYS: channel, inbox [, the global undelivered schedule]. ARGV:
-- payload, id ('' = none), cap, TTL (s), de-duplication TTL (s), receipt (1/0), undelivered
-- after (ms, 0 = never), user. The gateway checks its arguments before it calls.
return push(KEYS[1], KEYS[2], ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]),
  tonumber(ARGV[5]), PUBLISH_COMMAND, ARGV[6] == '1', tonumber(ARGV[7]), KEYS[3], ARGV[8])
