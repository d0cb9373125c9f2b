-- cmkflow resume RUN_ID [--param k=v]... [--config FILE]: continue a failed, interrupted or waiting
-- run where it stopped; --param approves the gate it waits at with those values (as approve does),
-- --config names where the run's config file is now when it moved.
local core = require "cmkflow.core"
local args = require "cmkflow.cli.args"
local output = require "cmkflow.cli.output"
local pipeline = require "cmkflow.app.pipeline"
local engine = require "cmkflow.workflow.engine"
local host = require "cmkflow.host"

local M = {}

function M.resume(argv)
  local opts, err = args.parse(argv, { output = "value", progress = "flag", debug = "flag", param = "list",
                                       config = "value" })
  if not opts then return args.usage_error(err) end
  if not opts[1] then return args.usage_error("resume needs a RUN_ID (see 'cmkflow runs list')") end
  local ok, oerr = args.check_output(opts.output)
  if not ok then return args.usage_error(oerr) end
  opts.progress = opts.progress or core.isatty(2)
  if opts.progress then host.set_retry_notice(2000) end -- a retry that keeps people waiting says why
  if opts.debug then host.set_debug(true) end
  local params, perr = args.key_values(opts.param)
  if not params then return args.usage_error(perr) end
  local result, rerr = pipeline.resume(opts[1], output.progress_printer(opts.progress),
    { params = params, config = opts.config, by = os.getenv("USER") })
  if not result then return output.fail(rerr) end
  output.result(result, opts.output)
  return engine.exit_code(result)
end

return M
