-- One GCRA on one key (signups per client IP). ARGV: limit, period (us), store now (us;
-- empty: the store's TIME, as in production; tests pass their own instant). Returns
-- {admitted 1|0, retry after (us)}.
local now = tonumber(ARGV[3])
if not now then
  local clock = redis.call('TIME')
  now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
end
local limit = tonumber(ARGV[1])
local t = math.max(1, math.floor(tonumber(ARGV[2]) / limit))
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new = tat + t
if new - now > t * limit then return {0, new - now - t * limit} end
redis.call('SET', KEYS[1], string.format('%.0f', new), 'PX',
           math.max(1, math.ceil((new - now) / 1000)))
return {1, 0}
