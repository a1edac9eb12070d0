-- beat: this node is alive (KEYS[1]: the node set, score = Redis time in ms), and the nodes
-- whose last beat is older than ARGV[2] ms are returned (a node never returns itself). Redis's
-- clock, so that the nodes' clocks need not agree.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
local dead = {}
for _, n in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))) do
  if n ~= ARGV[1] then
    dead[#dead + 1] = n
  end
end
return dead
