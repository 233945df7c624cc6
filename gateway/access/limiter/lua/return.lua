-- Reserves that ended: what was not used goes back, and they stop counting as held. Of the
-- GCRA state only what still lies ahead of now goes back (slots the clock has passed were
-- refilled anyway); the month counter gets all of it.
-- KEYS per reserve: GCRA state, month counter, reserves held (one hash tag)
-- ARGV: store now (us; empty: the store's TIME, as in production; tests pass their own
--       instant), then per reserve: unused, GCRA emission interval (us, 0: no per-minute
--       limit), the GCRA state the grant left (us), reserve id
local now = tonumber(ARGV[1])  -- nil when empty: TIME, read once, when first needed
for i = 0, #KEYS / 3 - 1 do
  local a = 1 + i * 4
  local unused, t = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local granted_tat = tonumber(ARGV[a + 3])
  if unused > 0 then
    if t > 0 then
      if not now then
        local time = redis.call('TIME')
        now = tonumber(time[1]) * 1000000 + tonumber(time[2])
      end
      -- only what still lies ahead: slots the clock has passed were refilled anyway
      local back = math.min(unused * t, math.max(0, granted_tat - now))
      local tat = back > 0 and tonumber(redis.call('GET', KEYS[i * 3 + 1]) or '')
      if tat then redis.call('SET', KEYS[i * 3 + 1], tat - back, 'KEEPTTL') end
    end
    if redis.call('EXISTS', KEYS[i * 3 + 2]) == 1 then
      redis.call('DECRBY', KEYS[i * 3 + 2], unused)
    end
  end
  redis.call('ZREM', KEYS[i * 3 + 3], ARGV[a + 4])
end
return #KEYS / 3
