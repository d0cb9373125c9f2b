-- STUB: the emulated entra service (to be implemented). handle(st, req) -> status, headers, body
local respond = require "cmkflow.emulator.respond"

local M = {}

function M.handle(st, req)
  return respond.json(req, 501, { error = { code = "NotImplemented",
    message = "the emulator does not implement " .. req.method .. " " .. req.path .. " yet" } })
end

return M
