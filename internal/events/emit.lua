-- emit appends an event to the events stream from inside a script, atomically with the state
-- change it reports. Used only where the stream and the script's keys may share a node (not in
-- a Redis Cluster, where the stream lives in a slot of its own and the caller appends the
-- events the script returns instead: events.Writer).
-- ev: {type, user, node, seq (0: none)}; maxlen: the stream's approximate bound.
local function emit(stream, maxlen, ev)
  local t = redis.call('TIME')
  local ts = tostring(tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
  if tonumber(ev[4]) > 0 then
    redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'type', ev[1], 'user', ev[2], 'node', ev[3], 'seq', ev[4], 'ts', ts)
  else
    redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'type', ev[1], 'user', ev[2], 'node', ev[3], 'ts', ts)
  end
end

-- report emits ev now (inline) or queues it in out for the caller to append.
local function report(inline, stream, maxlen, out, ev)
  if inline then
    emit(stream, maxlen, ev)
  else
    out[#out + 1] = ev[1]
    out[#out + 1] = ev[2]
    out[#out + 1] = ev[3]
    out[#out + 1] = tostring(ev[4])
  end
end
