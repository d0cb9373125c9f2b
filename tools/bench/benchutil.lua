-- What the benchmark scripts share: shell quoting and commands (benchmarks drive peers such as
-- the az CLI and /usr/bin/time; the cmkflow host itself calls no shell), and whole-file I/O.
--   local u = require "benchutil"   (tools/bench/ on package.path)
--   u.q(s) -> 's' quoted for sh;  u.sh(cmd) -> output, exit code
--   u.write(path, text) -> path;   u.read(path) -> text | nil
local M = {}

function M.q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

function M.sh(cmd)
  local p = assert(io.popen(cmd, "r"))
  local out = p:read("a")
  local ok, _, code = p:close()
  return out, ok and 0 or code
end

function M.write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  return path
end

function M.read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

return M
