-- The critical path of one `cmkflow run onboard` (issue 13 point 3; never part of `make check`),
-- computed from the emulator's journal of that same run: the latency the profile drew for each
-- request (delay_ms) and the visibility delays it drew (visible_in_ms), over onboard's step graph
-- as workflows/onboard.lua declares it.
--
--   local critical = require "onboard_critical"
--   critical.path(journal, {customer = NAME, isv = {tenant, subscription}, customer_ctx = {...},
--                 retry_after_s = N}) -> {total_ms, chain = {step...}, steps = {name = {start, finish}}}
--
-- What counts: every request a step must make (its GETs before a PUT, the PUT, the final poll),
-- at the latency the profile drew for it; what Azure makes it wait for: an object created by
-- an earlier request becomes usable `visible_in_ms` after that request was handled, and a
-- long-running operation is polled `Retry-After` after its 202. What does not count: the
-- probes that failed or saw "not yet" (how a client finds out, which is what the ratio measures),
-- process start, TLS, the client's and the emulator's own CPU. Tokens (and the ARM client's
-- first GET of its subscription) are fetched at time 0 in the ideal run; per tenant the first
-- token in the journal is ARM's and the second Graph's (onboard's first step in each tenant is an
-- ARM one). With credentials for both tenants the handoff gate is waived at the start
-- (decide_first) and orders nothing.
local core = require "cmkflow.core"
local engine = require "cmkflow.workflow.engine"
local sandbox = require "cmkflow.sandbox"
local policy = require "cmkflow.policy"

local M = {}

local function lower(s) return tostring(s or ""):lower() end

-- onboard's steps with their needs, as the engine orders them
local function onboard_steps(root)
  local f = assert(io.open(root .. "/workflows/onboard.lua", "rb"))
  local src = f:read("a")
  f:close()
  local def = engine.check_definition(assert(sandbox.load(src, "@workflows/onboard.lua", {}))())
  return def.steps
end

-- Which step made a request (nil: a token or the subscription GET, counted apart).
local function step_of(r, names, isv_sub, customer_sub)
  local p = lower(r.path)
  if r.service == "graph" then
    if p:find("federatedidentitycredentials", 1, true) then return "federated_credential" end
    if p:find("serviceprincipals", 1, true) then return "service_principal" end
    if p:find("/applications", 1, true) then return "app" end
  elseif r.service == "arm" then
    if p:find("/roleassignments/", 1, true) then return "role_assignment" end
    if p:find("/microsoft.storage/", 1, true) then return "storage_account" end
    if p:find("/microsoft.keyvault/vaults/[^/]+/keys/") then return "key" end
    if p:find("/microsoft.keyvault/vaults/", 1, true) then return "key_vault" end
    if p:find("/userassignedidentities/", 1, true) then return "identity" end
    local sub, rg = p:match("^/subscriptions/([^/]+)/resourcegroups/([^/]+)$")
    if sub == isv_sub and rg == lower(names.isv_resource_group) then return "isv_resource_group" end
    if sub == isv_sub and rg == lower(names.storage_account_resource_group) then return "storage_resource_group" end
    if sub == customer_sub and rg == lower(names.customer_resource_group) then return "customer_resource_group" end
  end
  return nil
end

-- The requests a step had to make: a failed request tried again later (a propagation probe) and
-- a GET repeated on the same path with nothing in between (a poll that saw "not yet") do not count.
local function necessary(reqs)
  local out = {}
  for i, r in ipairs(reqs) do
    local later_same = false
    for k = i + 1, #reqs do
      local n = reqs[k]
      if n.method == r.method and n.path == r.path then later_same = true break end
      if r.method == "GET" and n.method ~= "GET" then break end
    end
    local failed_probe = r.status >= 400 and later_same
    local repeated_poll = r.method == "GET" and r.status < 300 and later_same
    if not failed_probe and not repeated_poll then out[#out + 1] = r end
  end
  return out
end

function M.path(journal, opts)
  local names = {}
  for k, fn in pairs(policy.names) do
    names[k] = fn { customer = opts.customer, isv_tenant = opts.isv.tenant, customer_tenant = opts.customer_ctx.tenant }
  end
  local isv_sub, customer_sub = lower(opts.isv.subscription), lower(opts.customer_ctx.subscription)
  local by_step, tokens, sub_get = {}, {}, {}
  for _, r in ipairs(journal) do
    local s = step_of(r, names, isv_sub, customer_sub)
    if s then
      by_step[s] = by_step[s] or {}
      table.insert(by_step[s], r)
    elseif r.service == "entra" then
      local t = lower(r.path:match("^/([^/]+)/"))
      tokens[t] = tokens[t] or {}
      table.insert(tokens[t], r.delay_ms or 0)
    elseif r.service == "arm" and r.path:match("^/subscriptions/[^/]+$") then
      sub_get[lower(r.path:match("^/subscriptions/([^/]+)$"))] = r.delay_ms or 0
    end
  end
  -- when each tenant's clients are ready (ideal: fetched at time 0)
  local function ready(service, tenant, sub)
    local t = tokens[lower(tenant)] or {}
    if service == "graph" then return t[2] or t[1] or 0 end
    return (t[1] or 0) + (sub_get[lower(sub)] or 0)
  end
  local visible = {} -- kind@step -> ms at which it becomes usable
  local function usable(...)
    local at = 0
    for _, key in ipairs { ... } do at = math.max(at, visible[key] or 0) end
    return at
  end
  -- what the successful attempt of a request waits for, by step
  local GATES = {
    federated_credential = function(r) return r.method ~= "GET" and usable("service_principal@identity") or 0 end,
    key_vault = function(r) return r.method == "GET" and usable("vault_dns@key_vault") or 0 end,
    storage_account = function(r)
      if r.method == "PUT" or r.method == "PATCH" then
        return usable("role_assignment@role_assignment", "federated_credential@federated_credential",
          "service_principal@service_principal", "service_principal@identity")
      end
      return 0
    end,
  }
  local steps, finish, start = onboard_steps(opts.root), {}, {}
  for _, s in ipairs(steps) do
    local t = 0
    if not (s.gate and s.decide_first) then
      for _, n in ipairs(s.needs) do t = math.max(t, finish[n] or 0) end
    end
    start[s.name] = t
    local reqs = necessary(by_step[s.name] or {})
    local lro_response -- when the 202 of a long-running operation came back
    for i, r in ipairs(reqs) do
      if i == 1 then
        local tenant_sub = (r.service == "graph") and nil or lower(r.path):match("^/subscriptions/([^/]+)")
        local tenant = tenant_sub == customer_sub and opts.customer_ctx.tenant or opts.isv.tenant
        if s.name == "service_principal" then tenant = opts.customer_ctx.tenant end
        t = math.max(t, ready(r.service, tenant, tenant_sub or ""))
      end
      local gate = GATES[s.name]
      local arrive = math.max(t, gate and gate(r) or 0)
      if lro_response and r.method == "GET" then arrive = math.max(arrive, lro_response + opts.retry_after_s * 1000) end
      t = arrive + (r.delay_ms or 0)
      if r.status == 202 then lro_response = t end
      for kind, ms in pairs(r.visible_in_ms or {}) do visible[kind .. "@" .. s.name] = arrive + ms end
    end
    finish[s.name] = t
  end
  -- the chain that ends last, walked back through the need that finished last
  local last, total = nil, 0
  for name, f in pairs(finish) do if f >= total then last, total = name, f end end
  local by_name = {}
  for _, s in ipairs(steps) do by_name[s.name] = s end
  local chain = {}
  while last do
    table.insert(chain, 1, last)
    local s, prev, pf = by_name[last], nil, -1
    if not (s.gate and s.decide_first) then
      for _, n in ipairs(s.needs) do if finish[n] > pf then prev, pf = n, finish[n] end end
    end
    last = prev
  end
  local out = { total_ms = total, chain = chain, steps = {} }
  for name in pairs(finish) do out.steps[name] = { start = start[name], finish = finish[name] } end
  return out
end

-- ---- how a client learns that a wait is over: the probe schedules compared ------------------------

-- Schedules: the wait before the next probe, given the seconds slept so far (as the clients count).
M.SCHEDULES = {
  { name = "1 s, then a tenth of the wait, at most 30 s (cmkflow now)",
    delay = require("cmkflow.azure.client").probe_delay_s },
  { name = "doubling 1, 2, 4 ... 30 s (cmkflow's propagation waits before)", delay = function(w)
      local d = 1
      while d <= w and d < 30 do d = d * 2 end
      return math.min(d, 30)
    end },
  { name = "10 s fixed (cmkflow's LRO polls without Retry-After before)", delay = function() return 10 end },
  { name = "5 s fixed (az CLI's retries for replication, and this benchmark's az script)", delay = function() return 5 end },
  { name = "1 s fixed", delay = function() return 1 end },
}

-- For n draws of a wait W (profile distribution `wait`) probed by requests whose latency is drawn
-- from `probe`: the probe that finds it over arrives `lag` s after W. Returns, per schedule,
-- {name, mean_lag, p90_lag, mean_probes}.
function M.compare_schedules(wait, probe, n, random_seed)
  local profiles = require "cmkflow.emulator.profiles"
  local out = {}
  for _, sch in ipairs(M.SCHEDULES) do
    local lags, probes = {}, 0
    for i = 1, n do
      local W = profiles.sample(wait, random_seed, i)
      local t, slept, k = 0, 0, 0
      while true do
        k = k + 1
        if t >= W then break end
        t = t + profiles.sample(probe, random_seed + 1, i * 64 + k) -- the failed probe's answer
        local d = sch.delay(slept)
        t, slept = t + d, slept + d
      end
      lags[i], probes = t - W, probes + k
    end
    table.sort(lags)
    local sum = 0
    for _, l in ipairs(lags) do sum = sum + l end
    out[#out + 1] = { name = sch.name, mean_lag = sum / n, p90_lag = lags[math.ceil(n * 0.9)], mean_probes = probes / n }
  end
  return out
end

M.json = core.json
return M
