-- cmkflow version: the versions of cmkflow and the libraries it runs on.
local core = require "cmkflow.core"

local M = {}

function M.version(opts)
  local v = core.versions()
  if opts.output == "json" then
    io.stdout:write(core.json.encode(v), "\n")
  else
    io.stdout:write(("cmkflow %s\nLua %s\nlibcurl %s\n%s\nSQLite %s\nlibmicrohttpd %s\njansson %s\n"):format(
      v.cmkflow, v.lua:gsub("^Lua ", ""), v.libcurl, v.openssl, v.sqlite, v.libmicrohttpd, v.jansson))
  end
  return core.exit.ok
end

return M
