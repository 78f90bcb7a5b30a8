"""The call budget's Lua script: every budget operation is this one script, so each is
atomic across processes and uses Redis's clock (replicas' clocks may disagree).

``bot.hss.budget`` registers it once per client and is the only user.
"""

#: One script for every budget operation so each is atomic across processes.
BUDGET_LUA = """
-- KEYS[1] = budget log: ZSET member = call id, score = start time (Redis clock, s)
-- KEYS[2] = interactive waiters: ZSET member = waiter id, score = expiry (Redis clock, s)
-- KEYS[3] = interactive queue: ZSET score = round + size key, member = place (see `enqueue`);
--           the order of the live members of KEYS[2] (one that expires there leaves every key)
-- KEYS[4] = places: HASH waiter id -> its member of KEYS[3]; 't:' .. waiter id -> when a
--           question of several calls queued (Redis clock, s), for aging
-- KEYS[5] = askers: HASH 'n:' .. asker -> places queued, 'r:' .. asker -> round of the last
-- ARGV[1] = mode: acquire | leave | peek | penalize | note
-- ARGV[2] = calls per window; ARGV[3] = window (s); ARGV[4] = call id (phantom id prefix)
-- acquire:  ARGV[5] = priority (0 interactive, 1 background); ARGV[6] = waiter id ('' none);
--           ARGV[7] = waiter grace (s); ARGV[8] = slots background must leave free;
--           ARGV[9] = interactive arrival (Redis clock, s; '' = now: a new question); a
--           waiter already queued keeps the place it was queued with;
--           ARGV[10] = asker ('' or absent: nobody in particular, first come first served);
--           ARGV[11] = places one asker may hold (absent: no cap; new questions only);
--           ARGV[12] = round of this question's last granted call ('' or absent: none);
--           ARGV[13] = calls the question takes in all ('' or absent: 1): shortest first
-- leave:    ARGV[5] = waiter id
-- peek:     ARGV[5] = asker ('' or absent: nobody in particular): whose new question the
--           returned wait is for
-- penalize: ARGV[5] = seconds until the next call may start
-- note:     ARGV[5..] = call id, age (s) pairs of starts Redis has not seen
-- returns {granted 1, 0 or -1 (refused: the asker holds the cap), wait (s) as a string,
--          starts in the window, arrival (s) as a string: the interactive caller's place in
--          the queue, else '', round of that place (granted: of the call) or ''}
-- (acquire: the wait of this caller; otherwise the wait of a new interactive caller)
if redis.replicate_commands then redis.replicate_commands() end
local log, waiters, queue, places, askers = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local mode, limit, window, id = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000

-- a place is '<arrival>:<waiter>:<asker>': within a round, first come first served
local function asker_of(place) return string.match(place, '^[^:]*:[^:]*:(.*)$') end
local function arrival_of(place) return tonumber(string.match(place, '^[^:]*')) end

local function dequeue(waiter)
  redis.call('ZREM', waiters, waiter)
  local place = redis.call('HGET', places, waiter)
  if not place then return end
  redis.call('HDEL', places, waiter, 't:' .. waiter)
  redis.call('ZREM', queue, place)
  local asker = asker_of(place)
  if asker ~= '' and redis.call('HINCRBY', askers, 'n:' .. asker, -1) <= 0 then
    redis.call('HDEL', askers, 'n:' .. asker, 'r:' .. asker)
  end
end

redis.call('ZREMRANGEBYSCORE', log, '-inf', now - window)
for _, dead in ipairs(redis.call('ZRANGEBYSCORE', waiters, '-inf', now)) do dequeue(dead) end

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
    for _, other in ipairs(also or {}) do redis.call('PEXPIREAT', other, at) end
  end
end

local function reply(granted, wait, arrival, round)
  local place = arrival and string.format('%.6f', arrival) or ''
  return {granted, string.format('%.6f', wait), redis.call('ZCARD', log), place,
          round and tostring(round) or ''}
end

-- Round robin between askers: a question joins the round being served (the head's), after
-- its asker's places already queued; the next call of a question that was just served
-- waits for the round after its own. Questions of nobody in particular stay in the head's
-- round: among themselves, first come first served.
local function head_round()
  local head = redis.call('ZRANGE', queue, 0, 0, 'WITHSCORES')
  return head[2] and math.floor(tonumber(head[2])) or 0
end

local function round_for(asker, last_turn)
  local round = head_round()
  if asker == '' then return round end
  if last_turn and last_turn >= round then round = round + 1 end
  local queued = tonumber(redis.call('HGET', askers, 'n:' .. asker) or '0')
  if queued > 0 then
    round = math.max(round, tonumber(redis.call('HGET', askers, 'r:' .. asker)) + 1)
  end
  return round, queued
end

-- Shortest question first within a round: the score's fraction is the question's size in
-- calls (0 for one call), so one-call questions go before the pages of a longer fetch.
local function size_key(calls)
  return (math.min(math.max(calls, 1), 1000) - 1) / 1000
end

local function enqueue(waiter, arrival, asker, last_turn, calls)
  local round, queued = round_for(asker, last_turn)
  local place = string.format('%017.6f', arrival) .. ':' .. waiter .. ':' .. asker
  redis.call('ZADD', queue, round + size_key(calls), place)
  redis.call('HSET', places, waiter, place)
  if calls > 1 then redis.call('HSET', places, 't:' .. waiter, string.format('%.6f', now)) end
  if asker ~= '' then
    redis.call('HSET', askers, 'n:' .. asker, queued + 1, 'r:' .. asker, round)
  end
  return place, queued or 0
end

-- Aging: a place of a longer question that has waited a whole window moves to the front of
-- the round being served, as a one-call question, so every fetch gets a page per window.
-- Returns the seconds until that happens (0: it has, or the place is not a longer question).
local function age(waiter, place)
  local score = tonumber(redis.call('ZSCORE', queue, place))
  if score == math.floor(score) then return 0 end
  local since = tonumber(redis.call('HGET', places, 't:' .. waiter) or '') or now
  if since + window > now then return since + window - now end
  redis.call('ZADD', queue, math.min(head_round(), math.floor(score)), place)
  redis.call('HDEL', places, 't:' .. waiter)
  return 0
end

-- an interactive caller goes when fewer waiters are ahead of it than slots are free
local function interactive(waiter, arrival, asker, last_turn, calls)
  if waiter == '' then return wait_for(redis.call('ZCARD', queue) + 1), arrival, nil, 0 end
  local place, held = redis.call('HGET', places, waiter), 0
  if not place then place, held = enqueue(waiter, arrival, asker, last_turn, calls) end
  local due = age(waiter, place)
  local wait = wait_for(redis.call('ZRANK', queue, place) + 1)
  -- wake when aging moves the place, if its turn has not come by then
  if due > 0 then wait = math.min(wait, due) end
  return wait, arrival_of(place),
         math.floor(tonumber(redis.call('ZSCORE', queue, place))), held
end

if mode == 'acquire' then
  local waiter, wait, arrival, round, held = ARGV[6], 0, nil, nil, 0
  if tonumber(ARGV[5]) == 0 then
    local asker, turn = ARGV[10] or '', tonumber(ARGV[12] or '')
    local calls = tonumber(ARGV[13] or '') or 1
    wait, arrival, round, held =
      interactive(waiter, math.min(tonumber(ARGV[9]) or now, now), asker, turn, calls)
    local cap = tonumber(ARGV[11] or '')
    if wait > 0 and ARGV[9] == '' and cap and asker ~= '' and held >= cap then
      dequeue(waiter)
      return reply(-1, wait, nil, nil)
    end
  else
    wait = wait_for(1 + tonumber(ARGV[8]))
    if wait == 0 and redis.call('ZCARD', waiters) > 0 then wait = window / limit end
  end
  if wait > 0 then
    if waiter ~= '' then
      redis.call('ZADD', waiters, now + wait + tonumber(ARGV[7]), waiter)
      expire(waiters, 0, {queue, places, askers})
    end
    return reply(0, wait, arrival, round)
  end
  redis.call('ZADD', log, now, id)
  expire(log, window)
  if waiter ~= '' then dequeue(waiter) end
  return reply(1, 0, arrival, round)
elseif mode == 'leave' then
  dequeue(ARGV[5])
elseif mode == 'peek' then
  -- a new one-call question of the asker goes after every place of the rounds before its own
  -- and the one-call places of its round
  local round = round_for(ARGV[5] or '', nil)
  return reply(0, wait_for(redis.call('ZCOUNT', queue, '-inf', round) + 1))
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
