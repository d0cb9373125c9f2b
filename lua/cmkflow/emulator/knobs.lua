-- The emulator's test knobs as data, validated: the seed's `knobs`, the CLI's --delay/--fault/
-- --throttle/--knobs, and the /_emulator/ API's bodies all pass through here (docs/emulator.md).
--   knobs.validate_knobs(knobs, path) -> a checked copy; raises "<path>.<field> <problem>"
--   knobs.check_delays / check_fault / check_throttling (t, path) -> a checked copy
--   knobs.check_scalars(t, path)  lro_retry_after_s (integer 0..600), key_material ("unique"|"pooled")
--   knobs.check_scalar_knobs(t, path)  an object of scalar knobs only
local pattern = require "cmkflow.emulator.pattern"
local profiles = require "cmkflow.emulator.profiles"

local M = {}

M.SERVICES = { entra = true, graph = true, arm = true, keyvault = true, imds = true }
M.DELAY_KINDS = { service_principal = true, federated_credential = true, role_assignment = true, vault_dns = true }
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

-- A distribution {median, p95, cap} in seconds (profiles.lua), checked; returns a copy.
local function check_dist(v, path)
  if not is_object(v) then bad(path, "must be a number of seconds >= 0 or {median, p95, cap}") end
  only_fields(v, set_of("median", "p95", "cap"), path)
  for _, f in ipairs { "median", "p95", "cap" } do
    if type(v[f]) ~= "number" or v[f] <= 0 or v[f] ~= v[f] or v[f] == math.huge then
      bad(path .. "." .. f, "must be a number of seconds > 0")
    end
  end
  if v.p95 < v.median then bad(path .. ".p95", "must be >= median") end
  return { median = v.median, p95 = v.p95, cap = v.cap }
end

-- Validates and normalises {service_principal?, federated_credential?, role_assignment?,
-- vault_dns?}: seconds, or a distribution {median, p95, cap} drawn once per object.
function M.check_delays(d, path)
  if not is_object(d) then bad(path, "must be an object") end
  local out = {}
  for k, v in pairs(d) do
    if not M.DELAY_KINDS[k] then bad(path, "has an unknown field '" .. tostring(k) .. "' (known: " .. join_keys(M.DELAY_KINDS) .. ")") end
    if type(v) == "table" then
      out[k] = check_dist(v, path .. "." .. k)
    else
      if type(v) ~= "number" or v < 0 or v ~= v or v == math.huge then
        bad(path .. "." .. k, "must be a number of seconds >= 0")
      end
      out[k] = v
    end
  end
  return out
end

-- Validates {operation key = {median, p95, cap}} (profiles.operation's keys).
local function check_latency(t, path)
  if not is_object(t) then bad(path, "must be an object") end
  local out = {}
  for k, v in pairs(t) do
    if not profiles.REALISTIC.latency[k] then bad(path, "has an unknown operation '" .. tostring(k) .. "'") end
    out[k] = check_dist(v, path .. "." .. k)
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
      if m[k] then
        local ok, why = pattern.compile(m[k])
        if not ok then bad(path .. ".match." .. k, why) end
      end
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
-- Throttling per service, off unless configured. "published" (or `true`) takes the service's
-- published limits (M.PUBLISHED_LIMITS); an object sets its own numbers:
--   arm      {reads_per_minute?, writes_per_minute?}       per subscription (or tenant)
--   graph    {requests, per_seconds}                       per application and tenant
--   keyvault {requests, per_seconds}                       per vault
--   storage  {writes?, per_seconds?, accounts_per_region?} Storage resource provider writes per
--            subscription, and the storage accounts a subscription may have per region
M.PUBLISHED_LIMITS = {
  -- https://learn.microsoft.com/azure/azure-resource-manager/management/request-limits-and-throttling
  -- (subscription: reads refill 25/s, writes 10/s: the sustained rates, per minute)
  arm = { reads_per_minute = 1500, writes_per_minute = 600 },
  -- https://learn.microsoft.com/graph/throttling-limits#identity-and-access-service-limits
  -- (applications and service principals, a small tenant: 3,500 resource units per 10 s per app)
  graph = { requests = 3500, per_seconds = 10 },
  -- https://learn.microsoft.com/azure/key-vault/general/service-limits (4,000 transactions per
  -- 10 s per vault for RSA 2048 software keys and for all other transactions)
  keyvault = { requests = 4000, per_seconds = 10 },
  -- https://learn.microsoft.com/azure/storage/common/scalability-targets-resource-provider
  -- (1,200 write operations per hour) and
  -- https://learn.microsoft.com/azure/storage/common/scalability-targets-standard-account
  -- (250 storage accounts per region per subscription, by default)
  storage = { writes = 1200, per_seconds = 3600, accounts_per_region = 250 },
}
local THROTTLE_FIELDS = {
  arm = set_of("reads_per_minute", "writes_per_minute"),
  graph = set_of("requests", "per_seconds"), keyvault = set_of("requests", "per_seconds"),
  storage = set_of("writes", "per_seconds", "accounts_per_region"),
}

function M.check_throttling(t, path)
  if not is_object(t) then bad(path, "must be an object") end
  only_fields(t, THROTTLE_FIELDS, path)
  local out = {}
  for service, fields in pairs(THROTTLE_FIELDS) do
    local v = t[service]
    if v == "published" or v == true then
      out[service] = {}
      for k, n in pairs(M.PUBLISHED_LIMITS[service]) do out[service][k] = n end
    elseif v ~= nil then
      if not is_object(v) then bad(path .. "." .. service, "must be \"published\" or an object") end
      only_fields(v, fields, path .. "." .. service)
      out[service] = {}
      for k, n in pairs(v) do
        if math.type(n) ~= "integer" or n < 1 then bad(path .. "." .. service .. "." .. k, "must be an integer >= 1") end
        out[service][k] = n
      end
      if next(out[service]) == nil then out[service] = nil end
    end
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
  only_fields(knobs, set_of("delays", "faults", "throttling", "lro_retry_after_s", "key_material", "profile",
    "latency"), path)
  local out = M.check_scalars(knobs, path)
  if knobs.profile ~= nil then
    local base = type(knobs.profile) == "string" and profiles.knobs(knobs.profile)
    if not base then bad(path .. ".profile", "must be \"instant\" or \"realistic\" (got " .. tostring(knobs.profile) .. ")") end
    -- the profile first, the knobs given beside it on top
    out.profile, out.latency = knobs.profile, base.latency
    if out.lro_retry_after_s == nil then out.lro_retry_after_s = base.lro_retry_after_s end
    out.delays = base.delays
  end
  if knobs.latency ~= nil then
    out.latency = out.latency or {}
    for k, v in pairs(check_latency(knobs.latency, path .. ".latency")) do out.latency[k] = v end
  end
  out.faults = {}
  if knobs.delays ~= nil then
    out.delays = out.delays or {}
    for k, v in pairs(M.check_delays(knobs.delays, path .. ".delays")) do out.delays[k] = v end
  end
  if knobs.faults ~= nil then
    if type(knobs.faults) ~= "table" or (next(knobs.faults) ~= nil and knobs.faults[1] == nil) then
      bad(path .. ".faults", "must be an array")
    end
    for i, f in ipairs(knobs.faults) do out.faults[i] = M.check_fault(f, ("%s.faults[%d]"):format(path, i)) end
  end
  if knobs.throttling ~= nil then out.throttling = M.check_throttling(knobs.throttling, path .. ".throttling") end
  return out
end


-- An object holding scalar knobs only (PUT /_emulator/knobs); raises like validate_knobs.
function M.check_scalar_knobs(t, path)
  if not is_object(t) then bad(path, "must be an object") end
  only_fields(t, set_of(table.unpack(M.SCALAR_KNOBS)), path)
  return M.check_scalars(t, path)
end

return M
