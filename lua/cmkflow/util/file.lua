-- Whole-file read and write and absolute paths for the command-line modules (`cmkflow emulator`,
-- `cmkflow run` and friends). Nothing here goes through a shell.
local fs = require("cmkflow.core").fs

local M = {}

-- The whole file, or nil when it cannot be read.
function M.read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

-- Writes content to path, replacing it; private: created with mode 0600 (in C, no shell) before
-- anything is written. true | nil, err.
function M.write(path, content, private)
  if private then return fs.write(path, content, tonumber("600", 8)) end
  local f, err = io.open(path, "wb")
  if not f then return nil, err end
  f:write(content)
  f:close()
  return true
end

-- The per-user state directory (not created): $CMKFLOW_STATE_DIR, else $XDG_STATE_HOME/cmkflow,
-- else ~/.local/state/cmkflow. The run store lives there, the emulator's locator in its emulator/.
function M.state_home()
  local dir = os.getenv("CMKFLOW_STATE_DIR")
  if dir and dir ~= "" then return dir end
  local xdg = os.getenv("XDG_STATE_HOME")
  return (xdg and xdg ~= "" and xdg or ((os.getenv("HOME") or "/tmp") .. "/.local/state")) .. "/cmkflow"
end

-- path made absolute against the working directory (getcwd, in C), so that what a run stores
-- still names the same file when it is resumed from elsewhere.
function M.absolute(path)
  if path == nil or path:sub(1, 1) == "/" then return path end
  local cwd = fs.cwd() or "."
  return (cwd .. "/" .. path:gsub("^%./", ""))
end

return M
