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
                   arm = require "cmkflow.emulator.arm", keyvault = require "cmkflow.emulator.keyvault",
                   blob = require "cmkflow.emulator.storage_blob" }
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

local persist = { path = nil, dirty = false }

local function persist_path(cfg)
  return cfg.state_dir and cfg.state_dir ~= "" and (cfg.state_dir .. "/state.json") or nil
end

-- Writes the state file (durably: core.durable) when the request changed the state. Called before
-- the answer leaves, so a success the client sees is on disk. Returns true, or nil, err.
local function save(changed)
  if not persist.path or not changed then return true end
  local saved, ok, err = pcall(st.save, st, persist.path) -- serialising can raise (a world too deep)
  if not saved then ok, err = nil, ok end
  if not ok then
    io.stderr:write("cmkflow emulator: cannot save the state: ", tostring(err and err.message or err), "\n")
    return nil, err
  end
  return true
end

-- Group commit (core/server.h): a request that changed the state returns its answer with
-- commit = true and the server holds it; after each turn of its loop the server calls M.commit
-- once, which writes the state (one durable write for every request of that turn), and only then
-- lets their answers go, or answers each of them 500 when the write failed.
local function changed_answer(changed, status, headers, body, delay)
  if not persist.path or not changed then return status, headers, body, delay end
  persist.dirty = true
  return status, headers, body, delay or 0, true
end

function M.commit()
  if not persist.dirty then return true end
  persist.dirty = false
  if save(true) then return true end
  return false, "InternalServerError",
    "The emulator could not write its state file; the request may not have been applied."
end

-- The answer when the state could not be saved: the change is not acknowledged.
local function not_saved(req)
  return respond.json(req, 500, { error = { code = "InternalServerError",
    message = "The emulator could not write its state file; the request may not have been applied." } })
end

function M.init(config)
  -- The emulator's Lua state (its own thread, core/server.c) holds one world that only grows and
  -- makes little garbage per request next to it. Incremental collection, a cycle starting when
  -- the heap is 120% of what the last one kept, at twice the default speed: the generational mode
  -- (server.c's default) let the heap grow to twice the world before a major collection.
  -- Measured (docs/performance.md, "Emulator at scale"): peak RSS 125 -> 110 MiB at 2,000
  -- customers, no more CPU.
  collectgarbage("incremental", 120, 200)
  st = M.new_state(config)
  control.init(st, st.config)
  persist.path = persist_path(st.config)
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
  -- the records the last request read or wrote go back to their packed form (resource_index.lua)
  st:settle()
  local service = router.route(req)
  if service == "control" and req.method == "POST" and req.path == "/_emulator/save" then
    -- every change is saved before its answer; kept so that callers that ask still get an answer
    if not persist.path then
      return respond.json(req, 409, { error = { code = "NoStateDir", message = "the emulator runs without --state" } })
    end
    if not save(true) then return not_saved(req) end
    return respond.json(req, 200, { saved = persist.path })
  end
  if service == "control" then
    local status, headers, body = control_api.handle(st, req)
    return changed_answer(control_api.mutates(req), status, headers, body)
  end
  local intercepted, status, headers, body, delay = control.before(st, req, service)
  -- a fired fault rule changed its counters; other requests change the world unless they read
  local changed = (req.emulator and req.emulator.fault ~= nil)
    or (req.method ~= "GET" and req.method ~= "HEAD" and service ~= "entra" and service ~= "imds")
  if not intercepted then
    local extra = delay
    local ok
    ok, status, headers, body, delay = xpcall(run_service, debug.traceback, service, req)
    if not ok then
      control.after(st, req, service, 500, nil, nil)
      save(changed)
      error(status, 0)
    end
    if extra and extra > 0 then delay = math.min((delay or 0) + extra, 600000) end
    if headers == nil then headers = {} end
  end
  control.after(st, req, service, status, headers, delay)
  return changed_answer(changed, status, headers, body, delay)
end

return M
