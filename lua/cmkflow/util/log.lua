-- Notes for people on stderr at the level the command line asks for: quiet (--only-show-errors:
-- errors only), normal, verbose (-v: each HTTP request too), debug (--debug: the HTTP trace too).
-- Errors are not notes: they are printed whatever the level. Hosts embedding cmkflow get "normal".
local M = {}

local LEVELS = { quiet = 1, normal = 2, verbose = 3, debug = 4 }
local level = LEVELS.normal

function M.set_level(name) level = assert(LEVELS[name], "log level: quiet, normal, verbose or debug") end

-- Is the level at least name?
function M.at(name) return level >= LEVELS[name] end

-- A note (what the run waits for, which emulator it uses): not at quiet.
function M.notice(text)
  if level >= LEVELS.normal then io.stderr:write(text, "\n") end
end

-- A detail for -v: at verbose and debug only.
function M.verbose(text)
  if level >= LEVELS.verbose then io.stderr:write(text, "\n") end
end

return M
