-- cmkflow approve RUN_ID GATE [--reject] [--note TEXT] [--param k=v]...: decide an approval gate;
-- --param values (the customer's key_vault_uri and key_name) are handed to the steps after it.
local core = require "cmkflow.core"
local args = require "cmkflow.cli.args"
local output = require "cmkflow.cli.output"
local app_runs = require "cmkflow.app.runs"

local EXIT = core.exit

local M = {}

function M.approve(argv)
  local opts, err = args.parse(argv, { reject = "flag", note = "value", param = "list" })
  if not opts then return args.usage_error(err) end
  local run_id, gate = opts[1], opts[2]
  if not run_id or not gate then return args.usage_error("approve needs RUN_ID GATE") end
  local values, verr = args.key_values(opts.param)
  if not values then return args.usage_error(verr) end
  -- values handed over at the gate (the customer's vault URI and key name) travel in the approval
  local decision = opts.reject and "rejected" or "approved"
  local ok, derr = app_runs.decide(run_id, gate, decision, values, opts.note, os.getenv("USER"))
  if not ok then return output.fail(derr) end
  io.stderr:write(("cmkflow: gate '%s' of run %s %s; continue with: cmkflow resume %s\n")
    :format(gate, run_id, decision, run_id))
  return EXIT.ok
end

return M
