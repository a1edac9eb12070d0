-- read: what a connection needs to start or catch up. KEYS[1]: the inbox; ARGV[1]: the
-- position to read after (-1: after the acknowledged one); ARGV[2]: 1 to read nothing but the
-- numbers (a connection that only checks whether it missed something).
-- Returns {latest, first, ack, payload…}: the payloads are the kept messages numbered from
-- max(after+1, first), oldest first. After above latest (the state expired and numbering
-- started again), it reads as after = 0: the caller sees after > latest and resets.
local inbox = KEYS[1]
local s = redis.call('HMGET', inbox .. ':state', 'seq', 'ack')
local seq, ack = tonumber(s[1]) or 0, tonumber(s[2]) or 0
local first = seq - redis.call('LLEN', inbox) + 1
local after = tonumber(ARGV[1])
if after < 0 then
  after = ack
elseif after > seq then
  after = 0
end
local out = {seq, first, ack}
if after < seq and ARGV[2] ~= '1' then
  local msgs = redis.call('LRANGE', inbox, math.max(after + 1, first) - first, -1)
  for i = 1, #msgs do
    out[#out + 1] = msgs[i]
  end
end
return out
