-- The Azure emulator as a server handler (core/server.c runs it in its own Lua state):
--   core.server.start{ handler_module = "cmkflow.emulator", config = json }
-- config: { seed = <seed object> | seed_file = "path" (default: the built-in demo seed),
--           state_dir = "dir"?, knobs = {...}? }
local core = require "cmkflow.core"
local json = core.json
local state_mod = require "cmkflow.emulator.state"
local router = require "cmkflow.emulator.router"
local respond = require "cmkflow.emulator.respond"
local control = require "cmkflow.emulator.control"
local control_api = require "cmkflow.emulator.control_api"
local demo_seed = require "cmkflow.emulator.demo_seed"
local entra = require "cmkflow.emulator.entra"

local M = {}

-- The service modules by the name router.route gives a request; each has handle(st, req, service).
local SERVICES = { entra = entra, imds = entra, graph = require "cmkflow.emulator.graph",
                   arm = require "cmkflow.emulator.arm", keyvault = require "cmkflow.emulator.keyvault" }
local st

local function read_file(path)
  local f, err = io.open(path, "rb")
  if not f then error("seed: cannot read " .. tostring(err), 0) end
  local s = f:read("a")
  f:close()
  return s
end

-- Builds the state from config (JSON text or table). Raises "seed: <field> <problem>" on a bad seed.
function M.new_state(config)
  local cfg = type(config) == "table" and config or {}
  if type(config) == "string" and config ~= "" then
    local decoded, err = json.decode(config)
    if type(decoded) ~= "table" then error("emulator config is not a JSON object: " .. tostring(err), 0) end
    cfg = decoded
  end
  local seed = cfg.seed
  if seed == nil and cfg.seed_file then
    local decoded, err = json.decode(read_file(cfg.seed_file))
    if decoded == nil then error("seed: " .. cfg.seed_file .. " is not valid JSON: " .. tostring(err), 0) end
    seed = decoded
  end
  seed = seed or demo_seed
  local s = state_mod.new(seed)
  s.config = cfg
  return s
end

local persist = { path = nil, dirty = false, last = 0 }

local function persist_path(cfg)
  return cfg.state_dir and cfg.state_dir ~= "" and (cfg.state_dir .. "/state.json") or nil
end

-- Writes the state file when something changed, at most once per second (the last second of
-- changes before the process stops may be lost: persistence is best effort, see docs/emulator.md).
local function maybe_save(changed)
  if not persist.path then return end
  if changed then persist.dirty = true end
  local now = os.time()
  if persist.dirty and now > persist.last then
    persist.last = now
    persist.dirty = false
    local ok, err = st:save(persist.path)
    if not ok then io.stderr:write("cmkflow emulator: cannot save the state: ", tostring(err), "\n") end
  end
end

function M.init(config)
  st = M.new_state(config)
  control.init(st, st.config)
  persist.path, persist.dirty, persist.last = persist_path(st.config), false, 0
  if persist.path then
    local f = io.open(persist.path, "rb")
    if f then
      local text = f:read("a")
      f:close()
      local ok, why = st:deserialize(text)
      if ok then
        local c = control.ctl(st)
        for _, r in ipairs(st.knobs.faults) do
          c.fault_n = math.max(c.fault_n, tonumber(tostring(r.id):match("(%d+)$")) or 0)
        end
      else
        io.stderr:write("cmkflow emulator: ignoring ", persist.path, ": ", why, "\n")
      end
    end
  end
end

function M.state() return st end

local function run_service(service, req)
  return SERVICES[service].handle(st, req, service)
end

function M.handle(req)
  local service = router.route(req)
  if service == "control" and req.method == "POST" and req.path == "/_emulator/save" then
    -- write the state file now (the CLI asks before it exits, so nothing is lost to the debounce)
    if not persist.path then
      return respond.json(req, 409, { error = { code = "NoStateDir", message = "the emulator runs without --state" } })
    end
    persist.dirty, persist.last = true, 0
    maybe_save(true)
    return respond.json(req, 200, { saved = persist.path })
  end
  if service == "control" then
    local status, headers, body = control_api.handle(st, req)
    maybe_save(control_api.mutates(req) and status < 400)
    return status, headers, body
  end
  local intercepted, status, headers, body, delay = control.before(st, req, service)
  if not intercepted then
    local extra = delay
    local ok
    ok, status, headers, body, delay = xpcall(run_service, debug.traceback, service, req)
    if not ok then
      control.after(st, req, service, 500, nil, nil)
      error(status, 0)
    end
    if extra and extra > 0 then delay = math.min((delay or 0) + extra, 600000) end
    if headers == nil then headers = {} end
  end
  control.after(st, req, service, status, headers, delay)
  maybe_save(req.method ~= "GET" and req.method ~= "HEAD" and service ~= "entra" and service ~= "imds")
  return status, headers, body, delay
end

return M
