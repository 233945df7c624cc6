-- KEYS: per key checked: its record, its GCRA state, its month counter, its reserves held (a
--       sorted set: reserve id -> store time it stops counting; one hash tag each)
-- ARGV: tier table ";name:per_minute:per_month;...", GCRA period (us), process now (s), hold
--       (us: how long a reserve counts as held), store now (us; empty: the store's TIME, as
--       in production; tests pass their own instant), then per key: its hash, month counter
--       TTL (s), strict tier lookup (1|0), n requests, extra (a reserve wanted), reserve id
-- One reply per key, in KEYS order; a key's n requests are decided as if one after another
-- (monthly quota first, then the per-minute GCRA; extra included, as if it came right after
-- them). Keys are checked one after another, so a key named twice sees its first check's
-- counts. tests/ratelimit_model.py is the model that tests/test_ratelimit_machine.py holds
-- this script to.
local tiers, period, process_now = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local hold = tonumber(ARGV[4])
local store_now = tonumber(ARGV[5])  -- nil when empty: TIME, read once, when first needed
local function clock()
  if not store_now then
    local time = redis.call('TIME')
    store_now = tonumber(time[1]) * 1000000 + tonumber(time[2])
  end
  return store_now
end
local tier_limits = {}  -- tier name -> {known 1|0, per minute, per month}, once per call
local function check(k, a)
  local rec = redis.call('HMGET', KEYS[k + 1], 'hash', 'kind', 'tier', 'revoked', 'expires',
                         'expires_at')
  if rec[1] ~= ARGV[a + 1] then return {'unknown'} end
  local kind, tier, expires = rec[2] or '', rec[3] or '', rec[5] or ''
  if rec[4] and rec[4] ~= '' then return {'revoked', kind, tier, expires} end
  local expires_at = tonumber(rec[6] or '')
  if expires_at and expires_at <= process_now then
    return {'expired', kind, tier, expires}
  end
  local limits = tier_limits[tier]
  if not limits then
    local at = string.find(tiers, ';' .. tier .. ':', 1, true)
    local known = 1
    if not at then known, at = 0, 1 end
    local pm, pq = string.match(tiers, '^;[^;:]*:(%d+):(%d+)', at)
    limits = {known, tonumber(pm), tonumber(pq)}
    tier_limits[tier] = limits
  end
  local known, per_minute, per_month = limits[1], limits[2], limits[3]
  if known == 0 and ARGV[a + 3] == '1' then return {'unknown_tier', kind, tier, expires} end
  local n, extra = tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])
  local counters = redis.call('MGET', KEYS[k + 3], KEYS[k + 2])  -- month used, GCRA tat
  local used = tonumber(counters[1] or '0')
  local admitted, refusal, reserved, waiting = n, 'ok', 0, 0
  if per_month > 0 and per_month - used < admitted then
    admitted, refusal = math.max(0, per_month - used), 'quota_exceeded'
  end
  local remaining, reset, retry, t, now, tat, span = -1, 0, 0, 0, 0, 0, 0
  local slots_left = extra * 2  -- without a per-minute limit the minute never stops a reserve
  if per_minute > 0 then
    now = clock()
    t = math.max(1, math.floor(period / per_minute))
    span = t * per_minute
    tat = tonumber(counters[2] or '0')
    if tat < now then tat = now end
    local slots = math.max(0, math.floor((span - (tat - now)) / t))
    if slots < admitted then admitted, refusal = slots, 'rate_limited' end
    slots_left = slots - admitted
  end
  -- a reserve only far from the limits (at most half of what is left of the minute's burst
  -- and of the month), and at most 0.1 % of the month's quota (what a process that dies with
  -- one loses)
  if per_month > 0 then extra = math.min(extra, math.floor(per_month / 1000)) end
  if refusal == 'ok' and extra > 0 and slots_left >= 2 * extra
     and (per_month == 0 or per_month - used - admitted >= 2 * extra) then
    admitted, reserved = admitted + extra, extra
    redis.call('ZADD', KEYS[k + 4], clock() + hold, ARGV[a + 6])
    redis.call('PEXPIRE', KEYS[k + 4], math.ceil(hold / 1000))
  end
  if refusal ~= 'ok' and redis.call('EXISTS', KEYS[k + 4]) == 1 then
    redis.call('ZREMRANGEBYSCORE', KEYS[k + 4], '-inf', clock())
    -- reserves held by processes may still come back: the limiter asks again shortly
    if redis.call('ZCARD', KEYS[k + 4]) > 0 then waiting = 1 end
  end
  if per_minute > 0 then
    if admitted > 0 then
      tat = tat + admitted * t
      -- a number argument is written with all its digits (unlike tostring's %.14g), and
      -- without string.format, which cost ~1 us per key
      redis.call('SET', KEYS[k + 2], tat, 'PX', math.max(1, math.ceil((tat - now) / 1000)))
    end
    remaining = math.floor((span - (tat - now)) / t)
    reset = tat - now
    if refusal == 'rate_limited' then retry = tat + t - now - span end
  end
  if admitted > 0 then
    used = redis.call('INCRBY', KEYS[k + 3], admitted)
    if used == admitted then redis.call('EXPIRE', KEYS[k + 3], ARGV[a + 2]) end
  end
  return {refusal, kind, tier, expires, known, per_minute, per_month, admitted, remaining,
          reset, retry, used, t, reserved, tat, waiting}
end
local out = {}
for i = 0, #KEYS / 4 - 1 do
  out[i + 1] = check(i * 4, 5 + i * 6)
end
return out
