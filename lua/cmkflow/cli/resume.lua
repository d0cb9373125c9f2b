-- cmkflow resume RUN_ID [--param k=v]... [--config FILE]: continue a failed, interrupted or waiting
-- run where it stopped; --param approves the gate it waits at with those values (as approve does),
-- --config names where the run's config file is now when it moved.
local args = require "cmkflow.cli.args"
local output = require "cmkflow.cli.output"
local pipeline = require "cmkflow.app.pipeline"
local engine = require "cmkflow.workflow.engine"
local app_runs = require "cmkflow.app.runs"

local M = {}

function M.resume(opts)
  local run_id, ierr = app_runs.resolve(opts[1])
  if not run_id then return output.fail(ierr) end
  local params, perr = args.params(opts)
  if not params then return args.usage_error(perr, "resume") end
  local result, rerr = pipeline.resume(run_id, output.progress_printer(opts.progress),
    { params = params, config = opts.config, by = os.getenv("USER") })
  if not result then return output.fail(rerr) end
  output.result(result, opts.output)
  return engine.exit_code(result)
end

return M
