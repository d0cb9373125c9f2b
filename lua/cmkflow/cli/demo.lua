-- cmkflow demo: the smoke workflow (one token, one ARM call through the production code path)
-- against the embedded emulator with its demo seed, whatever configuration is around: the quickest
-- check that a build works. Emulator state lives under the state dir, as for `cmkflow run` without
-- a config.
local core = require "cmkflow.core"
local args = require "cmkflow.cli.args"
local output = require "cmkflow.cli.output"
local pipeline = require "cmkflow.app.pipeline"
local host = require "cmkflow.host"
local engine = require "cmkflow.workflow.engine"

local EXIT = core.exit

local M = {}

function M.demo(argv)
  local opts, err = args.parse(argv, { output = "value", debug = "flag" })
  if not opts then return args.usage_error(err) end
  if opts[1] then return args.usage_error("demo takes no positional arguments ('" .. opts[1] .. "')") end
  local ok, oerr = args.check_output(opts.output)
  if not ok then return args.usage_error(oerr) end
  if opts.debug then host.set_debug(true) end
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
