-- The Azure emulator as a server handler (core/server.c runs it in its own Lua state):
--   core.server.start{ handler_module = "cmkflow.emulator", config = json }
-- config: { seed = <seed object> | seed_file = "path" (default: the built-in demo seed),
--           state_dir = "dir"?, knobs = {...}? }
local core = require "cmkflow.core"
local json = core.json
local state_mod = require "cmkflow.emulator.state"
local router = require "cmkflow.emulator.router"

local M = {}

local SERVICES = { entra = "cmkflow.emulator.entra", imds = "cmkflow.emulator.entra", graph = "cmkflow.emulator.graph",
                   arm = "cmkflow.emulator.arm", keyvault = "cmkflow.emulator.keyvault", control = "cmkflow.emulator.control" }
local handlers = {}
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
  seed = seed or require "cmkflow.emulator.demo_seed"
  local s = state_mod.new(seed)
  s.config = cfg
  return s
end

function M.init(config)
  st = M.new_state(config)
  local control = require "cmkflow.emulator.control"
  if control.init then control.init(st, st.config) end
end

function M.state() return st end

function M.handle(req)
  local service = router.route(req)
  local control = require "cmkflow.emulator.control"
  if control.before and service ~= "control" then
    local intercepted, status, headers, body, delay = control.before(st, req, service)
    if intercepted then return status, headers, body, delay end
  end
  local h = handlers[service]
  if not h then
    h = require(SERVICES[service])
    handlers[service] = h
  end
  local status, headers, body, delay = h.handle(st, req, service)
  if control.after and service ~= "control" then control.after(st, req, service, status) end
  return status, headers, body, delay
end

return M
