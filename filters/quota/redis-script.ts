// The Lua side of quota decisions: token bucket + daily quota + rolling budget, evaluated and
// consumed together atomically in one round trip. The rules are the ones of token-bucket.ts,
// local-limiter.ts and rolling-budget.ts; Redis's own clock (TIME) is the bucket's clock, so
// proxies with skewed clocks still share one bucket. One call carries the decisions a worker
// thread made in one event-loop turn (a batch of 1 on a quiet proxy), grouped by rule (same
// tenant, kind, limits and day): each decision is still made atomically, in order, with the
// same result as one call per decision, but a group reads its hashes once, keeps them in Lua
// locals between its decisions and writes them back once, and its constant arguments travel
// once. Groups run one after the other, so two groups on one hash (a tenant's budget under two
// kinds) see each other's writes.
//
// Group g (its 2 keys, 3 when it carries pending units, after the keys of the groups before it;
// ARGV from p + 1, p = the arguments of the groups before it):
// KEYS     kind hash   tk, ts, d, u, z, e    (quotaKeys.kind; z/e: the zone d is counted in, its end)
//          budget hash h, tot, bm, n, ra, rn, ru, m<ppm> (when threshold ppm last fired), b<i>
//                      (quotaKeys.budget; unused without budget)
//          push token  (only with pending units ≠ 0) the reconciliation's token key of these
//                      units (RECONCILE_LUA): set once they are charged, and they are charged only
//                      when it is not set. A call whose reply is lost (the connection dropped
//                      after the script ran) hands its units to the reconciliation under this
//                      token, which then applies them only if this call did not.
// ARGV     p+1 decisions in the group (c)   p+2 day (local day no.)   p+3 pending units (outage
//          use to reconcile, charged before the group's first decision; negative: a late reply
//          counted a request the outage policy refused)
//          constant per rule: p+4 rate (micro-units/ms, 0 = no bucket)   p+5 capacity (micro-units)
//          p+6 limitPerDay (-1 = none)   p+7 budget units (-1 = none)   p+8 bucket ms   p+9 buckets
//          p+10 hard cap (0|1)   p+11 shadow mask (1 rate, 2 daily, 4 budget)   p+12 threshold
//          count   p+13..p+16 thresholds (ppm)   p+17 zoneCode of the tenant's time zone (0: not
//          known: the day is compared by number only)
//          per group again: p+18 when the day `day` ends in that zone (ms; 0 with zone 0)
//          p+19..p+18+c the cost (units) of each decision
// returns  groups in order; per group the state before its first decision: used, then tokens
//          when the rule has a bucket and the budget total when it has a budget (the reader
//          knows the rule); then per decision a flags value: bit 0 allowed, bits 1-3 the refusing
//          rule, bits 4-7 thresholds fired, bits 8-10 rules a shadow rule would have refused,
//          bit 11 the daily quota refused too (the refusing rule is then the bucket or the budget,
//          whichever frees up later; the proxy, which knows the tenant's midnight, picks between
//          that and the day).
//          Flags 1 (admitted, nothing fired, no shadow rule tripped: the decision took its cost
//          from every rule) stand alone — the reader applies the cost to the state; any other
//          flags are followed by used, retryMs and the tokens / budget total the rule has, after
//          the decision. An all-admitted batch is then one value per decision, not eight: less to
//          encode for Redis and much less for ioredis to parse (~170 ns per integer).
//          A group that failed on its own keys is one value instead: the error text (a bulk
//          string, where its first value is always an integer), and nothing for its decisions.
// call     after the last group's keys and arguments, a writing call's connection marker (the
//          last key; CALL_MARKER_TTL_MS) and its number on that connection (the last argument):
//          set to the number once the call has run. Redis runs one connection's calls in order,
//          so the marker tells a call whose reply was lost (the connection dropped) from one that
//          never reached Redis: the outage policy's count of its requests goes to the
//          reconciliation (RECONCILE_LUA), charged only if it never ran. A marker the
//          reconciliation closed ('c' and the last number that ran) refuses the call: one still on
//          its way over the dropped connection (IGWSTALE) must not count what was pushed for it.
// read-only ARGV after the last group's: 'peek' (PEEK_ARG) instead of the marker and number. The
//          same decisions and reply, but nothing is written: what the limits would say now, as
//          Redis holds them (a concurrency refusal names the limit that frees up last). A pending
//          group's token key is only read; each group sees Redis as it is (not the groups before it).
export const GROUP_HEAD = 18
/**
 * How long Redis remembers a push token (a reconciliation's, or a decision group's pending
 * units'): as long as it keeps the usage the units went into.
 */
export const PUSH_TOKEN_TTL_MS = 172_800_000
/**
 * How long a connection's call marker (DECIDE_LUA) outlives its last call: the reconciliation must
 * read it within this time of the connection's drop, or charges the lost calls' requests again.
 * One key per connection that made a call: a reconnecting proxy leaves few.
 */
export const CALL_MARKER_TTL_MS = 3_600_000
/** The trailing argument of a read-only decision call (DECIDE_LUA). */
export const PEEK_ARG = 'peek'
export const DECIDE_LUA = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ro = ARGV[#ARGV] == '${PEEK_ARG}'
local mark = nil
if not ro then
  mark = KEYS[#KEYS]
  local m = redis.call('GET', mark)
  if m and string.sub(m, 1, 1) == 'c' then return redis.error_reply('IGWSTALE the proxy gave this connection up and accounted for its calls') end
end
-- Budget bucket fields: read-only, what a write would have left is kept here (false: deleted).
local bview = {}
local function bget(K2, f)
  local v = bview[f]
  if v == false then return nil end
  if v ~= nil then return v end
  return tonumber(redis.call('HGET', K2, f))
end
local function bdel(K2, f)
  if ro then bview[f] = false else redis.call('HDEL', K2, f) end
end

-- thresholds crossed at this ratio that did not fire within the window: mark them, return the bits.
-- A marker belongs to its threshold's value (field m<ppm>), not to its position in the list: a
-- reload that adds, removes or reorders thresholds neither fires one again that already fired in
-- this window nor silences one that has not (as rolling-budget.ts). f1..f4: markers by position
-- from an older script, taken over (once) by the thresholds now at those positions. exhausted: a
-- hard cap refused a cost the rest could not hold, which reaches the threshold 1 (100 %) only.
local function crossed(K2, A, ratio, windowMs, exhausted)
  if ro then return 0 end
  local nth = math.min(tonumber(ARGV[A + 12]), 4)
  if nth == 0 then return 0 end
  local full = exhausted and tonumber(ARGV[A + 12 + nth]) >= 1000000
  if ratio * 1000000 < tonumber(ARGV[A + 13]) and not full then return 0 end
  local names = {}
  for i = 1, nth do names[i] = 'm' .. tonumber(ARGV[A + 12 + i]) end
  local f = redis.call('HMGET', K2, 'f1', 'f2', 'f3', 'f4', unpack(names))
  local legacy = f[1] or f[2] or f[3] or f[4]
  local bits = 0
  local w = {}
  for i = 1, nth do
    local at = tonumber(f[4 + i])
    if at == nil and legacy then
      at = tonumber(f[i])
      if at ~= nil and at ~= 0 then w[#w + 1] = names[i]; w[#w + 1] = at end
    end
    at = at or 0
    local th = tonumber(ARGV[A + 12 + i])
    if (ratio * 1000000 >= th or (exhausted and th >= 1000000)) and (at == 0 or now - at >= windowMs) then
      w[#w + 1] = names[i]; w[#w + 1] = now
      bits = bits + 2 ^ (i - 1)
    end
  end
  if #w > 0 then redis.call('HSET', K2, unpack(w)) end
  if legacy then redis.call('HDEL', K2, 'f1', 'f2', 'f3', 'f4') end
  return bits
end

local out = {}
local o = 0

-- one group: the decisions of one rule, in order
local function group(K1, K2, K3, A)
  if ro then bview = {} end
  local count = tonumber(ARGV[A + 1])
  local day = tonumber(ARGV[A + 2])
  local pending = tonumber(ARGV[A + 3])
  -- these units were charged already (by a reconciliation under the same token)
  if pending ~= 0 and redis.call('EXISTS', K3) == 1 then pending = 0 end
  local rate = tonumber(ARGV[A + 4])
  local cap = tonumber(ARGV[A + 5])
  local limit = tonumber(ARGV[A + 6])
  local bunits = tonumber(ARGV[A + 7])
  local shadow = tonumber(ARGV[A + 11])

  local zone = tonumber(ARGV[A + 17])
  local dend = tonumber(ARGV[A + 18])

  local h = redis.call('HMGET', K1, 'tk', 'ts', 'd', 'u', 'z', 'e')
  local tokens = tonumber(h[1])
  local ts = tonumber(h[2])
  local d = tonumber(h[3])
  local used = tonumber(h[4]) or 0
  local z = tonumber(h[5])
  local e = tonumber(h[6])
  if rate > 0 then
    if tokens == nil or ts == nil then tokens = cap; ts = now end
    if tokens > cap then tokens = cap end
    if now > ts then
      tokens = tokens + (now - ts) * rate
      if tokens > cap then tokens = cap end
    end
  else
    tokens = 0
  end
  -- A new day resets the usage; a day number going back (a proxy's clock behind) does not. The
  -- day numbers of two zones differ by up to two: after the tenant's time zone changed, the units
  -- of the old zone's day (while it lasts) are carried into the new zone's day, whose midnight
  -- resets them (no free reset at the edit, no lock-out until the old day number comes round).
  local newday = d == nil
  local rezone = false
  if not newday then
    if zone ~= 0 and z ~= nil and z ~= zone then
      if e == nil or now >= e then newday = true else rezone = d ~= day end
    else
      newday = day > d
    end
  end
  if newday then d = day; used = 0 end
  if rezone then d = day end
  local markzone = zone ~= 0 and d == day and (z ~= zone or e ~= dend)
  -- units proxies admitted on their own during an outage: charged to the day and the bucket now
  if pending ~= 0 then
    used = used + pending
    if used < 0 then used = 0 end
    if pending > 0 and rate > 0 then
      tokens = tokens - pending * 1000000
      if tokens < 0 then tokens = 0 end
    end
  end

  -- the rolling budget: h (newest bucket), tot, bm/n (shape), ra/rn/ru (cached retry-at for a cost
  -- under a budget of ru units: a reload that changes the units must not reuse the old wait);
  -- add: units for the newest bucket not written yet
  local total, bm, n, head, ra, rn, ru, add = 0, 0, 0, 0, 0, 0, 0, 0
  local setb = nil
  local dirty = false
  if bunits >= 0 then
    bm = tonumber(ARGV[A + 8])
    n = tonumber(ARGV[A + 9])
    local cur = math.floor(now / bm)
    local b = redis.call('HMGET', K2, 'h', 'tot', 'bm', 'n', 'ra', 'rn', 'ru')
    head = tonumber(b[1])
    total = tonumber(b[2]) or 0
    ra = tonumber(b[5]) or 0
    rn = tonumber(b[6]) or 0
    ru = tonumber(b[7]) or -1
    local on = tonumber(b[4])
    if head == nil or tonumber(b[3]) ~= bm or on ~= n then
      -- first use, or the window's shape changed: carry the total as one lump (never forgive usage)
      if head ~= nil and on ~= nil then
        for i = 0, on - 1 do bdel(K2, 'b' .. i) end
      end
      if head == nil then total = 0 end
      head = cur
      add = total
      ra = 0
      setb = { 'h', head, 'bm', bm, 'n', n }
      if not ro then redis.call('PEXPIRE', K2, bm * n + bm) end
    elseif cur > head then
      if cur - head >= n then
        for i = 0, n - 1 do bdel(K2, 'b' .. i) end
        total = 0
      else
        for k = head + 1, cur do
          local f = 'b' .. (k % n)
          local v = bget(K2, f)
          if v ~= nil then
            total = total - v
            bdel(K2, f)
          end
        end
        if total < 0 then total = 0 end
      end
      head = cur
      setb = { 'h', head }
      if not ro then redis.call('PEXPIRE', K2, bm * n + bm) end
    end
    if pending ~= 0 then
      total = total + pending
      if total < 0 then total = 0 end
      add = add + pending
      ra = 0
    end
    dirty = add ~= 0
  end
  local ora, orn, oru = ra, rn, ru
  local hardcap = bunits >= 0 and tonumber(ARGV[A + 10]) == 1
  local hasRate = rate > 0
  local hasBudget = bunits >= 0
  o = o + 1; out[o] = used
  if hasRate then o = o + 1; out[o] = tokens end
  if hasBudget then o = o + 1; out[o] = total end

  for j = 1, count do
    local cost = tonumber(ARGV[A + ${GROUP_HEAD} + j])
    local costM = cost * 1000000
    local failed = 0
    if rate > 0 and tokens < costM then failed = 1 end
    -- a limit of 0 switches the kind off (the control plane's suspension)
    if limit >= 0 and (limit == 0 or used + cost > limit) then failed = failed + 2 end
    if hardcap and total + cost > bunits then failed = failed + 4 end
    -- a cost-0 operation takes nothing, so nothing runs out under it: it passes a day or budget
    -- used up, or over a lowered limit; only a suspension refuses it
    if cost == 0 then failed = limit == 0 and 2 or 0 end

    local would = bit.band(failed, shadow)
    local enforced = failed - would
    local reason = 0
    local retry = 0
    local fired = 0
    local dailyToo = 0
    if enforced ~= 0 then
      -- every refusing rule must pass before a retry can: report the one that frees up last
      if bit.band(enforced, 1) ~= 0 then
        reason = 1
        retry = math.ceil((costM - tokens) / rate)
      end
      if bit.band(enforced, 4) ~= 0 then
        if ra <= now or rn ~= cost or ru ~= bunits then
          -- when enough old buckets leave the window; cached (ra, for cost rn) while rejections repeat.
          -- The buckets hold the earlier decisions' units (as with one call per decision), not
          -- this decision's own carried lump or pending units.
          if j > 1 and add ~= 0 then
            local f = 'b' .. (head % n)
            if ro then bview[f] = (bget(K2, f) or 0) + add else redis.call('HINCRBY', K2, f, add) end
            add = 0
          end
          rn = cost
          ru = bunits
          local excess = total + cost - bunits
          ra = now + bm * n
          for k = head - n + 1, head do
            local v = bget(K2, 'b' .. (k % n)) or 0
            excess = excess - v
            if excess <= 0 then ra = (k + n) * bm; break end
          end
        end
        if reason == 0 or ra - now > retry then
          reason = 4
          retry = ra - now
        end
        fired = crossed(K2, A, total / bunits, bm * n, true)
      end
      if bit.band(enforced, 2) ~= 0 then
        if reason == 0 then
          reason = 2
          retry = -1
        else
          dailyToo = 2048
        end
      end
    else
      if rate > 0 and failed % 2 == 0 then tokens = tokens - costM end
      used = used + cost
      if bunits >= 0 then
        total = total + cost
        add = add + cost
        dirty = true
        ra = 0
        fired = crossed(K2, A, total / bunits, bm * n, false)
      end
    end
    local flags = (enforced == 0 and 1 or 0) + reason * 2 + fired * 16 + would * 256 + dailyToo
    o = o + 1; out[o] = flags
    if flags ~= 1 then
      out[o + 1] = used
      out[o + 2] = retry
      o = o + 2
      if hasRate then o = o + 1; out[o] = tokens end
      if hasBudget then o = o + 1; out[o] = total end
    end
  end

  if ro then return A + ${GROUP_HEAD} + count end
  -- the budget first: HINCRBY is the one write that can fail on a damaged field (not an
  -- integer), and then the kind hash has not been charged for decisions that fail
  if bunits >= 0 then
    if add ~= 0 then redis.call('HINCRBY', K2, 'b' .. (head % n), add) end
    local w = setb or {}
    if dirty or setb then w[#w + 1] = 'tot'; w[#w + 1] = total end
    if ra ~= ora or rn ~= orn or ru ~= oru then w[#w + 1] = 'ra'; w[#w + 1] = ra; w[#w + 1] = 'rn'; w[#w + 1] = rn; w[#w + 1] = 'ru'; w[#w + 1] = ru end
    if #w > 0 then redis.call('HSET', K2, unpack(w)) end
  end
  if rate > 0 then
    if newday or rezone then redis.call('HSET', K1, 'tk', tokens, 'ts', now, 'u', used, 'd', d)
    else redis.call('HSET', K1, 'tk', tokens, 'ts', now, 'u', used) end
  elseif newday or rezone then redis.call('HSET', K1, 'u', used, 'd', d)
  else redis.call('HSET', K1, 'u', used) end
  if markzone then redis.call('HSET', K1, 'z', zone, 'e', dend) end
  -- the key outlives its day by a day (the control plane reads yesterday's figure); refreshed daily
  if newday or rezone then redis.call('PEXPIRE', K1, 172800000) end
  -- last: a group that failed before this did not charge them, and its token stays free
  if pending ~= 0 then redis.call('SET', K3, '1', 'PX', ${PUSH_TOKEN_TTL_MS}) end
  return A + ${GROUP_HEAD} + count
end

-- A group that fails on its own keys (WRONGTYPE: another tool's key under our prefix; a budget
-- bucket that is not an integer) must not fail the other tenants of the call: its slot in the reply is
-- the error text instead. Its reads come before its writes, so a key of the wrong type fails it
-- before it wrote anything. Errors about Redis itself (OOM, READONLY, NOPERM, MISCONF, …: an
-- upper-case code other than ERR and WRONGTYPE) still fail the whole call: that is an outage.
local A = 0
local kx = 1
while kx < #KEYS do
  local o0 = o
  local K3 = nil
  if tonumber(ARGV[A + 3]) ~= 0 then K3 = KEYS[kx + 2] end
  local ok, res = pcall(group, KEYS[kx], KEYS[kx + 1], K3, A)
  kx = kx + (K3 and 3 or 2)
  if ok then
    A = res
  else
    if type(res) == 'table' then res = res.err end
    res = tostring(res)
    local code = string.match(res, '^(%u+) ')
    if code ~= nil and code ~= 'ERR' and code ~= 'WRONGTYPE' then return redis.error_reply(res) end
    for i = o0 + 1, o do out[i] = nil end
    o = o0 + 1; out[o] = res
    A = A + ${GROUP_HEAD} + tonumber(ARGV[A + 1])
  end
end
if mark then redis.call('SET', mark, ARGV[#ARGV], 'PX', ${CALL_MARKER_TTL_MS}) end
return out
`

/** Each proxy keeps a member in a sorted set; the live count divides limits under local-share. */
export const HEARTBEAT_LUA = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
redis.call('PEXPIRE', KEYS[1], ttl)
return redis.call('ZCARD', KEYS[1])
`

/**
 * Units a proxy admitted on its own during an outage, pushed to Redis once it answers again
 * (without waiting for that tenant's next request): into the day's usage (of the day they were
 * used), out of the bucket, into the current budget bucket (the ring brought to now first). Negative units take back a request
 * Redis counted after its decision had already been made locally (a late reply).
 * KEYS[1] kind hash, KEYS[2] budget hash, KEYS[3] the push's one-time token; ARGV 1 units, 2 day,
 * 3 the bucket's capacity (micro-units; 0: no bucket), 4 budget bucket ms and 5 buckets (0: no
 * budget), 6 the token's lifetime (ms). Optional KEYS[4] and ARGV 7: the connection marker and
 * number of a decision call whose outcome was lost (DECIDE_LUA): the units are the outage policy's
 * count of that call's requests, applied only if the call never ran (2: it did, nothing applied);
 * the marker is closed then, so the call cannot run any more. A marker gone (its TTL) reads as
 * never run. A bucket or budget Redis does not hold yet (a tenant first
 * seen during the outage, or its keys expired) starts with the units taken — full less them, the
 * ring's current bucket holding them — as the next decision carrying them would have: the units
 * are not dropped, handing the tenant a fresh burst and budget on recovery.
 * The script adds, so a push whose reply was lost (the connection dropped after Redis ran it) and
 * that the proxy sends again would count twice: the token (SET NX, after the reads that can fail on
 * a key of the wrong type, before any write) makes a repeat return 0 and change nothing; 1: applied.
 */
export const RECONCILE_LUA = `
local p = tonumber(ARGV[1])
local day = tonumber(ARGV[2])
local h = redis.call('HMGET', KEYS[1], 'tk', 'd', 'u')
local b = redis.call('HMGET', KEYS[2], 'h', 'n', 'tot', 'bm')
local mk = #KEYS >= 4 and (redis.call('GET', KEYS[4]) or '')
if not redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[6]) then return 0 end
if mk then
  local closed = string.sub(mk, 1, 1) == 'c'
  local last = tonumber(closed and string.sub(mk, 2) or mk) or 0
  if last >= tonumber(ARGV[7]) then return 2 end
  if not closed then redis.call('SET', KEYS[4], 'c' .. last, 'PX', ${CALL_MARKER_TTL_MS}) end
end
local d = tonumber(h[2])
if d == nil or d < day then
  redis.call('HSET', KEYS[1], 'd', day, 'u', math.max(0, p))
  -- z/e described the replaced day; the next decision writes them for this one
  redis.call('HDEL', KEYS[1], 'z', 'e')
elseif d == day then
  local u = (tonumber(h[3]) or 0) + p
  if u < 0 then u = 0 end
  redis.call('HSET', KEYS[1], 'u', u)
end
local cap = tonumber(ARGV[3]) or 0
local nowMs = nil
local function clock()
  if nowMs == nil then
    local t = redis.call('TIME')
    nowMs = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  return nowMs
end
if p > 0 and h[1] then
  local tk = tonumber(h[1]) - p * 1000000
  if tk < 0 then tk = 0 end
  redis.call('HSET', KEYS[1], 'tk', tk)
elseif p > 0 and cap > 0 then
  local tk = cap - p * 1000000
  if tk < 0 then tk = 0 end
  redis.call('HSET', KEYS[1], 'tk', tk, 'ts', clock())
end
redis.call('PEXPIRE', KEYS[1], 172800000)
local sbm = tonumber(ARGV[4]) or 0
local sn = tonumber(ARGV[5]) or 0
if not (b[1] and b[2]) and p > 0 and sbm > 0 and sn > 0 then
  local head = math.floor(clock() / sbm)
  redis.call('HSET', KEYS[2], 'h', head, 'bm', sbm, 'n', sn, 'tot', p, 'b' .. (head % sn), p, 'ra', 0)
  redis.call('PEXPIRE', KEYS[2], sbm * sn + sbm)
elseif b[1] and b[2] then
  local head = tonumber(b[1])
  local n = tonumber(b[2])
  local bm = tonumber(b[4])
  local tot = tonumber(b[3]) or 0
  -- The ring's newest bucket is the last decision's, from before the outage: bring it to now
  -- first (as a decision does), so the units go into the bucket they were used in and stay in the
  -- window for a whole window — in the stale bucket they left it early, or were dropped by the
  -- next decision at once when the outage was longer than the window.
  if bm then
    local cur = math.floor(clock() / bm)
    if cur > head then
      if cur - head >= n then
        for i = 0, n - 1 do redis.call('HDEL', KEYS[2], 'b' .. i) end
        tot = 0
      else
        for k = head + 1, cur do
          local f = 'b' .. (k % n)
          local v = tonumber(redis.call('HGET', KEYS[2], f))
          if v ~= nil then
            tot = tot - v
            redis.call('HDEL', KEYS[2], f)
          end
        end
        if tot < 0 then tot = 0 end
      end
      head = cur
      redis.call('HSET', KEYS[2], 'h', head)
      redis.call('PEXPIRE', KEYS[2], bm * n + bm)
    end
  end
  tot = tot + p
  if tot < 0 then tot = 0 end
  redis.call('HINCRBY', KEYS[2], 'b' .. (head % n), p)
  redis.call('HSET', KEYS[2], 'tot', tot, 'ra', 0)
end
return 1
`

/**
 * The budget totals Redis holds now (for the `igw_budget_used_ratio` gauge), one per KEYS[i]
 * (budget hashes): `tot` less the buckets that left the window since the ring's last decision,
 * on Redis's clock. Read-only; -1 for a key Redis refuses (the caller keeps its own figure).
 */
export const BUDGET_TOTALS_LUA = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i = 1, #KEYS do
  local b = redis.pcall('HMGET', KEYS[i], 'h', 'tot', 'bm', 'n')
  local tot = -1
  if b.err == nil then
    local head, bm, n = tonumber(b[1]), tonumber(b[3]), tonumber(b[4])
    tot = 0
    if head ~= nil and bm ~= nil and n ~= nil and bm > 0 then
      local cur = math.floor(now / bm)
      if cur - head < n then
        tot = tonumber(b[2]) or 0
        for k = head + 1, cur do tot = tot - (tonumber(redis.call('HGET', KEYS[i], 'b' .. (k % n))) or 0) end
        if tot < 0 then tot = 0 end
      end
    end
  end
  out[i] = tot
end
return out
`
