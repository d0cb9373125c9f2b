-- cmkflow demo: the smoke workflow (one token, one ARM call through the production code path)
-- against the embedded emulator with its demo seed, whatever configuration is around: the quickest
-- check that a build works. Emulator state lives under the state dir, as for `cmkflow run` without
-- a config.
local core = require "cmkflow.core"
local output = require "cmkflow.cli.output"
local pipeline = require "cmkflow.app.pipeline"
local engine = require "cmkflow.workflow.engine"

local EXIT = core.exit

local M = {}

function M.demo(opts)
  local run = { workflow = "smoke", params = {}, embedded = true }
  local prepared, perr = pipeline.prepare(run)
  if not prepared then return output.fail(perr) end
  local result, rerr = pipeline.start(prepared, run)
  if not result then return output.fail(rerr) end
  if result.status ~= "succeeded" then
    io.stderr:write("cmkflow demo: ", output.error_text(result.error), "\n")
    return engine.exit_code(result)
  end
  local found = result.outputs.subscriptions
  if opts.output == "json" then
    io.stdout:write(core.json.encode(found), "\n")
  else
    io.stdout:write(("demo: authenticated to tenant %s\ndemo: %s\n"):format(found.tenant, found.summary))
  end
  return EXIT.ok
end

return M
