-- The emulator's test knobs under /_emulator/ (no authentication: the emulator only listens on
-- loopback) and the hooks that wrap every other request:
--   control.before(st, req, service) -> intercepted, status, headers, body, delay_ms
--       fault rules (status, body, dropped connection, latency; `after = N` lets the first N matching
--       requests through) and ARM throttling buckets;
--       not intercepted: false, nil, nil, nil, extra_latency_ms?
--   control.after(st, req, service, status, headers, delay_ms)
--       appends to the request journal (bounded ring) and adds the x-ms-ratelimit-remaining-* header
--   control.handle(st, req) -> status, headers, body            the /_emulator/ API (docs/emulator.md)
--   control.init(st, config)        knobs from seed.knobs, then config.knobs (CLI)
--   control.check_scalars(t, path)  lro_retry_after_s (integer 0..600), key_material ("unique"|"pooled")
--   control.validate_knobs(knobs, path)   raises "<path>.<field> <problem>"
--   control.reset(st)               back to the seed (tenant signing keys kept)
-- Ephemeral bookkeeping lives in st.control = {journal, snapshots, buckets, prng, next ids}; it is
-- never part of a snapshot, of /_emulator/state or of the persisted state.
local core = require "cmkflow.core"
local json = core.json
local respond = require "cmkflow.emulator.respond"

local M = {}

M.JOURNAL_MAX = 10000
M.SERVICES = { entra = true, graph = true, arm = true, keyvault = true, imds = true }
M.DELAY_KINDS = { service_principal = true, federated_credential = true, role_assignment = true }
local MAX_LATENCY_MS = 600000

-- ---- validation -------------------------------------------------------------------------------

local function bad(path, msg) error(path .. " " .. msg, 0) end

local function is_object(v) return type(v) == "table" and (next(v) == nil or v[1] == nil) end

local function only_fields(t, allowed, path)
  for k in pairs(t) do
    if type(k) ~= "string" or not allowed[k] then bad(path, "has an unknown field '" .. tostring(k) .. "'") end
  end
end

local function set_of(...)
  local s = {}
  for _, v in ipairs({ ... }) do s[v] = true end
  return s
end

local function join_keys(t)
  local out = {}
  for k in pairs(t) do out[#out + 1] = k end
  table.sort(out)
  return table.concat(out, ", ")
end

-- Validates and normalises {service_principal?, federated_credential?, role_assignment?} (seconds).
function M.check_delays(d, path)
  if not is_object(d) then bad(path, "must be an object") end
  local out = {}
  for k, v in pairs(d) do
    if not M.DELAY_KINDS[k] then bad(path, "has an unknown field '" .. tostring(k) .. "' (known: " .. join_keys(M.DELAY_KINDS) .. ")") end
    if type(v) ~= "number" or v < 0 or v ~= v or v == math.huge then
      bad(path .. "." .. k, "must be a number of seconds >= 0")
    end
    out[k] = v
  end
  return out
end

local MATCH_FIELDS = set_of("method", "host", "path", "operation")
local FAULT_FIELDS = set_of("match", "status", "body", "headers", "count", "probability", "latency_ms", "drop", "after")

-- Validates one fault rule; returns a normalised copy (without id and counters).
function M.check_fault(f, path)
  if not is_object(f) then bad(path, "must be an object") end
  only_fields(f, FAULT_FIELDS, path)
  local rule = { match = {} }
  if f.match ~= nil then
    if not is_object(f.match) then bad(path .. ".match", "must be an object") end
    only_fields(f.match, MATCH_FIELDS, path .. ".match")
    for k, v in pairs(f.match) do
      if type(v) ~= "string" or v == "" then bad(path .. ".match." .. k, "must be a non-empty string") end
    end
    local m = f.match
    if m.operation and not M.SERVICES[m.operation] then
      bad(path .. ".match.operation", "must be one of " .. join_keys(M.SERVICES) .. " (got '" .. m.operation .. "')")
    end
    if m.method and not m.method:match("^%a+$") then bad(path .. ".match.method", "must be an HTTP method") end
    for _, k in ipairs({ "path", "host" }) do
      if m[k] and not pcall(string.find, "", m[k]) then bad(path .. ".match." .. k, "is not a valid Lua pattern") end
    end
    rule.match = { method = m.method and m.method:upper(), host = m.host and m.host:lower(), path = m.path,
                   operation = m.operation }
  end
  if f.status ~= nil and (math.type(f.status) ~= "integer" or f.status < 100 or f.status > 599) then
    bad(path .. ".status", "must be an HTTP status (100-599)")
  end
  if f.body ~= nil and type(f.body) ~= "string" and type(f.body) ~= "table" then
    bad(path .. ".body", "must be a string or a JSON value")
  end
  if f.headers ~= nil then
    if not is_object(f.headers) then bad(path .. ".headers", "must be an object of strings") end
    for k, v in pairs(f.headers) do
      if type(v) ~= "string" or not tostring(k):match("^[%w%-]+$") then
        bad(path .. ".headers", "must map header names to strings")
      end
    end
  end
  if f.count ~= nil and (math.type(f.count) ~= "integer" or f.count < 1) then bad(path .. ".count", "must be an integer >= 1") end
  if f.after ~= nil and (math.type(f.after) ~= "integer" or f.after < 0) then bad(path .. ".after", "must be an integer >= 0") end
  if f.probability ~= nil and (type(f.probability) ~= "number" or not (f.probability >= 0 and f.probability <= 1)) then
    bad(path .. ".probability", "must be a number from 0 to 1")
  end
  if f.latency_ms ~= nil and (type(f.latency_ms) ~= "number" or not (f.latency_ms >= 0 and f.latency_ms <= MAX_LATENCY_MS)) then
    bad(path .. ".latency_ms", "must be a number of milliseconds from 0 to " .. MAX_LATENCY_MS)
  end
  if f.drop ~= nil and type(f.drop) ~= "boolean" then bad(path .. ".drop", "must be true or false") end
  if f.status == nil and not f.drop and f.latency_ms == nil then
    bad(path, "must set at least one of status, drop or latency_ms")
  end
  if f.drop and f.status ~= nil then bad(path .. ".drop", "cannot be combined with status") end
  rule.status, rule.body, rule.count, rule.probability = f.status, f.body, f.count, f.probability
  if f.after and f.after > 0 then rule.after = f.after end
  rule.latency_ms, rule.drop = f.latency_ms, f.drop or nil
  if f.headers then
    rule.headers = {}
    for k, v in pairs(f.headers) do rule.headers[k:lower()] = v end
  end
  return rule
end

-- Validates {arm = {reads_per_minute?, writes_per_minute?}}; returns a normalised copy.
function M.check_throttling(t, path)
  if not is_object(t) then bad(path, "must be an object") end
  only_fields(t, set_of("arm"), path)
  local out = {}
  if t.arm ~= nil then
    if not is_object(t.arm) then bad(path .. ".arm", "must be an object") end
    only_fields(t.arm, set_of("reads_per_minute", "writes_per_minute"), path .. ".arm")
    out.arm = {}
    for k, v in pairs(t.arm) do
      if math.type(v) ~= "integer" or v < 1 then bad(path .. ".arm." .. k, "must be an integer >= 1") end
      out.arm[k] = v
    end
    if next(out.arm) == nil then out.arm = nil end
  end
  return out
end

-- The scalar knobs (GET/PUT /_emulator/knobs, seed `knobs`, --knobs FILE.json):
--   lro_retry_after_s  Retry-After of a storage account create, and when it completes (default 1)
--   key_material       "unique": every Key Vault key version gets its own RSA key (default);
--                      "pooled": versions reuse a small fixed set of keys per size, round-robin
--                      (benchmarks only: 1,000 customers without 1,000 RSA generations)
M.SCALAR_KNOBS = { "lro_retry_after_s", "key_material" }
M.KEY_MATERIAL = { unique = true, pooled = true }
local MAX_RETRY_AFTER_S = 600

-- Validates the scalar knobs present in t (other fields are left to the caller); returns a copy.
function M.check_scalars(t, path)
  local out = {}
  local r = t.lro_retry_after_s
  if r ~= nil then
    local i = type(r) == "number" and math.tointeger(r)
    if not i or i < 0 or i > MAX_RETRY_AFTER_S then
      bad(path .. ".lro_retry_after_s", "must be an integer number of seconds from 0 to " .. MAX_RETRY_AFTER_S)
    end
    out.lro_retry_after_s = i
  end
  local m = t.key_material
  if m ~= nil then
    if type(m) ~= "string" or not M.KEY_MATERIAL[m] then
      bad(path .. ".key_material", "must be \"unique\" or \"pooled\" (got " .. tostring(m) .. ")")
    end
    out.key_material = m
  end
  return out
end

-- Validates {delays?, faults?, throttling?, lro_retry_after_s?, key_material?};
-- raises "<path>.<field> <problem>".
function M.validate_knobs(knobs, path)
  path = path or "knobs"
  if not is_object(knobs) then bad(path, "must be an object") end
  only_fields(knobs, set_of("delays", "faults", "throttling", "lro_retry_after_s", "key_material"), path)
  local out = M.check_scalars(knobs, path)
  out.faults = {}
  if knobs.delays ~= nil then out.delays = M.check_delays(knobs.delays, path .. ".delays") end
  if knobs.faults ~= nil then
    if type(knobs.faults) ~= "table" or (next(knobs.faults) ~= nil and knobs.faults[1] == nil) then
      bad(path .. ".faults", "must be an array")
    end
    for i, f in ipairs(knobs.faults) do out.faults[i] = M.check_fault(f, ("%s.faults[%d]"):format(path, i)) end
  end
  if knobs.throttling ~= nil then out.throttling = M.check_throttling(knobs.throttling, path .. ".throttling") end
  return out
end

-- ---- bookkeeping ------------------------------------------------------------------------------

local function prng_seed(st)
  -- splitmix64 state from random_seed: the same seed gives the same sequence of fault draws
  return (st.random_seed or 0) * 0x9E3779B97F4A7C15 + 0x2545F4914F6CDD1D
end

local function ctl(st)
  local c = st.control
  if not c then
    c = { journal = {}, seq = 0, cleared = 0, snapshots = {}, snapshot_n = 0, fault_n = 0, buckets = {},
          prng = prng_seed(st) }
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

local function add_fault(st, rule)
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
  for _, name in ipairs(M.SCALAR_KNOBS) do
    if k[name] ~= nil then st.knobs[name] = k[name] end
  end
  for name, v in pairs(k.delays or {}) do st.knobs.delays[name] = v end
  for _, rule in ipairs(k.faults or {}) do add_fault(st, rule) end
  if k.throttling then
    for name, v in pairs(k.throttling) do st.knobs.throttling[name] = v end
  end
end

-- Knobs from the seed, then from config.knobs (the CLI's --delay/--fault/--throttle/--knobs).
function M.init(st, config)
  ctl(st)
  if st.seed and st.seed.knobs then apply_knobs(st, M.validate_knobs(st.seed.knobs, "seed: knobs")) end
  if config and config.knobs then apply_knobs(st, M.validate_knobs(config.knobs, "knobs")) end
end

-- Back to the seed: a fresh state from st.seed (tenant signing keys kept, so tokens already issued
-- keep verifying, as they would in Azure), knobs from the seed and the command line again, the
-- clock at real time. The journal and snapshots are kept.
function M.reset(st)
  local fresh = require("cmkflow.emulator.state").new(st.seed)
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

local function pattern_or_prefix(value, pat)
  if value:sub(1, #pat) == pat then return true end
  local ok, found = pcall(string.find, value, pat)
  return ok and found ~= nil
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

-- ---- the /_emulator/ API --------------------------------------------------------------------------

local function ok(req, value, status) return respond.json(req, status or 200, value) end
local function err(req, status, code, message) return respond.json(req, status, { error = { code = code, message = message } }) end

local function body_of(req)
  if req.body == nil or req.body == "" then return {} end
  local v, e = json.decode(req.body)
  if type(v) ~= "table" then return nil, "the body is not a JSON object: " .. tostring(e) end
  return v
end

local function public_fault(rule)
  local m = rule.match
  return { id = rule.id, match = { method = m.method, host = m.host, path = m.path, operation = m.operation },
    status = rule.status, body = rule.body, headers = rule.headers, count = rule.count or json.null,
    probability = rule.probability, latency_ms = rule.latency_ms, drop = rule.drop or false, fired = rule.fired,
    after = rule.after or 0 }
end

local function clock_view(st)
  return { now = st:iso(), epoch = st:now(), offset_seconds = st.clock_offset }
end

local function find_fault(st, id)
  for i, r in ipairs(st.knobs.faults) do
    if r.id == id then return r, i end
  end
end

local routes = {}

routes["GET /_emulator/health"] = function(st, req)
  local n = 0
  for _ in pairs(st.tenants) do n = n + 1 end
  return ok(req, { status = "ok", tenants = n, clock = st:iso() })
end

routes["POST /_emulator/reset"] = function(st, req)
  M.reset(st)
  return ok(req, { reset = true, clock = st:iso() })
end

routes["GET /_emulator/state"] = function(st, req) return ok(req, st:dump()) end

routes["POST /_emulator/snapshot"] = function(st, req)
  local c = ctl(st)
  c.snapshot_n = c.snapshot_n + 1
  local id = "snapshot-" .. c.snapshot_n
  c.snapshots[id] = st:snapshot()
  return ok(req, { id = id })
end

routes["POST /_emulator/restore"] = function(st, req)
  local b, e = body_of(req)
  if not b then return err(req, 400, "BadRequest", e) end
  if type(b.id) ~= "string" then return err(req, 400, "BadRequest", "id must be the string a snapshot returned") end
  local snap = ctl(st).snapshots[b.id]
  if not snap then return err(req, 404, "SnapshotNotFound", "no snapshot '" .. b.id .. "'") end
  st:restore(snap)
  return ok(req, { restored = b.id, clock = st:iso() })
end

routes["GET /_emulator/clock"] = function(st, req) return ok(req, clock_view(st)) end

routes["POST /_emulator/clock"] = function(st, req)
  local b, e = body_of(req)
  if not b then return err(req, 400, "BadRequest", e) end
  local s = b.advance_seconds
  if type(s) ~= "number" or s < 0 or s ~= s or s == math.huge then
    return err(req, 400, "BadRequest", "advance_seconds must be a number of seconds >= 0")
  end
  st:advance(math.floor(s))
  return ok(req, clock_view(st))
end

routes["GET /_emulator/delays"] = function(st, req) return ok(req, st.knobs.delays) end

routes["PUT /_emulator/delays"] = function(st, req)
  local b, e = body_of(req)
  if not b then return err(req, 400, "BadRequest", e) end
  local good, d = pcall(M.check_delays, b, "delays")
  if not good then return err(req, 400, "BadRequest", d) end
  for k, v in pairs(d) do st.knobs.delays[k] = v end
  return ok(req, st.knobs.delays)
end

local function scalars_view(st)
  return { lro_retry_after_s = st.knobs.lro_retry_after_s or 1, key_material = st.knobs.key_material or "unique" }
end

routes["GET /_emulator/knobs"] = function(st, req) return ok(req, scalars_view(st)) end

routes["PUT /_emulator/knobs"] = function(st, req)
  local b, e = body_of(req)
  if not b then return err(req, 400, "BadRequest", e) end
  local good, k = pcall(function()
    if not is_object(b) then bad("knobs", "must be an object") end
    only_fields(b, set_of(table.unpack(M.SCALAR_KNOBS)), "knobs")
    return M.check_scalars(b, "knobs")
  end)
  if not good then return err(req, 400, "BadRequest", k) end
  for name, v in pairs(k) do st.knobs[name] = v end
  return ok(req, scalars_view(st))
end

routes["GET /_emulator/faults"] = function(st, req)
  local out = json.array()
  for i, r in ipairs(st.knobs.faults) do out[i] = public_fault(r) end
  return ok(req, { value = out })
end

routes["POST /_emulator/faults"] = function(st, req)
  local b, e = body_of(req)
  if not b then return err(req, 400, "BadRequest", e) end
  local good, rule = pcall(M.check_fault, b, "fault")
  if not good then return err(req, 400, "BadRequest", rule) end
  add_fault(st, rule)
  return ok(req, { id = rule.id }, 201)
end

routes["DELETE /_emulator/faults"] = function(st, req)
  st.knobs.faults = {}
  return respond.empty(req, 204)
end

routes["GET /_emulator/throttling"] = function(st, req) return ok(req, json.object(st.knobs.throttling)) end

routes["PUT /_emulator/throttling"] = function(st, req)
  local b, e = body_of(req)
  if not b then return err(req, 400, "BadRequest", e) end
  local good, t = pcall(M.check_throttling, b, "throttling")
  if not good then return err(req, 400, "BadRequest", t) end
  st.knobs.throttling = t
  ctl(st).buckets = {}
  return ok(req, json.object(t))
end

routes["GET /_emulator/journal"] = function(st, req)
  local since = tonumber(req.args and req.args.since)
  local service = req.args and req.args.service
  return ok(req, { value = M.journal(st, since, service), next_seq = ctl(st).seq + 1 })
end

routes["DELETE /_emulator/journal"] = function(st, req)
  local c = ctl(st)
  c.cleared = c.seq
  c.journal = {}
  return respond.empty(req, 204)
end

local KNOWN_PATHS = {}
for k in pairs(routes) do KNOWN_PATHS[k:match(" (.*)$")] = true end

function M.handle(st, req)
  local path = req.path:gsub("/+$", "")
  local route = routes[req.method .. " " .. path]
  if route then return route(st, req) end
  local id = path:match("^/_emulator/faults/([^/]+)$")
  if id then
    local rule, i = find_fault(st, id)
    if not rule then return err(req, 404, "FaultNotFound", "no fault rule '" .. id .. "'") end
    if req.method == "GET" then return ok(req, public_fault(rule)) end
    if req.method == "DELETE" then
      table.remove(st.knobs.faults, i)
      return respond.empty(req, 204)
    end
    return err(req, 405, "MethodNotAllowed", req.method .. " is not allowed on " .. path)
  end
  id = path:match("^/_emulator/snapshots?/([^/]+)$")
  if id and req.method == "DELETE" then
    local c = ctl(st)
    if not c.snapshots[id] then return err(req, 404, "SnapshotNotFound", "no snapshot '" .. id .. "'") end
    c.snapshots[id] = nil
    return respond.empty(req, 204)
  end
  if KNOWN_PATHS[path] then return err(req, 405, "MethodNotAllowed", req.method .. " is not allowed on " .. path) end
  return err(req, 404, "NotFound", "no emulator control endpoint " .. req.method .. " " .. req.path)
end

-- Control requests that change the state (for persistence).
function M.mutates(req) return req.method ~= "GET" and req.method ~= "HEAD" end

return M
