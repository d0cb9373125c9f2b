-- cmkflow demo: the smoke workflow (one token, one ARM call through the production code path)
-- against the embedded emulator with its demo seed, whatever configuration is around: the quickest
-- check that a build works. Emulator state lives under the state dir, as for `cmkflow run` without
-- a config.
local core = require "cmkflow.core"
local args = require "cmkflow.cli.args"
local output = require "cmkflow.cli.output"
local embedded = require "cmkflow.app.embedded"
local host = require "cmkflow.host"

local EXIT = core.exit

local M = {}

function M.demo(argv)
  local opts, err = args.parse(argv, { output = "value", debug = "flag" })
  if not opts then return args.usage_error(err) end
  if opts[1] then return args.usage_error("demo takes no positional arguments ('" .. opts[1] .. "')") end
  local ok, oerr = args.check_output(opts.output)
  if not ok then return args.usage_error(oerr) end
  if opts.debug then host.set_debug(true) end
  embedded.start()
  local status, out = host.run("module", "workflows.smoke", nil, "{}")
  embedded.finish()
  if status ~= EXIT.ok then
    io.stderr:write("cmkflow demo: ", output.error_text(out), "\n")
    return status
  end
  if opts.output == "json" then
    io.stdout:write(out, "\n")
  else
    local result = core.json.decode(out)
    io.stdout:write(("demo: authenticated to tenant %s\ndemo: %s\n"):format(result.tenant, result.summary))
  end
  return EXIT.ok
end

return M
