-- cmkflow run | plan WORKFLOW: a new run of a workflow (or the plan of one) over the shared
-- pipeline (cmkflow.app.pipeline).
local core = require "cmkflow.core"
local args = require "cmkflow.cli.args"
local output = require "cmkflow.cli.output"
local pipeline = require "cmkflow.app.pipeline"
local bulk = require "cmkflow.app.bulk"
local engine = require "cmkflow.workflow.engine"
local host = require "cmkflow.host"

local EXIT = core.exit
local CHANGES_PENDING = 2 -- plan --detailed-exitcode: there are changes (Terraform's -detailed-exitcode)

local M = {}

local OPTIONS = { param = "list", output = "value", debug = "flag", config = "value", cloud = "value",
                  progress = "flag", ["detailed-exitcode"] = "flag", refresh = "value" }
local CLOUDS = { emulator = true, azure = true, usgov = true, china = true }

-- Options, parameters, cloud. Returns opts or nil, exit status.
local function options(argv, what)
  local opts, err = args.parse(argv, OPTIONS)
  if not opts then return nil, args.usage_error(err) end
  opts.workflow = opts[1]
  if not opts.workflow then return nil, args.usage_error(what .. " needs a workflow (a file or a stock workflow name)") end
  if opts[2] then return nil, args.usage_error("unexpected argument '" .. opts[2] .. "'") end
  local ok, oerr = args.check_output(opts.output)
  if not ok then return nil, args.usage_error(oerr) end
  if opts.refresh and opts.refresh ~= "true" and opts.refresh ~= "false" then
    return nil, args.usage_error("--refresh must be true or false, not '" .. opts.refresh .. "'")
  end
  if opts.cloud and not CLOUDS[opts.cloud] then
    return nil, args.usage_error("--cloud must be emulator, azure, usgov or china, not '" .. opts.cloud .. "'")
  end
  local params, perr = args.key_values(opts.param)
  if not params then return nil, args.usage_error(perr) end
  opts.params = params
  -- progress is for people: on when stderr is a terminal, or when asked
  opts.progress = opts.progress or core.isatty(2)
  if opts.progress then host.set_retry_notice(2000) end -- a retry that keeps people waiting says why
  if opts.debug then host.set_debug(true) end
  return opts
end

local function execute(argv, what)
  local opts, status = options(argv, what)
  if not opts then
    for _, a in ipairs(argv) do if what == "plan" and a == "--detailed-exitcode" then return EXIT.failed end end
    return status
  end
  opts.plan = what == "plan"
  -- Terraform's -detailed-exitcode: 0 no changes, 2 changes, 1 any error
  local detailed = opts.plan and opts["detailed-exitcode"]
  local function failed(e)
    local code = output.fail(e)
    return detailed and EXIT.failed or code
  end
  local prepared, err = pipeline.prepare(opts)
  if not prepared then return failed(err) end
  -- one run of an inner workflow per row of a list (workflows/bulk-onboard.lua)
  if prepared.def.bulk then return bulk.run(prepared.def, opts) end
  if opts.plan then
    local plan, perr = pipeline.plan(prepared, opts)
    if not plan then return failed(perr) end
    output.plan(prepared.def.name, plan, opts.output)
    return detailed and output.plan_changes(plan) > 0 and CHANGES_PENDING or EXIT.ok
  end
  local result, rerr = pipeline.start(prepared, opts, output.progress_printer(opts.progress, #prepared.def.steps),
    function(run_id)
      if opts.progress then io.stderr:write(("cmkflow: run %s of %s\n"):format(run_id, prepared.def.name)) end
    end)
  if not result then return output.fail(rerr) end
  output.result(result, opts.output)
  return engine.exit_code(result)
end

function M.run(argv) return execute(argv, "run") end

function M.plan(argv) return execute(argv, "plan") end

return M
