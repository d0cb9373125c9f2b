-- Fuzz harness: the emulator's seed loader, as `cmkflow emulator --seed FILE` reads a seed
-- (lua/cmkflow/emulator/cli.lua: json.decode, then state.validate_seed) and the server builds its
-- state from it (lua/cmkflow/emulator/init.lua: init(config) -> state.new, control.init). Every
-- JSON input is refused with a "seed: <field> <problem>" message, or it loads, and then the state
-- it makes serializes (the state file) and reads back into a fresh state of the same seed.
local core = require "cmkflow.core"
local json = core.json

require "pooled_keys" -- before the emulator's modules: fuzz/pooled_keys.lua

local state = require "cmkflow.emulator.state"
local emulator = require "cmkflow.emulator"

local function check(cond, what, ...)
  if not cond then error(what .. ": " .. table.concat({ ... }, " | "), 2) end
end

return function(text)
  local seed = json.decode(text)
  if seed == nil then return end
  local ok, err = pcall(state.validate_seed, seed)
  if not ok then
    check(type(err) == "string" and err:match("^seed: "), "a seed refused without a 'seed: ' message", tostring(err))
    return
  end
  local loaded, lerr = pcall(emulator.init, { seed = seed })
  check(loaded, "a seed that validates does not load", tostring(lerr))
  local st = emulator.state()
  check(type(st:dump()) == "table", "the loaded state does not dump")
  local saved, serr = pcall(st.serialize, st)
  check(saved, "the loaded state does not serialize", tostring(serr))
  local fresh = emulator.new_state({ seed = seed })
  local back, why = fresh:deserialize(serr)
  check(back, "the state file of a loaded seed does not read back", tostring(why))
end
