-- floodgate leased mode: claim blocks of fixed windows' quotas and of token
-- buckets' tokens (mod.rs, next to this file, explains both and proves the
-- bucket's bound).
--
-- Fixed windows: the counter's state is the exact mode's ('f:<window
-- start>:<count>', with Redis's TIME), so exact and leased instances can
-- share one Redis: in leased mode the count is the quota claimed by the
-- fleet, not the hits.
--
-- Token buckets: the state is leased mode's own, under its own key (the
-- caller appends ':lease' to the exact mode's key):
--   'b:<level>:<t> <id>:<seq>:<tokens>:<expiry> ...'
-- level: the central level (a double, tokens) at t (Redis's time in
-- microseconds); then one lease per instance: the instance's id (hex), the
-- sequence number of the claim that granted it, the tokens granted, and
-- when the lease expires (microseconds). The central level refills at the
-- bucket's rate but never above burst - O, O the sum of the leases' tokens.
--
-- KEYS: the keys claimed from.
-- ARGV: per key, its kind and then that kind's fields:
--   'f', window seconds, requests_per_unit, need (the hits the instance is
--     short of), divisor (a block is the unclaimed quota divided by it, at
--     least `need`);
--   'b', instance id, seq (this claim's, increasing per instance), retire
--     (the seq of the lease the instance reports on), unspent (of that
--     lease, given back), need (hits of the request), want (the most the
--     instance asks for: its recent demand), burst, requests_per_unit,
--     window seconds, lease ttl (microseconds), divisor.
--
-- Returns one string of decimal integers, 4 per key. Fixed window: granted
-- (0 or at least need: never part of a need), the window's claimed count
-- after this call, microseconds until the window ends (by Redis's clock),
-- and the window's start (Unix seconds). Token bucket: granted (0 or at
-- least need), the central level after the claim (rounded down), 0, 0.

local t = redis.call('TIME')
local now_s, now_us = tonumber(t[1]), tonumber(t[2])
-- Microseconds since the epoch: about 2^51, exact in a double.
local now = now_s * 1000000 + now_us
local floor, min, max = math.floor, math.min, math.max

local function num(x) return string.format('%.0f', x) end

local function fixed(key, w, rpu, need, divisor)
  local cur = now_s - math.fmod(now_s, w)
  local count = 0
  local raw = redis.call('GET', key)
  if raw then
    local k, a, b = string.match(raw, '^(%a):(%d+):(%d+)')
    if k == 'f' and tonumber(a) == cur then count = tonumber(b) end
  end
  local left = rpu - count
  if left < 0 then left = 0 end
  local grant = max(need, math.ceil(left / divisor))
  if grant > left then grant = left end
  if grant < need then grant = 0 end
  local left_us = (cur + w - now_s) * 1000000 - now_us
  if grant > 0 then
    count = count + grant
    local ms = math.ceil(left_us / 1000)
    if ms < 1 then ms = 1 end
    redis.call('SET', key, 'f:' .. num(cur) .. ':' .. num(count), 'PX', num(ms))
  end
  return num(grant) .. ' ' .. num(count) .. ' ' .. num(max(left_us, 0)) .. ' ' .. num(cur)
end

local function bucket(key, id, seq, retire, unspent, need, want, burst, rpu, w, ttl, divisor)
  -- Tokens per microsecond.
  local rate = rpu / (w * 1000000)
  local level, last = burst, now
  local leases = {}
  local raw = redis.call('GET', key)
  if raw then
    local first = true
    for field in string.gmatch(raw, '%S+') do
      if first then
        local l, at = string.match(field, '^b:([^:]+):(%d+)$')
        if l then level, last = tonumber(l) or 0, tonumber(at) end
        first = false
      else
        local i, s, o, e = string.match(field, '^(%x+):(%d+):(%d+):(%d+)$')
        if i then
          leases[#leases + 1] = { id = i, seq = tonumber(s), o = tonumber(o), exp = tonumber(e) }
        end
      end
    end
  end
  -- Redis's clock stepped back: no refill, rather than a negative one.
  if last > now then last = now end

  -- Refill up to now, as the continuous process would have: the cap
  -- burst - O rises only when a lease expires (its tokens counted as
  -- spent then), so step from expiry to expiry.
  local outstanding = 0
  for _, lease in ipairs(leases) do outstanding = outstanding + lease.o end
  local expired, live = {}, {}
  for _, lease in ipairs(leases) do
    if lease.exp <= now then expired[#expired + 1] = lease else live[#live + 1] = lease end
  end
  table.sort(expired, function(a, b) return a.exp < b.exp end)
  local at = last
  for _, lease in ipairs(expired) do
    if lease.exp > at then
      level = min(burst - outstanding, level + (lease.exp - at) * rate)
      at = lease.exp
    end
    outstanding = outstanding - lease.o
  end
  level = min(burst - outstanding, level + (now - at) * rate)
  if level < 0 then level = 0 end

  -- This instance's lease.
  local mine
  for i, lease in ipairs(live) do
    if lease.id == id then mine = i end
  end
  local grant = 0
  if mine and live[mine].seq >= seq then
    -- This very claim ran before (a retry after a lost answer): the same
    -- grant again. Or a claim older than the lease Redis holds arrived
    -- late: nothing.
    if live[mine].seq == seq then grant = live[mine].o end
  else
    if mine then
      -- The lease reported on gives back its unspent tokens; the rest of
      -- it (all of it, for a lease the instance never saw) is spent.
      if live[mine].seq == retire then level = level + min(unspent, live[mine].o) end
      table.remove(live, mine)
    end
    local avail = floor(level)
    grant = max(need, min(want, math.ceil(avail / divisor)))
    if grant > avail then grant = avail end
    if grant < need then grant = 0 end
    if grant > 0 then
      level = level - grant
      live[#live + 1] = { id = id, seq = seq, o = grant, exp = now + ttl }
    end
  end

  -- The state may be forgotten once every lease has expired and the level
  -- has refilled to burst from wherever it is (at least 0).
  local parts = { 'b:' .. string.format('%.17g', level) .. ':' .. num(now) }
  local last_exp = now
  for _, lease in ipairs(live) do
    parts[#parts + 1] = lease.id .. ':' .. num(lease.seq) .. ':' .. num(lease.o) .. ':' .. num(lease.exp)
    last_exp = max(last_exp, lease.exp)
  end
  local keep_us = (last_exp - now) + (burst - level) / rate
  local ms = min(math.ceil(keep_us / 1000), 2 ^ 50)
  if ms < 1 then ms = 1 end
  redis.call('SET', key, table.concat(parts, ' '), 'PX', num(ms))
  return num(grant) .. ' ' .. num(floor(level)) .. ' 0 0'
end

local out = {}
local a = 1
for i = 1, #KEYS do
  if ARGV[a] == 'f' then
    out[#out + 1] = fixed(KEYS[i], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]),
      tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4]))
    a = a + 5
  else
    out[#out + 1] = bucket(KEYS[i], ARGV[a + 1], tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]),
      tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5]), tonumber(ARGV[a + 6]), tonumber(ARGV[a + 7]),
      tonumber(ARGV[a + 8]), tonumber(ARGV[a + 9]), tonumber(ARGV[a + 10]), tonumber(ARGV[a + 11]))
    a = a + 12
  end
end
return table.concat(out, ' ')
