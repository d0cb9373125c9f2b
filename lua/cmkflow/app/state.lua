-- Where runs (and the embedded emulator's state) live, and the run store in it.
local core = require "cmkflow.core"
local file = require "cmkflow.util.file"

local M = {}

-- $CMKFLOW_STATE_DIR, else $XDG_STATE_HOME/cmkflow, else ~/.local/state/cmkflow (created, 0700).
function M.dir()
  local dir = os.getenv("CMKFLOW_STATE_DIR")
  if not dir or dir == "" then
    local xdg = os.getenv("XDG_STATE_HOME")
    dir = (xdg and xdg ~= "" and xdg or ((os.getenv("HOME") or "/tmp") .. "/.local/state")) .. "/cmkflow"
  end
  os.execute("mkdir -p -m 700 " .. file.quote(dir))
  return dir
end

-- The run store ($STATE/runs.db); raises the store's error table when it cannot be opened.
function M.open_store()
  local db, err = core.store.open(M.dir() .. "/runs.db")
  if not db then error(err, 0) end
  return db
end

return M
