-- cmkflow approve RUN_ID GATE [--reject] [--note TEXT] [--param k=v]...: decide an approval gate;
-- --param values (the customer's key_vault_uri and key_name) are checked against what the gate
-- declares and handed to the steps after it. Approving again corrects them until the run has
-- succeeded (cmkflow.app.pipeline.decide).
local core = require "cmkflow.core"
local args = require "cmkflow.cli.args"
local output = require "cmkflow.cli.output"
local pipeline = require "cmkflow.app.pipeline"
local app_runs = require "cmkflow.app.runs"

local EXIT = core.exit

local M = {}

function M.approve(opts)
  local run_id, rerr = app_runs.resolve(opts[1])
  if not run_id then return output.fail(rerr) end
  local gate = opts[2]
  local values, verr = args.params(opts)
  if not values then return args.usage_error(verr, "approve") end
  local decided, derr = pipeline.decide(run_id, gate, { reject = opts.reject, note = opts.note, values = values,
                                                         by = os.getenv("USER") })
  if not decided then return output.fail(derr) end
  output.decision(decided, opts.output)
  return EXIT.ok
end

return M
