-- cmkflow resume RUN_ID: continue a failed, interrupted or waiting run where it stopped.
local core = require "cmkflow.core"
local args = require "cmkflow.cli.args"
local output = require "cmkflow.cli.output"
local pipeline = require "cmkflow.app.pipeline"
local engine = require "cmkflow.workflow.engine"
local host = require "cmkflow.host"

local M = {}

function M.resume(argv)
  local opts, err = args.parse(argv, { output = "value", progress = "flag", debug = "flag" })
  if not opts then return args.usage_error(err) end
  if not opts[1] then return args.usage_error("resume needs a RUN_ID (see 'cmkflow runs list')") end
  local ok, oerr = args.check_output(opts.output)
  if not ok then return args.usage_error(oerr) end
  opts.progress = opts.progress or core.isatty(2)
  if opts.debug then host.set_debug(true) end
  local result, rerr = pipeline.resume(opts[1], output.progress_printer(opts.progress))
  if not result then return output.fail(rerr) end
  output.result(result, opts.output)
  return engine.exit_code(result)
end

return M
