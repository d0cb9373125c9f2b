-- File and shell helpers for specs: whole-file reads and writes, shell quoting, private scratch
-- directories, and commands that must succeed.
local M = {}

-- The file's bytes. When it cannot be opened: `missing` if given, else an error.
function M.read(path, missing)
  local f, err = io.open(path, "rb")
  if not f then
    if missing ~= nil then return missing end
    error(err, 2)
  end
  local data = f:read("a")
  f:close()
  return data
end

-- Writes data to path (replacing it); returns path.
function M.write(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
  return path
end

-- s as one single-quoted word for sh(1).
function M.quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- Runs cmd with its output discarded; raises when it fails.
function M.sh(cmd)
  assert(os.execute(cmd .. " >/dev/null 2>&1"), "command failed: " .. cmd)
end

-- A new empty directory only the current user can enter; the caller removes it.
function M.tmpdir()
  local path = os.tmpname()
  os.remove(path)
  M.sh("mkdir -m 700 " .. M.quote(path))
  return path
end

-- The command that starts a child lua5.4 loading our core module: in sanitizer builds the runtime
-- must be preloaded into that (uninstrumented) interpreter again (core/lmod.c moved it aside).
function M.lua5_4()
  local preload = os.getenv("CMKFLOW_SANITIZER_PRELOAD")
  if preload and preload ~= "" then return "env LD_PRELOAD=" .. M.quote(preload) .. " lua5.4" end
  return "lua5.4"
end

return M
