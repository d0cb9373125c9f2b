-- One test CA and server certificate (for the default emulator names) per spec process, with the
-- CA in a file that is removed when the Lua state closes.
--   local pki = require("support.pki").get()   -- { ca, cert, key, ca_file }
local core = require "cmkflow.core"

local M = {}
local pki

function M.get()
  if pki then return pki end
  local ca, cakey = core.server.make_ca("cmkflow spec CA")
  local cert, key = core.server.make_cert(ca, cakey, core.server.default_names())
  local ca_file = os.tmpname()
  local f = assert(io.open(ca_file, "wb"))
  f:write(ca)
  f:close()
  pki = setmetatable({ ca = ca, cert = cert, key = key, ca_file = ca_file },
                     { __gc = function(p) os.remove(p.ca_file) end })
  return pki
end

return M
