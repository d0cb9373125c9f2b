-- cmkflow emulator [...]: the Azure emulator in the foreground (cmkflow.emulator.cli).
local core = require "cmkflow.core"
local args = require "cmkflow.cli.args"
local ecli = require "cmkflow.emulator.cli"

local M = {}

function M.emulator(argv)
  local opts, err = args.parse(argv, ecli.OPTIONS)
  if not opts then return args.usage_error(err) end
  if opts[1] then return args.usage_error("emulator takes no positional arguments ('" .. opts[1] .. "')") end
  return ecli.main(opts, core.exit)
end

return M
