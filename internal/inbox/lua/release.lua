-- release: after a claimed user was checked, put it back on the schedule at its next deadline
-- (ARGV[3], 0: none left), unless a push moved it meanwhile (its score is no longer the lease,
-- ARGV[2]): then keep the earlier of the two. KEYS[1]: the schedule; ARGV[1]: the user.
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
local nxt = tonumber(ARGV[3])
if score and tonumber(score) == tonumber(ARGV[2]) then
  if nxt > 0 then
    redis.call('ZADD', KEYS[1], nxt, ARGV[1])
  else
    redis.call('ZREM', KEYS[1], ARGV[1])
  end
elseif nxt > 0 then
  redis.call('ZADD', KEYS[1], 'LT', nxt, ARGV[1])
end
return 1
