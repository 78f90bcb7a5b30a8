"""The call budget's Lua script: every budget operation is this one script, so each is
atomic across processes and uses Redis's clock (replicas' clocks may disagree).

``bot.hss.budget`` registers it once per client and is the only user.
"""

#: One script for every budget operation so each is atomic across processes.
BUDGET_LUA = """
-- KEYS[1] = budget log: ZSET member = call id, score = start time (Redis clock, s)
-- KEYS[2] = interactive waiters: ZSET member = waiter id, score = expiry (Redis clock, s)
-- KEYS[3] = interactive queue: ZSET member = waiter id, score = arrival (Redis clock, s);
--           the live members of KEYS[2] (one that expires there leaves both)
-- ARGV[1] = mode: acquire | peek | penalize | note
-- ARGV[2] = calls per window; ARGV[3] = window (s); ARGV[4] = call id (phantom id prefix)
-- acquire:  ARGV[5] = priority (0 interactive, 1 background); ARGV[6] = waiter id ('' none);
--           ARGV[7] = waiter grace (s); ARGV[8] = slots background must leave free;
--           ARGV[9] = interactive arrival (Redis clock, s; '' = now); a waiter already
--           queued keeps the arrival it was queued with
-- penalize: ARGV[5] = seconds until the next call may start
-- note:     ARGV[5..] = call id, age (s) pairs of starts Redis has not seen
-- returns {granted 0/1, wait (s) as a string, starts in the window,
--          arrival (s) as a string: the interactive caller's place in the queue, else ''}
-- (acquire: the wait of this caller; otherwise the wait of a new interactive caller)
if redis.replicate_commands then redis.replicate_commands() end
local log, waiters, queue = KEYS[1], KEYS[2], KEYS[3]
local mode, limit, window, id = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000

redis.call('ZREMRANGEBYSCORE', log, '-inf', now - window)
for _, dead in ipairs(redis.call('ZRANGEBYSCORE', waiters, '-inf', now)) do
  redis.call('ZREM', queue, dead)
end
redis.call('ZREMRANGEBYSCORE', waiters, '-inf', now)

-- seconds until `needed` slots are free: starts leave the window oldest first, and a slot
-- needed beyond the window's calls is one taken (by a waiter ahead) a window earlier
local function wait_for(needed)
  local rounds = math.floor((needed - 1) / limit)
  local idx = redis.call('ZCARD', log) - limit + needed - rounds * limit - 1
  if idx < 0 then return rounds * window end
  local entry = redis.call('ZRANGE', log, idx, idx, 'WITHSCORES')
  return math.max(0, tonumber(entry[2]) + window - now) + rounds * window
end

-- the keys live exactly as long as the newest entry of the first matters
local function expire(key, extra, also)
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if last[2] then
    local at = math.ceil((tonumber(last[2]) + extra) * 1000)
    redis.call('PEXPIREAT', key, at)
    if also then redis.call('PEXPIREAT', also, at) end
  end
end

local function reply(granted, wait, arrival)
  local place = arrival and string.format('%.6f', arrival) or ''
  return {granted, string.format('%.6f', wait), redis.call('ZCARD', log), place}
end

-- an interactive caller goes when fewer waiters are ahead of it than slots are free
local function interactive(waiter, arrival)
  if waiter == '' then return wait_for(redis.call('ZCARD', queue) + 1), arrival end
  redis.call('ZADD', queue, 'NX', arrival, waiter)
  local ahead = redis.call('ZRANK', queue, waiter)
  return wait_for(ahead + 1), tonumber(redis.call('ZSCORE', queue, waiter))
end

if mode == 'acquire' then
  local waiter, wait, arrival = ARGV[6], 0, nil
  if tonumber(ARGV[5]) == 0 then
    wait, arrival = interactive(waiter, math.min(tonumber(ARGV[9]) or now, now))
  else
    wait = wait_for(1 + tonumber(ARGV[8]))
    if wait == 0 and redis.call('ZCARD', waiters) > 0 then wait = window / limit end
  end
  if wait > 0 then
    if waiter ~= '' then
      redis.call('ZADD', waiters, now + wait + tonumber(ARGV[7]), waiter)
      expire(waiters, 0, queue)
    end
    return reply(0, wait, arrival)
  end
  redis.call('ZADD', log, now, id)
  expire(log, window)
  if waiter ~= '' then
    redis.call('ZREM', waiters, waiter)
    redis.call('ZREM', queue, waiter)
  end
  return reply(1, 0, arrival)
elseif mode == 'penalize' then
  local score = now + tonumber(ARGV[5]) - window
  -- starts older than the phantoms leave the window before them: they no longer matter
  redis.call('ZREMRANGEBYSCORE', log, '-inf', score)
  for i = 1, limit do redis.call('ZADD', log, score, id .. ':' .. i) end
  expire(log, window)
elseif mode == 'note' then
  for i = 5, #ARGV - 1, 2 do
    local score = now - tonumber(ARGV[i + 1])
    if score > now - window then redis.call('ZADD', log, 'NX', score, ARGV[i]) end
  end
  expire(log, window)
end
return reply(0, wait_for(redis.call('ZCARD', queue) + 1))
"""
