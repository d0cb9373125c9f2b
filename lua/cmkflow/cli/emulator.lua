-- cmkflow emulator [...]: the Azure emulator in the foreground (cmkflow.emulator.cli).
local core = require "cmkflow.core"
local ecli = require "cmkflow.emulator.cli"

local M = {}

-- opts: the options of the command table's emulator row (cmkflow.cli.commands), by long name
function M.emulator(opts)
  return ecli.main(opts, core.exit)
end

return M
