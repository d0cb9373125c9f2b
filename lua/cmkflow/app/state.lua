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

-- Holds run_id for this process until it ends (or lock:release()): an flock(2) on
-- $STATE/locks/<run_id>.lock, which the kernel drops when the process dies, even by SIGKILL, so no
-- stale claim outlives its owner. Returns the lock, false and the holder's description when
-- another process holds it, or nil and a message.
function M.lock_run(run_id)
  local dir = M.dir() .. "/locks"
  local ok, err = core.fs.mkdir_p(dir, tonumber("700", 8))
  if not ok then return nil, err end
  local holder = ("process %d (cmkflow, since %s)"):format(core.fs.pid(), os.date("!%Y-%m-%dT%H:%M:%SZ"))
  return core.fs.lock(dir .. "/" .. tostring(run_id):gsub("[^%w%-_]", "_") .. ".lock", holder)
end

-- The run store ($STATE/runs.db); raises the store's error table when it cannot be opened.
function M.open_store()
  local db, err = core.store.open(M.dir() .. "/runs.db")
  if not db then error(err, 0) end
  return db
end

return M
