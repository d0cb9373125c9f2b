-- The hooks that wrap every emulated request (init.lua calls them), and the state they keep:
--   control.before(st, req, service) -> intercepted, status, headers, body, delay_ms
--       fault rules (status, body, dropped connection, latency; `after = N` lets the first N matching
--       requests through) and ARM throttling buckets;
--       not intercepted: false, nil, nil, nil, extra_latency_ms?
--   control.after(st, req, service, status, headers, delay_ms)
--       appends to the request journal (bounded ring) and adds the x-ms-ratelimit-remaining-* header
--   control.init(st, config)        knobs (knobs.lua) from seed.knobs, then config.knobs (CLI)
--   control.reset(st)               back to the seed (tenant signing keys kept)
--   control.journal(st, since, service), control.add_fault(st, rule), control.ctl(st)
-- The /_emulator/ API over them is control_api.lua. Ephemeral bookkeeping lives in
-- st.control = {journal, snapshots, buckets, prng, next ids}; it is never part of a snapshot, of
-- /_emulator/state or of the persisted state.
local core = require "cmkflow.core"
local json = core.json
local respond = require "cmkflow.emulator.respond"
local knobs = require "cmkflow.emulator.knobs"
local pattern = require "cmkflow.emulator.pattern"
local profiles = require "cmkflow.emulator.profiles"
local state = require "cmkflow.emulator.state"

local M = {}

M.JOURNAL_MAX = 10000

-- ---- bookkeeping ------------------------------------------------------------------------------

local function prng_seed(st)
  -- splitmix64 state from random_seed: the same seed gives the same sequence of fault draws
  return (st.random_seed or 0) * 0x9E3779B97F4A7C15 + 0x2545F4914F6CDD1D
end

local function ctl(st)
  local c = st.control
  if not c then
    c = { journal = {}, seq = 0, cleared = 0, snapshots = {}, snapshot_n = 0, fault_n = 0, buckets = {},
          prng = prng_seed(st), drawn = {} }
    st.control = c
  end
  return c
end
M.ctl = ctl

-- A uniform draw in [0, 1) from the deterministic PRNG (splitmix64).
local function draw(st)
  local c = ctl(st)
  c.prng = c.prng + 0x9E3779B97F4A7C15
  local z = c.prng
  z = (z ~ (z >> 30)) * 0xBF58476D1CE4E5B9
  z = (z ~ (z >> 27)) * 0x94D049BB133111EB
  z = z ~ (z >> 31)
  return (z >> 11) / 9007199254740992.0
end

function M.add_fault(st, rule)
  local c = ctl(st)
  c.fault_n = c.fault_n + 1
  rule.id = "fault-" .. c.fault_n
  rule.fired = 0
  local faults = st.knobs.faults
  faults[#faults + 1] = rule
  return rule
end

-- Applies validated knobs on top of the current ones: delays merged, faults appended, throttling merged.
local function apply_knobs(st, k)
  for _, name in ipairs(knobs.SCALAR_KNOBS) do
    if k[name] ~= nil then st.knobs[name] = k[name] end
  end
  for name, v in pairs(k.delays or {}) do st.knobs.delays[name] = v end
  if k.profile then st.knobs.profile = k.profile end
  if k.profile == "instant" then
    st.knobs.latency = nil
    for name in pairs(st.knobs.delays) do if k.delays[name] == nil then st.knobs.delays[name] = nil end end
  end
  if k.latency and next(k.latency) then
    st.knobs.latency = st.knobs.latency or {}
    for name, v in pairs(k.latency) do st.knobs.latency[name] = v end
  end
  for _, rule in ipairs(k.faults or {}) do M.add_fault(st, rule) end
  if k.throttling then
    for name, v in pairs(k.throttling) do st.knobs.throttling[name] = v end
  end
end

-- Knobs from the seed (its `profile`, then its `knobs`), then from config.knobs (the CLI's
-- --profile/--delay/--fault/--throttle/--knobs).
function M.init(st, config)
  ctl(st)
  if st.seed and st.seed.profile ~= nil then
    if not profiles.NAMES[st.seed.profile] then
      error("seed: profile must be \"instant\" or \"realistic\" (got " .. tostring(st.seed.profile) .. ")", 0)
    end
    apply_knobs(st, knobs.validate_knobs({ profile = st.seed.profile }, "seed"))
  end
  if st.seed and st.seed.knobs then apply_knobs(st, knobs.validate_knobs(st.seed.knobs, "seed: knobs")) end
  if config and config.knobs then apply_knobs(st, knobs.validate_knobs(config.knobs, "knobs")) end
end

-- Back to the seed: a fresh state from st.seed (tenant signing keys kept, so tokens already issued
-- keep verifying, as they would in Azure), knobs from the seed and the command line again, the
-- clock at real time. The journal and snapshots are kept.
function M.reset(st)
  local fresh = state.new(state.seed_of(st.seed))
  for tid, t in pairs(fresh.tenants) do
    local old = st.tenants[tid]
    if old then t.key, t.kid = old.key, old.kid end
  end
  local keep = { config = st.config, control = st.control }
  for k in pairs(st) do st[k] = nil end
  for k, v in pairs(fresh) do st[k] = v end
  st.config, st.control = keep.config, keep.control
  local c = ctl(st)
  c.buckets, c.prng, c.fault_n = {}, prng_seed(st), 0
  M.init(st, st.config)
end

-- ---- faults -------------------------------------------------------------------------------------

-- compiled patterns by their text (rules are plain data: they are saved and restored as such);
-- bounded: emptied when it holds more than 1,000
local COMPILED, compiled_n = {}, 0

local function pattern_or_prefix(value, pat)
  if value:sub(1, #pat) == pat then return true end
  local m = COMPILED[pat]
  if m == nil then
    m = pattern.compile(pat) or false -- rules are validated on creation; an old saved one may not be
    if compiled_n >= 1000 then COMPILED, compiled_n = {}, 0 end
    COMPILED[pat], compiled_n = m, compiled_n + 1
  end
  return m and pattern.find(m, value) or false
end

local function matches(rule, req, service)
  local m = rule.match
  if m.operation and m.operation ~= service then return false end
  if m.method and m.method ~= req.method then return false end
  if m.host and not (req.host == m.host or pattern_or_prefix(req.host or "", m.host)) then return false end
  if m.path and not (pattern_or_prefix(req.path or "", m.path)
                     or (req.service_path and pattern_or_prefix(req.service_path, m.path))) then
    return false
  end
  return true
end

local DEFAULT_CODES = { [400] = "BadRequest", [401] = "Unauthorized", [403] = "Forbidden", [404] = "NotFound",
  [409] = "Conflict", [429] = "TooManyRequests", [500] = "InternalServerError", [502] = "BadGateway",
  [503] = "ServiceUnavailable", [504] = "GatewayTimeout" }

-- The response of a fault rule with a status, in the service's own error envelope unless body is given.
local function fault_response(st, rule, req, service)
  local status, headers, body
  if rule.body ~= nil then
    status, headers, body = respond.json(req, rule.status, rule.body)
  else
    local code = DEFAULT_CODES[rule.status] or "InjectedFault"
    local msg = "The emulator injected this fault (" .. rule.id .. ")."
    if rule.status < 400 then
      status, headers, body = respond.json(req, rule.status, {})
    elseif service == "graph" then
      status, headers, body = respond.graph_error(req, rule.status, code, msg)
    elseif service == "keyvault" then
      status, headers, body = respond.kv_error(req, rule.status, code, msg)
    elseif service == "entra" or service == "imds" then
      status, headers, body = respond.json(req, rule.status, { error = rule.status >= 500 and "temporarily_unavailable"
        or "invalid_request", error_description = "AADSTS90033: " .. msg })
    else
      status, headers, body = respond.arm_error(req, rule.status, code, msg)
    end
  end
  for k, v in pairs(rule.headers or {}) do headers[k] = v end
  if rule.status == 429 and not headers["retry-after"] then headers["retry-after"] = "1" end
  return status, headers, body
end

-- ---- throttling ---------------------------------------------------------------------------------

local function bucket_scope(req)
  local sub = (req.service_path or req.path or ""):match("^/[Ss]ubscriptions/([%x%-]+)")
  if sub then return "subscription", sub:lower() end
  local token = (req.headers.authorization or ""):match("^[Bb]earer%s+(%S+)$")
  if token then
    local ok, _, claims = pcall(core.jose.decode, token)
    if ok and type(claims) == "table" and type(claims.tid) == "string" then return "tenant", claims.tid:lower() end
  end
  return "tenant", "anonymous"
end

local function actor(req)
  local token = (req.headers.authorization or ""):match("^[Bb]earer%s+(%S+)$")
  if token then
    local ok, _, claims = pcall(core.jose.decode, token)
    if ok and type(claims) == "table" and type(claims.oid) == "string" then return claims.oid end
  end
  return "anonymous"
end

-- Takes one token from the (scope, read|write) bucket. Returns ok, header_name, remaining, retry_after.
local function take(st, req, cfg)
  local kind = (req.method == "GET" or req.method == "HEAD") and "reads" or "writes"
  local per_minute = cfg[kind .. "_per_minute"]
  if not per_minute then return true end
  local scope_kind, scope = bucket_scope(req)
  local c = ctl(st)
  local key = scope_kind .. ":" .. scope .. ":" .. kind
  local now = st:now()
  local b = c.buckets[key]
  if not b then
    b = { tokens = per_minute, t = now }
    c.buckets[key] = b
  end
  local rate = per_minute / 60
  b.tokens = math.min(per_minute, b.tokens + math.max(0, now - b.t) * rate)
  b.t = now
  local header = "x-ms-ratelimit-remaining-" .. scope_kind .. "-" .. kind
  if b.tokens >= 1 then
    b.tokens = b.tokens - 1
    return true, header, math.floor(b.tokens)
  end
  local wait = math.max(1, math.ceil((1 - b.tokens) / rate))
  return false, header, 0, wait, scope_kind, scope, kind
end

-- Takes one token from bucket `key` (capacity n, refilled n/per_s per second). Returns ok, wait_s.
local function take_from(st, key, n, per_s)
  local c = ctl(st)
  local now = st:now()
  local b = c.buckets[key]
  if not b then b = { tokens = n, t = now } c.buckets[key] = b end
  local rate = n / per_s
  b.tokens = math.min(n, b.tokens + math.max(0, now - b.t) * rate)
  b.t = now
  if b.tokens >= 1 then b.tokens = b.tokens - 1 return true end
  return false, math.max(1, math.ceil((1 - b.tokens) / rate))
end

local function claims_of(req)
  local token = (req.headers.authorization or ""):match("^[Bb]earer%s+(%S+)$")
  local ok, _, claims = pcall(core.jose.decode, token or "")
  return ok and type(claims) == "table" and claims or {}
end

-- Graph, Key Vault and the Storage resource provider's throttling (knobs.check_throttling): the
-- 429 in the service's own envelope with Retry-After, or nil to let the request through.
local function service_throttle(st, req, service)
  local t = st.knobs.throttling
  if service == "graph" and t.graph then
    local c = claims_of(req)
    local ok, wait = take_from(st, "graph:" .. tostring(c.tid) .. ":" .. tostring(c.appid or c.azp),
      t.graph.requests, t.graph.per_seconds)
    -- https://learn.microsoft.com/graph/throttling
    if not ok then return wait, respond.graph_error(req, 429, "TooManyRequests", "Too many requests.") end
  elseif service == "keyvault" and t.keyvault then
    local ok, wait = take_from(st, "keyvault:" .. tostring(req.vault), t.keyvault.requests, t.keyvault.per_seconds)
    -- https://learn.microsoft.com/azure/key-vault/general/overview-throttling
    if not ok then
      return wait, respond.kv_error(req, 429, "Throttled", "Request was not processed because too many requests "
        .. "were received. Reason: too many transactions for this vault; retry after the Retry-After interval.")
    end
  elseif service == "arm" and t.storage and t.storage.writes and req.method ~= "GET" and req.method ~= "HEAD"
         and (req.service_path or req.path or ""):lower():find("/providers/microsoft.storage/", 1, true) then
    local sub = (req.service_path or req.path or ""):match("^/[Ss]ubscriptions/([%x%-]+)") or "none"
    local ok, wait = take_from(st, "storage:" .. sub:lower(), t.storage.writes, t.storage.per_seconds or 3600)
    if not ok then
      return wait, respond.arm_error(req, 429, "TooManyRequests", "The request is being throttled as the limit has "
        .. "been reached for operation type - Write_ObservationWindow_3600. For more information, see - "
        .. "https://aka.ms/srpthrottlinglimits")
    end
  end
  return nil
end

-- ---- hooks --------------------------------------------------------------------------------------

-- A rule with `after = N` lets its first N matching requests through untouched (counting down).
function M.passes(rule)
  if rule.after and rule.after > 0 then
    rule.after = rule.after - 1
    return true
  end
  return false
end

function M.before(st, req, service)
  local info = {}
  req.emulator = info
  ctl(st).drawn = {} -- visibility delays this request draws (State:visible_from)
  local faults = st.knobs.faults
  for i = 1, #faults do
    local rule = faults[i]
    if (rule.count == nil or rule.count > 0) and matches(rule, req, service) and not M.passes(rule)
       and (rule.probability == nil or rule.probability >= 1 or (rule.probability > 0 and draw(st) < rule.probability)) then
      if rule.count then rule.count = rule.count - 1 end
      rule.fired = rule.fired + 1
      info.fault = rule.id
      if rule.drop then return true, nil end
      if rule.status then
        local status, headers, body = fault_response(st, rule, req, service)
        info.delay_ms = rule.latency_ms
        return true, status, headers, body, rule.latency_ms
      end
      info.delay_ms = rule.latency_ms
      return false, nil, nil, nil, rule.latency_ms -- latency only: the service still answers
    end
  end
  local wait, status, headers, body = service_throttle(st, req, service)
  if wait then
    headers["retry-after"] = tostring(wait)
    info.throttled = true
    return true, status, headers, body
  end
  -- the profile's latency for this operation (a seeded log-normal draw)
  local latency = st.knobs.latency
  local op = latency and profiles.operation(service, req)
  if op and latency[op] then
    local c = ctl(st)
    c.latency_n = (c.latency_n or 0) + 1
    info.delay_ms = math.floor(profiles.sample(latency[op], st.random_seed or 0, c.latency_n) * 1000)
    return false, nil, nil, nil, info.delay_ms
  end
  local cfg = service == "arm" and st.knobs.throttling.arm
  if cfg then
    local ok, header, remaining, wait, scope_kind, scope, kind = take(st, req, cfg)
    if header then info.ratelimit = { header, tostring(remaining) } end
    if not ok then
      local Scope = scope_kind == "subscription" and "Subscription" or "Tenant"
      local status, headers, body = respond.arm_error(req, 429, Scope .. "RequestsThrottled",
        ("Number of '%s' requests for %s '%s' actor '%s' exceeded. Please try again after '%d' seconds after "
         .. "additional tokens are available. Refer to https://aka.ms/arm-throttling for additional information.")
        :format(kind == "reads" and "read" or "write", scope_kind, scope, actor(req), wait))
      headers["retry-after"] = tostring(wait)
      info.throttled = true
      return true, status, headers, body
    end
  end
  return false
end

local SECRET_PARAMS = { sig = true, client_secret = true, code = true, access_token = true, token = true,
                        assertion = true, client_assertion = true, password = true, refresh_token = true }

local function redact_query(q)
  if not q or q == "" then return "" end
  return (q:gsub("([^&=]+)=([^&]*)", function(k, v)
    if SECRET_PARAMS[k:lower()] then return k .. "=REDACTED" end
    return k .. "=" .. v
  end))
end

-- {kind = ms} from now (the request's handling) until what it created becomes visible, for the
-- delays a profile drew for it (tools/bench/onboard_critical.lua computes the critical path from
-- them); nil when it drew none.
local function visible_in_ms(st, c)
  if not next(c.drawn) then return nil end
  local now_ms = core.realtime_ms() + (st.clock_offset or 0) * 1000
  local out = {}
  for kind, at in pairs(c.drawn) do out[kind] = math.max(0, at * 1000 - now_ms) end
  c.drawn = {}
  return out
end

function M.after(st, req, service, status, headers, delay_ms)
  local info = req.emulator or {}
  if info.ratelimit and type(headers) == "table" then headers[info.ratelimit[1]] = info.ratelimit[2] end
  local c = ctl(st)
  c.seq = c.seq + 1
  c.journal[(c.seq - 1) % M.JOURNAL_MAX + 1] = {
    seq = c.seq, time = st:iso(), method = req.method, host = req.host, path = req.path,
    query = redact_query(req.query), service = service, status = status or json.null, dropped = status == nil or nil,
    client_request_id = req.headers["x-ms-client-request-id"] or req.headers["client-request-id"] or json.null,
    fault = info.fault, throttled = info.throttled, delay_ms = (delay_ms and delay_ms > 0) and delay_ms or nil,
    visible_in_ms = visible_in_ms(st, c),
  }
end

-- Journal entries in order, optionally after seq `since` and for one service.
function M.journal(st, since, service)
  local c = ctl(st)
  local out = json.array()
  local first = math.max(c.cleared + 1, c.seq - M.JOURNAL_MAX + 1, (since or 0) + 1)
  for s = first, c.seq do
    local e = c.journal[(s - 1) % M.JOURNAL_MAX + 1]
    if e and e.seq == s and (not service or e.service == service) then out[#out + 1] = e end
  end
  return out
end

return M
