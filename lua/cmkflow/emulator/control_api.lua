-- The emulator's control API under /_emulator/ (no authentication: the emulator only listens on
-- loopback; docs/emulator.md): health, reset, state, snapshots, the clock, delays, scalar knobs,
-- fault rules, throttling and the request journal.
--   control_api.handle(st, req) -> status, headers, body
--   control_api.mutates(req) -> whether the request changes the state (for persistence)
local core = require "cmkflow.core"
local json = core.json
local respond = require "cmkflow.emulator.respond"
local knobs = require "cmkflow.emulator.knobs"
local control = require "cmkflow.emulator.control"

local M = {}

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
  control.reset(st)
  return ok(req, { reset = true, clock = st:iso() })
end

routes["GET /_emulator/state"] = function(st, req) return ok(req, st:dump()) end

-- {name?}: the id to save it under (letters, digits, '-', '_', '.'; up to 64; replaces one of the
-- same name), else "snapshot-N".
routes["POST /_emulator/snapshot"] = function(st, req)
  local b, e = body_of(req)
  if not b then return err(req, 400, "BadRequest", e) end
  local name = b.name
  if name ~= nil and (type(name) ~= "string" or #name > 64 or not name:match("^[%w%-_.]+$")) then
    return err(req, 400, "BadRequest", "name must be 1-64 letters, digits, '-', '_' or '.'")
  end
  local c = control.ctl(st)
  local id = name
  if not id then
    c.snapshot_n = c.snapshot_n + 1
    id = "snapshot-" .. c.snapshot_n
  end
  c.snapshots[id] = st:snapshot()
  return ok(req, { id = id })
end

routes["POST /_emulator/restore"] = function(st, req)
  local b, e = body_of(req)
  if not b then return err(req, 400, "BadRequest", e) end
  if type(b.id) ~= "string" then return err(req, 400, "BadRequest", "id must be the string a snapshot returned") end
  local snap = control.ctl(st).snapshots[b.id]
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
  local good, d = pcall(knobs.check_delays, b, "delays")
  if not good then return err(req, 400, "BadRequest", d) end
  for k, v in pairs(d) do st.knobs.delays[k] = v end
  return ok(req, st.knobs.delays)
end

local function scalars_view(st)
  -- profile: read-only here (chosen at start: --profile or the seed's "profile")
  return { lro_retry_after_s = st.knobs.lro_retry_after_s or 1, key_material = st.knobs.key_material or "unique",
           profile = st.knobs.profile or "instant" }
end

routes["GET /_emulator/knobs"] = function(st, req) return ok(req, scalars_view(st)) end

routes["PUT /_emulator/knobs"] = function(st, req)
  local b, e = body_of(req)
  if not b then return err(req, 400, "BadRequest", e) end
  -- profile is read-only: what GET answered may be PUT back, another profile may not
  if type(b) == "table" and b.profile ~= nil then
    if b.profile ~= (st.knobs.profile or "instant") then
      return err(req, 400, "BadRequest", "knobs.profile is chosen at start (--profile or the seed's profile), not here")
    end
    b.profile = nil
  end
  local good, k = pcall(knobs.check_scalar_knobs, b, "knobs")
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
  local good, rule = pcall(knobs.check_fault, b, "fault")
  if not good then return err(req, 400, "BadRequest", rule) end
  control.add_fault(st, rule)
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
  local good, t = pcall(knobs.check_throttling, b, "throttling")
  if not good then return err(req, 400, "BadRequest", t) end
  st.knobs.throttling = t
  control.ctl(st).buckets = {}
  return ok(req, json.object(t))
end

routes["GET /_emulator/journal"] = function(st, req)
  local since = tonumber(req.args and req.args.since)
  local service = req.args and req.args.service
  return ok(req, { value = control.journal(st, since, service), next_seq = control.ctl(st).seq + 1 })
end

routes["DELETE /_emulator/journal"] = function(st, req)
  local c = control.ctl(st)
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
    local c = control.ctl(st)
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
