-- claim: take up to ARGV[2] users whose earliest deadline passed from the global schedule
-- KEYS[1], for ARGV[1] ms: their score moves to the end of that lease, so no other node takes
-- them meanwhile, and a node that dies holding them loses them only for the lease. Returns
-- {lease score, user…}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = now + tonumber(ARGV[1])
local out = {lease}
for _, u in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))) do
  redis.call('ZADD', KEYS[1], lease, u)
  out[#out + 1] = u
end
return out
