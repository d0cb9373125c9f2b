-- cmkflow approve RUN_ID GATE [--reject] [--note TEXT] [--param k=v]...: decide an approval gate;
-- --param values (the customer's key_vault_uri and key_name) are checked against what the gate
-- declares and handed to the steps after it. Approving again corrects them until the run has
-- succeeded (cmkflow.app.pipeline.decide).
local core = require "cmkflow.core"
local args = require "cmkflow.cli.args"
local output = require "cmkflow.cli.output"
local pipeline = require "cmkflow.app.pipeline"

local EXIT = core.exit

local M = {}

function M.approve(argv)
  local opts, err = args.parse(argv, { reject = "flag", note = "value", param = "list", output = "value" })
  if not opts then return args.usage_error(err) end
  local ok, oerr = args.check_output(opts.output)
  if not ok then return args.usage_error(oerr) end
  local run_id, gate = opts[1], opts[2]
  if not run_id or not gate then return args.usage_error("approve needs RUN_ID GATE") end
  local values, verr = args.key_values(opts.param)
  if not values then return args.usage_error(verr) end
  local decided, derr = pipeline.decide(run_id, gate, { reject = opts.reject, note = opts.note, values = values,
                                                         by = os.getenv("USER") })
  if not decided then return output.fail(derr) end
  output.decision(decided, opts.output)
  return EXIT.ok
end

return M
