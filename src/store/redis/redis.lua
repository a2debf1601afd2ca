-- floodgate: the checks of one or more CounterStore::apply calls (a batch),
-- each call atomically and all-or-nothing, in one script call.
--
-- The same math as src/limit/{fixed_window,sliding_window,token_bucket}.rs
-- and the same commit rule as src/store/memory.rs (groups all-or-nothing,
-- count_when_denied, duplicate keys seeing earlier hits). Read those first:
-- this file mirrors them step by step.
--
-- Lua numbers are doubles. Instants are kept as (seconds, nanoseconds)
-- pairs so that a Unix time in nanoseconds (about 2^61) is never held in one
-- double; durations within a window are held in nanoseconds, exact while
-- below 2^53 ns (about 104 days). Products such as previous * (W - e) are
-- never formed: `muldiv` computes floor(a * b / c) and whether it rounded,
-- exactly, for a and c below 2^53.
--
-- A batch is several requests (apply calls), evaluated one after another in
-- the order sent, as if each were its own script call: a request sees every
-- hit committed by the requests before it. Each key is read at most once
-- and written at most once per batch. A request that fails (a key holding
-- another type: WRONGTYPE) is answered with its error and commits nothing;
-- its batch-mates are unaffected.
--
-- KEYS: the distinct counter keys of the whole batch.
-- ARGV[1]: "redis" to read Redis's TIME once for the batch (so every
--   floodgate instance shares one clock), or "caller": each request carries
--   its own now.
-- ARGV[2]: R, the number of requests; then each request:
--   with "caller", its now as seconds and nanoseconds (two fields);
--   n, the number of checks; then 7 fields per check:
--   key index (1-based into KEYS), algorithm ("f", "s" or "t"),
--   window in seconds, requests_per_unit, burst, hits, group.
--   A check's count_when_denied (already restricted to fixed windows) is
--   sent as the algorithm "F".
--   A calendar window (src/limit/calendar.rs) is the algorithm "c" ("C"
--   with count_when_denied) and its window field is four boundaries in
--   seconds, "p:s:e:x": the previous window's start, the current window's
--   start and end, and the next window's end, computed by the caller from
--   its own clock. The script counts in the one of those three windows that
--   contains its now (Redis's TIME may differ from the caller's clock by
--   far less than a day), clamped to the first or last.
--   d, then d groups already known to be denied (answered from the local
--   over-limit cache), treated as denied here.
--
-- Returns lines joined by "\n": first the nanoseconds of Redis's now (0
-- with the caller's clock), then one line per request, either "!" and its
-- error, or decimal integers separated by spaces:
-- - for a request of one fixed-window check and no denied group, 2: the
--   count with its hits ("used") and the seconds from now's second to the
--   window's end (the caller knows the rest: admitted is used <= limit,
--   the count after the call is used, or used - hits when nothing was
--   committed, and reset_after is those seconds minus now's nanoseconds);
-- - otherwise 6 per check: admitted (0/1), remaining, used, reset seconds,
--   reset nanoseconds (reset_after = s * 1e9 + ns, clamped at 0 by the
--   caller), and for a fixed window the key's count in its window after
--   this call (0 for the other algorithms): when it exceeds the limit, every
--   check of the key is denied until the window's end.
-- One string, not an array of values: the client parses one bulk reply far
-- more cheaply than many. Formatting a number costs Redis about half a
-- microsecond, hence the short form of the common request.

local E9 = 1000000000
local fmod, floor = math.fmod, math.floor

local caller_time = ARGV[1] == 'caller'
local now_s, now_n
if not caller_time then
  local t = redis.call('TIME')
  now_s = tonumber(t[1])
  now_n = tonumber(t[2]) * 1000
end

-- A number in decimal. Memoised: a batch formats the same window starts,
-- expiries and small counts again and again, and each string.format costs
-- Redis about half a microsecond.
-- Zero is spelt "0" whatever its sign: -0 (from -now_n at a whole second)
-- and 0 are one table key, and a state written as "-0" would not decode.
local formatted = { [0] = '0' }
local function num(x)
  local text = formatted[x]
  if not text then
    text = string.format('%.0f', x)
    formatted[x] = text
  end
  return text
end

local function encode(st)
  if st.k == 'f' then return 'f:' .. num(st.s) .. ':' .. num(st.c) end
  if st.k == 's' then return 's:' .. num(st.s) .. ':' .. num(st.c) .. ':' .. num(st.p) end
  return 't:' .. num(st.s) .. ':' .. num(st.n)
end

local function decode(raw)
  if not raw then return nil end
  local k, a, b, p = string.match(raw, '^(%a):(%d+):(%d+):?(%d*)$')
  if not k then return nil end
  a, b = tonumber(a), tonumber(b)
  if k == 'f' then return { k = 'f', s = a, c = b } end
  if k == 's' then return { k = 's', s = a, c = b, p = tonumber(p) or 0 } end
  if k == 't' then return { k = 't', s = a, n = b } end
  return nil
end


-- The batch's view of its keys: the state each request sees (read once;
-- false for none), and the last state committed to each key with the
-- instant it expires and the now it was committed at (written once, at the
-- end): w_st[k] false means delete.
local states = {}
local w_st, w_xs, w_xn, w_ns, w_nn = {}, {}, {}, {}, {}

local function load(k)
  local st = states[k]
  if st == nil then
    local raw = redis.pcall('GET', KEYS[k])
    if type(raw) == 'table' and raw.err then error(raw.err, 0) end
    st = decode(raw) or false
    states[k] = st
  end
  return st or nil
end

-- Commits a request's new state of key k: expiring at (xs, xn), or none
-- (deleted) when that is not after now.
local function commit(k, st, xs, xn)
  if xs > now_s or (xs == now_s and xn > now_n) then
    states[k] = st
    w_st[k], w_xs[k], w_xn[k], w_ns[k], w_nn[k] = st, xs, xn, now_s, now_n
  else
    states[k] = false
    w_st[k] = false
  end
end

-- The general machinery (every algorithm, several checks, groups), set up
-- on the first request that needs it: creating its closures costs more
-- than a batch of one-check fixed-window requests does without them.
local function setup()

  -- floor(a * b / c) and whether the division left a remainder, exactly for
  -- integers 0 <= a, c < 2^53 and any integer-valued b: shift-and-add over
  -- b's bits keeping a * x = q * c + r with 0 <= r < c, so no intermediate
  -- exceeds 2c.
  local function muldiv(a, b, c)
    if a == 0 or b == 0 then return 0, false end
    if c < 1 then c = 1 end
    local ar = fmod(a, c)
    local aq = (a - ar) / c
    local bits, x = {}, b
    while x > 0 do
      local bit = fmod(x, 2)
      bits[#bits + 1] = bit
      x = (x - bit) / 2
    end
    local q, r = 0, 0
    for i = #bits, 1, -1 do
      q = q * 2
      if r >= c - r then r = r - (c - r); q = q + 1 else r = r + r end
      if bits[i] == 1 then
        q = q + aq
        if r >= c - ar then r = r - (c - ar); q = q + 1 else r = r + ar end
      end
    end
    return q, r > 0
  end

  local function muldiv_ceil(a, b, c)
    local q, rounded = muldiv(a, b, c)
    if rounded then return q + 1 end
    return q
  end

  -- StoredWindow::classify
  local function classify(stored, current, w)
    if stored == current then return 'current' end
    if stored == current - w then return 'previous' end
    if stored == current + w then return 'next' end
    return 'stale'
  end

  local function window_start(w)
    return now_s - fmod(now_s, w)
  end

  -- fixed_window::evaluate's result: c's hits on top of count, in the window
  -- [start, finish) (seconds).
  local function counted_in(c, start, finish, count)
    local used = count + c.hits
    local admitted = used <= c.rpu
    return {
      admitted = admitted,
      remaining = admitted and (c.rpu - used) or 0,
      used = used,
      rs = finish - now_s, rn = -now_n,
      state = { k = 'f', s = start, c = used },
      xs = finish, xn = 0,
    }
  end

  -- fixed_window::evaluate
  local function fixed(c, st)
    local w = c.w
    local cur = window_start(w)
    local start, count = cur, 0
    if st and st.k == 'f' then
      local where = classify(st.s, cur, w)
      if where == 'current' or where == 'next' then start, count = st.s, st.c end
    end
    return counted_in(c, start, start + w, count)
  end

  -- fixed_window::evaluate with a calendar: the window containing now among
  -- the caller's boundaries, and the next window's end (nil for the last).
  local function calendar_window(b)
    if now_s < b[2] then return b[1], b[2], b[3] end
    if now_s < b[3] then return b[2], b[3], b[4] end
    return b[3], b[4], nil
  end

  local function calendar(c, st)
    local cur, stop, after = calendar_window(c.bounds)
    local start, finish, count = cur, stop, 0
    if st and st.k == 'f' then
      if st.s == cur then count = st.c
      elseif st.s == stop and after then start, finish, count = stop, after, st.c end
    end
    return counted_in(c, start, finish, count)
  end

  -- sliding_window::admissible_at's wait_into, in nanoseconds
  local function wait_into(decaying, allowed, wn)
    if decaying < 1 then decaying = 1 end
    if allowed >= decaying then return 0 end
    return wn - muldiv(allowed, wn, decaying)
  end

  -- sliding_window::evaluate
  local function sliding(c, st)
    local w = c.w
    local wn = w * E9
    local cur = window_start(w)
    local start, current, previous = cur, 0, 0
    if st and st.k == 's' then
      local where = classify(st.s, cur, w)
      if where == 'current' or where == 'next' then
        start, current, previous = st.s, st.c, st.p
      elseif where == 'previous' then
        previous = st.c
      end
    end
    local elapsed = (now_s - start) * E9 + now_n
    if elapsed < 0 then elapsed = 0 end
    local estimate = muldiv_ceil(previous, wn - elapsed, wn) + current
    local total = estimate + c.hits
    local admitted = total <= c.rpu
    local current_after = current + c.hits
    local stop = start + w
    local fs, fn
    if current_after > 0 then fs, fn = stop + w, 0
    elseif previous > 0 then fs, fn = stop, 0
    else fs, fn = now_s, now_n end
    local rs, rn
    if admitted then
      rs, rn = fs, fn
    elseif c.hits > c.rpu then
      rs, rn = stop + w, 0
    else
      local room = c.rpu - c.hits
      if current <= room then
        rs, rn = start, wait_into(previous, room - current, wn)
      else
        rs, rn = stop, wait_into(current, room, wn)
      end
    end
    return {
      admitted = admitted,
      remaining = admitted and (c.rpu - total) or 0,
      used = total,
      rs = rs - now_s, rn = rn - now_n,
      state = { k = 's', s = start, c = current_after, p = previous },
      xs = fs, xn = fn,
    }
  end

  -- token_bucket::evaluate, with d = tat - now in nanoseconds: the Rust code's
  -- scaled debt is d * rpu, so its comparisons become
  --   after <= capacity  <=>  hits + ceil(d * rpu / W) <= burst
  -- and its divisions become d + ceil(hits * W / rpu) and friends.
  local function bucket(c, st)
    local w = c.w
    local wn = w * E9
    local has = st and st.k == 't'
    if c.rpu == 0 or c.burst == 0 then
      local ts, tn = now_s, now_n
      if has and (st.s > now_s or (st.s == now_s and st.n > now_n)) then ts, tn = st.s, st.n end
      local admitted = c.hits == 0
      return {
        admitted = admitted, remaining = 0, used = c.hits,
        rs = 0, rn = admitted and 0 or wn,
        state = { k = 't', s = ts, n = tn }, xs = ts, xn = tn,
      }
    end
    local d = 0
    if has then
      d = (st.s - now_s) * E9 + (st.n - now_n)
      if d < 0 then d = 0 end
    end
    local taken = muldiv_ceil(d, c.rpu, wn)
    if taken > c.burst + c.rpu then d, taken = 0, 0 end -- "Clocks going backwards"
    local admitted = c.hits <= c.burst and taken <= c.burst - c.hits
    local ahead = d + muldiv_ceil(c.hits, wn, c.rpu)
    local reset
    if admitted then
      reset = ahead
    elseif c.hits > c.burst then
      reset = math.max(d, wn)
    else
      reset = d - muldiv(c.burst - c.hits, wn, c.rpu)
    end
    local total = now_n + ahead
    local tn = fmod(total, E9)
    local ts = now_s + (total - tn) / E9
    return {
      admitted = admitted,
      remaining = admitted and (c.burst - c.hits - taken) or 0,
      used = c.hits + taken,
      rs = 0, rn = reset,
      state = { k = 't', s = ts, n = tn },
      xs = ts, xn = tn,
    }
  end

  local function evaluate(c, st)
    if c.algo == 'f' then return fixed(c, st) end
    if c.algo == 'c' then return calendar(c, st) end
    if c.algo == 's' then return sliding(c, st) end
    return bucket(c, st)
  end


  -- One request: n checks whose fields start after ARGV[b], then its denied
  -- groups from ARGV[g].
  local function request(b, n, g, d)
    local checks = {}
    for i = 1, n do
      local base = b + (i - 1) * 7
      local algo = ARGV[base + 2]
      local bounds
      if algo == 'c' or algo == 'C' then
        local p, s, e, x = string.match(ARGV[base + 3], '^(%d+):(%d+):(%d+):(%d+)$')
        bounds = { tonumber(p), tonumber(s), tonumber(e), tonumber(x) }
      end
      checks[i] = {
        key = tonumber(ARGV[base + 1]),
        algo = string.lower(algo),
        cwd = algo == 'F' or algo == 'C',
        bounds = bounds,
        w = tonumber(ARGV[base + 3]),
        rpu = tonumber(ARGV[base + 4]),
        burst = tonumber(ARGV[base + 5]),
        hits = tonumber(ARGV[base + 6]),
        group = ARGV[base + 7],
      }
    end
    local denied = {}
    for i = g, g + d - 1 do denied[ARGV[i]] = true end

    -- Pass 1 (MemoryStore::apply_many): each check sees the stored state plus
    -- the hits of earlier checks on its key that may still be committed.
    local last_seen, earlier, seen, evals = {}, {}, {}, {}
    for i = 1, n do
      local c = checks[i]
      local j = last_seen[c.key]
      earlier[i] = j
      last_seen[c.key] = i
      local st
      if j then
        if evals[j].admitted or checks[j].cwd then st = evals[j].state else st = seen[j] end
      else
        st = load(c.key)
      end
      seen[i] = st
      evals[i] = evaluate(c, st)
      if not evals[i].admitted then denied[c.group] = true end
    end

    -- Pass 2: replay only the committed hits.
    local after_state, after_eval = {}, {}
    for i = 1, n do
      local c = checks[i]
      local before, done
      local j = earlier[i]
      if j then before, done = after_state[j], after_eval[j] else before, done = seen[i], nil end
      local commits = c.hits > 0 and (not denied[c.group] or (c.cwd and not evals[i].admitted))
      if commits then
        local ev = evals[i]
        if before ~= seen[i] then ev = evaluate(c, before) end
        after_state[i], after_eval[i] = ev.state, ev
      else
        after_state[i], after_eval[i] = before, done
      end
    end

    local out = {}
    for i = 1, n do
      local c = checks[i]
      local ev = evals[i]
      local final_count = 0
      if c.algo == 'f' then
        local final = after_state[last_seen[c.key]]
        if final then final_count = fixed({ w = c.w, rpu = c.rpu, hits = 0 }, final).used end
      elseif c.algo == 'c' then
        local final = after_state[last_seen[c.key]]
        if final then final_count = calendar({ bounds = c.bounds, rpu = c.rpu, hits = 0 }, final).used end
      end
      out[#out + 1] = ev.admitted and 1 or 0
      out[#out + 1] = num(ev.remaining)
      out[#out + 1] = num(ev.used)
      out[#out + 1] = num(ev.rs)
      out[#out + 1] = num(ev.rn)
      out[#out + 1] = num(final_count)
    end

    -- Commit each changed key once, at its last occurrence: nothing of this
    -- request is committed before every check was evaluated.
    for i = 1, n do
      local c = checks[i]
      local ev = after_eval[i]
      if last_seen[c.key] == i and ev then commit(c.key, ev.state, ev.xs, ev.xn) end
    end
    return table.concat(out, ' ')
  end

  return request
end

local general
-- The first line: the nanoseconds of Redis's now (0 with the caller's
-- clock), which one-check fixed-window lines leave out.
local lines = { caller_time and '0' or num(now_n) }
local p = 3
for r = 1, tonumber(ARGV[2]) do
  if caller_time then
    now_s, now_n = tonumber(ARGV[p]), tonumber(ARGV[p + 1])
    p = p + 2
  end
  local n = tonumber(ARGV[p])
  local g = p + 1 + 7 * n
  local d = tonumber(ARGV[g])
  local algo = ARGV[p + 2]
  if n == 1 and d == 0 and (algo == 'f' or algo == 'F') then
    -- One fixed-window check, no group denied: fixed(), pass 1, pass 2
    -- and the commit, specialised (and without pcall: only the read can
    -- fail, and redis.pcall reports that).
    local k = tonumber(ARGV[p + 1])
    local st = states[k]
    local failure
    if st == nil then
      local raw = redis.pcall('GET', KEYS[k])
      if type(raw) == 'table' and raw.err then
        failure = raw.err
      else
        st = decode(raw) or false
        states[k] = st
      end
    end
    if failure then
      lines[r + 1] = '!' .. string.gsub(tostring(failure), '\n', ' ')
    else
      local w = tonumber(ARGV[p + 3])
      local rpu = tonumber(ARGV[p + 4])
      local hits = tonumber(ARGV[p + 6])
      local cur = now_s - fmod(now_s, w)
      local start, count = cur, 0
      if st and st.k == 'f' and (st.s == cur or st.s == cur + w) then start, count = st.s, st.c end
      local used = count + hits
      local admitted = used <= rpu
      local final_count = count
      if hits > 0 and (admitted or algo == 'F') then
        final_count = used
        if start + w > now_s then
          if st and st.k == 'f' then
            -- The batch's own copy of the state: updated in place.
            st.s, st.c = start, used
          else
            st = { k = 'f', s = start, c = used }
            states[k] = st
          end
          w_st[k], w_xs[k], w_xn[k], w_ns[k], w_nn[k] = st, start + w, 0, now_s, now_n
        else
          states[k] = false
          w_st[k] = false
        end
      end
      -- The caller derives the rest: admitted is used <= rpu, the count
      -- is used or used - hits, the reset is this minus now_n.
      lines[r + 1] = num(used) .. ' ' .. num(start + w - now_s)
    end
  else
    general = general or setup()
    local ok, line = pcall(general, p, n, g + 1, d)
    if ok then
      lines[r + 1] = line
    else
      lines[r + 1] = '!' .. string.gsub(tostring(line), '\n', ' ')
    end
  end
  p = g + 1 + d
end

-- Write each key once, with its last committed state. PX is relative, not
-- PXAT: with the caller's clock, "now" need not be Redis's. Rounded up to
-- the next millisecond.
for k, st in pairs(w_st) do
  if st then
    local ms = (w_xs[k] - w_ns[k]) * 1000 + math.ceil((w_xn[k] - w_nn[k]) / 1000000)
    redis.call('SET', KEYS[k], encode(st), 'PX', num(math.max(ms, 1)))
  else
    redis.call('DEL', KEYS[k])
  end
end

return table.concat(lines, '\n')
