-- floodgate leased mode: claim blocks of fixed windows' quotas.
--
-- The counter's state is the exact mode's ('f:<window start>:<count>', with
-- Redis's TIME), so exact and leased instances can share one Redis: in
-- leased mode the count is the quota claimed by the fleet, not the hits.
--
-- KEYS: the counter keys.
-- ARGV: 4 per key: window seconds, requests_per_unit, need (the hits the
--   instance is short of), divisor (a block is the unclaimed quota divided
--   by it, at least `need`).
--
-- Returns one string of decimal integers, 4 per key: granted (0 or at
-- least need: never part of a need), the window's claimed count after this
-- call, microseconds until the window ends (by Redis's clock), and the
-- window's start (Unix seconds).

local t = redis.call('TIME')
local now_s, now_us = tonumber(t[1]), tonumber(t[2])
local out = {}
for i = 1, #KEYS do
  local base = (i - 1) * 4
  local w = tonumber(ARGV[base + 1])
  local rpu = tonumber(ARGV[base + 2])
  local need = tonumber(ARGV[base + 3])
  local divisor = tonumber(ARGV[base + 4])
  local cur = now_s - math.fmod(now_s, w)
  local count = 0
  local raw = redis.call('GET', KEYS[i])
  if raw then
    local k, a, b = string.match(raw, '^(%a):(%d+):(%d+)')
    if k == 'f' and tonumber(a) == cur then count = tonumber(b) end
  end
  local left = rpu - count
  if left < 0 then left = 0 end
  local grant = math.max(need, math.ceil(left / divisor))
  if grant > left then grant = left end
  if grant < need then grant = 0 end
  local left_us = (cur + w - now_s) * 1000000 - now_us
  if grant > 0 then
    count = count + grant
    local ms = math.ceil(left_us / 1000)
    if ms < 1 then ms = 1 end
    redis.call('SET', KEYS[i], 'f:' .. string.format('%.0f', cur) .. ':' ..
      string.format('%.0f', count), 'PX', string.format('%.0f', ms))
  end
  out[#out + 1] = string.format('%.0f %.0f %.0f %.0f', grant, count, math.max(left_us, 0), cur)
end
return table.concat(out, ' ')
