-- Pacing of ARM requests by Azure Resource Manager's own throttling numbers, so that a bulk run
-- spends the subscription's budget instead of collecting 429s.
--
-- Azure Resource Manager throttles per subscription (or tenant), per principal and per kind of
-- request with token buckets (writes: 200 tokens refilled at 10 per second; reads: 250 at 25; deletes:
-- 200 at 10) and tells the caller how many tokens are left in every answer's
-- x-ms-ratelimit-remaining-subscription-writes (-reads, -deletes; -tenant- for tenant requests)
-- header; an empty bucket answers 429 with Retry-After
-- (https://learn.microsoft.com/azure/azure-resource-manager/management/request-limits-and-throttling).
--
-- The pacer keeps one bucket per (principal, scope, kind), and only once an answer carried the
-- header (a server that sends none is not paced: the emulator without throttling). The header is
-- the truth at the time the server handled that request: the bucket is set to it less the requests
-- sent since and not answered yet, so the pacer follows the server up and down whatever bucket size
-- it has; between answers the bucket refills at the documented rate until the answers tell the
-- server's own (what it refilled between two answers while below capacity). A 429
-- that survived the HTTP client's retries closes the bucket for its Retry-After, and the request is
-- sent again (Arm:send).
--
--   local p = pacer.new { rates = { writes = 10 }, now = fn_ms }   -- rates per second
--   local key = p:key(principal, url, method)
--   local wait_ms = p:acquire(key)      -- 0: send now (a token was taken); else sleep and ask again
--   p:observe(key, resp)                -- after the answer (resp may be nil)
--   p:stats() -> { [key] = {sent, throttled, waited_ms, remaining} }
local core = require "cmkflow.core"

local math_floor, math_max, math_min, tonumber, type = math.floor, math.max, math.min, tonumber, type
local learn_rate

local M = {}

-- Azure Resource Manager's refill rates per second (the page above).
M.RATES = { reads = 25, writes = 10, deletes = 10 }

-- how often a request waiting for the first answer of its bucket asks again
local PROBE_MS = 20

-- Buckets are per principal and subscription, so a bulk run whose customers each bring their own
-- principal and subscription makes new ones for every customer (two each: reads and writes). A
-- bucket at rest (nothing in flight, never throttled nor held back, and full again, or never told
-- a budget) holds nothing a new one would not learn from its first answer: such buckets are dropped
-- once there are SWEEP_MIN buckets, and then whenever their number has doubled, so the pacer holds
-- the buckets in use rather than one per customer ever run (tools/bench/emulator_scale.lua).
local SWEEP_MIN = 256

local Pacer = {}
Pacer.__index = Pacer

local function rate_of(self, b) return b.rate or self.rates[b.kind] or 10 end

local function at_rest(self, b, now)
  if b.inflight > 0 or b.throttled > 0 or b.waited_ms > 0 then return false end
  if not b.paced then return b.seen == true end
  return b.tokens + math_max(0, now - b.t) * rate_of(self, b) / 1000 >= b.capacity - 1
end

local function sweep(self)
  local n, now = 0, self.now()
  for k, b in pairs(self.buckets) do
    if at_rest(self, b, now) then self.buckets[k] = nil else n = n + 1 end
  end
  self.count, self.sweep_at = n, math_max(SWEEP_MIN, 2 * n)
end

function M.new(opts)
  opts = opts or {}
  local rates = {}
  for k, v in pairs(M.RATES) do rates[k] = v end
  for k, v in pairs(opts.rates or {}) do rates[k] = v end
  return setmetatable({ rates = rates, now = opts.now or core.monotonic_ms, buckets = {}, count = 0,
                        sweep_at = SWEEP_MIN }, Pacer)
end

local shared
-- The process's pacer: every ARM client of the process shares it (a bulk run's customers use one
-- ISV principal).
function M.shared()
  shared = shared or M.new()
  return shared
end

-- Sets the shared pacer's refill rates (the config file's `arm_rates`).
function M.configure(rates)
  local p = M.shared()
  for k, v in pairs(rates or {}) do p.rates[k] = v end
end

local function kind_of(method)
  if method == "GET" or method == "HEAD" then return "reads" end
  if method == "DELETE" then return "deletes" end
  return "writes"
end

-- The bucket key of a request: principal, subscription (from the path) or tenant, kind.
function Pacer:key(principal, url, method)
  local sub = url:match("^https://[^/]+/[Ss]ubscriptions/([%x%-]+)")
  return ("%s|%s|%s"):format(tostring(principal), sub and ("subscription:" .. sub:lower()) or "tenant",
    kind_of(method)), kind_of(method)
end

local function refill(self, b, now)
  local rate = rate_of(self, b)
  b.tokens = b.tokens + math_max(0, now - b.t) * rate / 1000
  if b.capacity and b.tokens > b.capacity then b.tokens = b.capacity end
  b.t = now
end

-- Takes a token for a request under key: 0 (send now) or the ms to wait before asking again.
function Pacer:acquire(key, kind)
  local b = self.buckets[key]
  local now = self.now()
  if not b then
    if self.count >= self.sweep_at then sweep(self) end
    self.count = self.count + 1
    -- not paced (yet): counted, so that the first answer's header accounts for it
    self.buckets[key] = { kind = kind, inflight = 1, sent = 1, throttled = 0, waited_ms = 0, paced = false, t = now }
    return 0
  end
  if not b.paced then
    -- one request until the first answer says whether this server reports its budget at all
    if not b.seen and b.inflight > 0 then return PROBE_MS end
    b.inflight, b.sent = b.inflight + 1, b.sent + 1
    return 0
  end
  if b.closed_until and now < b.closed_until then
    local w = b.closed_until - now
    b.waited_ms = b.waited_ms + w
    return w
  end
  refill(self, b, now)
  if b.tokens >= 1 then
    b.tokens = b.tokens - 1
    b.inflight, b.sent = b.inflight + 1, b.sent + 1
    return 0
  end
  local w = math_max(1, math.ceil((1 - b.tokens) * 1000 / rate_of(self, b)))
  b.waited_ms = b.waited_ms + w
  return w
end

local function header(resp, name)
  local h = type(resp) == "table" and resp.headers
  return type(h) == "table" and (h[name] or h[name:lower()]) or nil
end

-- The server's refill rate, learnt while its bucket is below capacity: between two answers the
-- server refilled (remaining now - remaining then) + the requests it granted in between.
local LEARN_MS = 2000
learn_rate = function(b, remaining, now)
  local s = b.sample
  local below = b.capacity and remaining < b.capacity - 2
  if not (s and below and s.below) then
    b.sample = { t = now, remaining = remaining, answered = b.answered, below = below }
    return
  end
  if now - s.t < LEARN_MS then return end
  local est = (remaining - s.remaining + (b.answered - s.answered)) * 1000 / (now - s.t)
  if est > 0 then b.rate = b.rate and (b.rate + est) / 2 or est end
  b.sample = { t = now, remaining = remaining, answered = b.answered, below = below }
end

-- Accounts an answer (or a transport failure: resp nil) to key.
function Pacer:observe(key, resp)
  local b = self.buckets[key]
  if not b then return end
  b.inflight = math_max(0, b.inflight - 1)
  if type(resp) ~= "table" then return end
  b.seen = true
  local now = self.now()
  local remaining
  for _, scope in ipairs { "subscription", "tenant" } do
    remaining = remaining or tonumber(header(resp, "x-ms-ratelimit-remaining-" .. scope .. "-" .. b.kind))
  end
  if resp.status == 429 then
    b.throttled = b.throttled + 1
    local after = tonumber(header(resp, "retry-after")) or 1
    b.closed_until = math_max(b.closed_until or 0, now + math_min(math_max(after, 1), 600) * 1000)
    remaining = remaining or 0
  end
  if resp.status ~= 429 then b.answered = (b.answered or 0) + 1 end
  if remaining and resp.status ~= 429 then learn_rate(b, remaining, now) end
  if remaining then
    if not b.paced then b.paced, b.t = true, now end
    -- what the server had when it answered, less what was sent since and is still unanswered
    b.tokens = remaining - b.inflight
    b.capacity = math_max(b.capacity or 0, remaining + 1)
    b.t = now
    b.remaining = remaining
  end
end

function Pacer:stats()
  local out = {}
  for k, b in pairs(self.buckets) do
    out[k] = { sent = b.sent, throttled = b.throttled, waited_ms = math_floor(b.waited_ms), remaining = b.remaining,
               capacity = b.capacity, rate = b.rate and math_floor(b.rate * 100 + 0.5) / 100 or self.rates[b.kind] }
  end
  return out
end

return M
