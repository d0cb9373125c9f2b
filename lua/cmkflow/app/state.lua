-- Where runs (and the embedded emulator's state) live, and the run store in it.
local core = require "cmkflow.core"
local file = require "cmkflow.util.file"

local M = {}

-- The directory set in code (cmkflow_host_set_state_dir), else $CMKFLOW_STATE_DIR, else
-- $XDG_STATE_HOME/cmkflow, else ~/.local/state/cmkflow (created, 0700).
local chosen -- set in code (the C API's cmkflow_host_set_state_dir)

function M.set_dir(dir) chosen = dir end

function M.dir()
  local dir = chosen or file.state_home()
  local ok, err = core.fs.mkdir_p(dir, tonumber("700", 8))
  if not ok then
    error(core.error.new { code = "InvalidConfig", kind = "config", field = "CMKFLOW_STATE_DIR", message = err }, 0)
  end
  return dir
end

-- The run store: `state` in the config file named (--config, which the commands pass to
-- use_config, or $CMKFLOW_CONFIG), else $CMKFLOW_STORE - a postgresql:// URL, shared by every
-- machine that runs workflows (docs/scaling.md), or an SQLite file - else $STATE/runs.db.
local config_named, from_config = nil, {}

function M.use_config(path) config_named = path end

function M.location()
  local path = config_named or os.getenv("CMKFLOW_CONFIG")
  if path and path ~= "" then
    if from_config[path] == nil then
      local ok, store = pcall(core.config.state, path)
      if not ok then
        error(core.error.new { code = "InvalidConfig", kind = "config", field = "state", message = store }, 0)
      end
      from_config[path] = store or false
    end
    if from_config[path] then return from_config[path] end
  end
  local env = os.getenv("CMKFLOW_STORE")
  if env and env ~= "" then
    local ok, err = pcall(core.config.check_state, env)
    if not ok then
      error(core.error.new { code = "InvalidConfig", kind = "config", field = "CMKFLOW_STORE", message = err }, 0)
    end
    return env
  end
  return M.dir() .. "/runs.db"
end

-- Holds run_id for this process until it ends (or lock:release()). On an SQLite store: an flock(2)
-- on $STATE/locks/<run_id>.lock, which the kernel drops when the process dies, even by SIGKILL, so
-- no stale claim outlives its owner. On a PostgreSQL store (db, open): a session advisory lock on
-- db's connection, which the server drops when the connection ends, for the same reason. Returns
-- the lock, false and the holder's description when another process holds it, or nil and a message
-- (nil alone for no run_id).
function M.lock_run(run_id, db)
  if run_id == nil then return nil end -- nothing to hold
  if db and db:backend() == "postgresql" then
    local ok, holder = db:try_lock(run_id)
    if ok == nil then return nil, holder.message end
    if not ok then return false, holder end
    local released = false
    local function release()
      if not released then
        released = true
        pcall(db.unlock, db, run_id) -- a closed store's connection took the lock with it
      end
    end
    return setmetatable({ release = release }, { __close = release })
  end
  local dir = M.dir() .. "/locks"
  local ok, err = core.fs.mkdir_p(dir, tonumber("700", 8))
  if not ok then return nil, err end
  local holder = ("process %d (cmkflow, since %s)"):format(core.fs.pid(), os.date("!%Y-%m-%dT%H:%M:%SZ"))
  return core.fs.lock(dir .. "/" .. tostring(run_id):gsub("[^%w%-_]", "_") .. ".lock", holder)
end

-- The run store (location()); raises the store's error table when it cannot be opened.
function M.open_store()
  local db, err = core.store.open(M.location())
  if not db then error(err, 0) end
  return db
end

return M
