-- Where a running `cmkflow emulator` can be found: in its state directory (--state DIR, else the
-- per-user one, ~/.local/state/cmkflow/emulator) it writes emulator.json ({url, ca_cert, proxy, pid,
-- state_dir}) and holds an flock(2) on emulator.lock for as long as it runs. The kernel drops the
-- lock when the process dies, even by SIGKILL, so a reader tells a running emulator from a stale
-- file without trusting a pid that may have been reused (docs/emulator.md, "Finding a running
-- emulator").
local core = require "cmkflow.core"
local file = require "cmkflow.util.file"

local json, fs = core.json, core.fs

local M = {}

M.FILE, M.LOCK = "emulator.json", "emulator.lock"

-- The per-user state directory of `cmkflow emulator` without --state (not created).
function M.default_dir() return file.state_home() .. "/emulator" end

-- Claims dir for this process (an flock(2) is per open file: claim once). Returns the lock (keep it
-- referenced while running), or false and the holder's text when another emulator holds dir, or
-- nil, message.
function M.claim(dir)
  return fs.lock(dir .. "/" .. M.LOCK, ("pid %d"):format(fs.pid()))
end

-- Writes info to dir's locator file (whole, by a rename). true | nil, message.
function M.publish(dir, info)
  local tmp = ("%s/%s.%d.tmp"):format(dir, M.FILE, fs.pid())
  local ok, err = file.write(tmp, json.encode(info) .. "\n")
  if ok then ok, err = os.rename(tmp, dir .. "/" .. M.FILE) end
  if not ok then return nil, ("cannot write %s/%s: %s"):format(dir, M.FILE, tostring(err)) end
  return true
end

-- Removes what publish wrote (at a clean exit), then drops the lock.
function M.withdraw(dir, lock)
  os.remove(dir .. "/" .. M.FILE)
  if lock then lock:release() end
end

-- The running emulator of dir: {url, ca_cert, proxy?, pid, state_dir}, or nil and a message that
-- says what to do.
function M.find(dir)
  local path = dir .. "/" .. M.FILE
  local text = file.read(path)
  if not text then
    return nil, ("no emulator is running with state directory %s (no %s there): start one with "
      .. "`cmkflow emulator%s`"):format(dir, M.FILE, dir == M.default_dir() and "" or " --state " .. dir)
  end
  local info = json.decode(text)
  if type(info) ~= "table" or type(info.url) ~= "string" or type(info.ca_cert) ~= "string" then
    return nil, ("%s is not an emulator locator (url, ca_cert): remove it and start `cmkflow emulator`"):format(path)
  end
  local probe = fs.lock(dir .. "/" .. M.LOCK, "probe")
  if probe then
    probe:release()
    return nil, ("the emulator recorded in %s (pid %s, %s) is no longer running: start it again with "
      .. "`cmkflow emulator%s`"):format(path, tostring(info.pid), info.url,
        dir == M.default_dir() and "" or " --state " .. dir)
  end
  return info
end

return M
