-- cmkflow run | plan WORKFLOW: a new run of a workflow (or the plan of one) over the shared
-- pipeline (cmkflow.app.pipeline).
local core = require "cmkflow.core"
local args = require "cmkflow.cli.args"
local output = require "cmkflow.cli.output"
local pipeline = require "cmkflow.app.pipeline"
local bulk = require "cmkflow.app.bulk"
local engine = require "cmkflow.workflow.engine"
local host = require "cmkflow.host"

local json, EXIT = core.json, core.exit

local M = {}

local OPTIONS = { param = "list", output = "value", debug = "flag", config = "value", cloud = "value",
                  progress = "flag" }
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
  if opts.cloud and not CLOUDS[opts.cloud] then
    return nil, args.usage_error("--cloud must be emulator, azure, usgov or china, not '" .. opts.cloud .. "'")
  end
  local params, perr = args.key_values(opts.param)
  if not params then return nil, args.usage_error(perr) end
  opts.params = params
  -- progress is for people: on when stderr is a terminal, or when asked
  opts.progress = opts.progress or core.isatty(2)
  if opts.debug then host.set_debug(true) end
  return opts
end

local function print_plan(def, plan, out)
  if out == "json" then
    io.stdout:write(json.encode({ workflow = def.name, plan = plan }), "\n")
    return
  end
  io.stdout:write(("plan for %s: %d change(s)\n"):format(def.name, #plan))
  for _, p in ipairs(plan) do
    for _, m in ipairs(p.mutations) do io.stdout:write(("  %-24s %s\n"):format(p.step, m)) end
  end
end

local function execute(argv, what)
  local opts, status = options(argv, what)
  if not opts then return status end
  opts.plan = what == "plan"
  local prepared, err = pipeline.prepare(opts)
  if not prepared then return output.fail(err) end
  -- one run of an inner workflow per row of a list (workflows/bulk-onboard.lua)
  if prepared.def.bulk then return bulk.run(prepared.def, opts) end
  if opts.plan then
    local plan, perr = pipeline.plan(prepared, opts)
    if not plan then return output.fail(perr) end
    print_plan(prepared.def, plan, opts.output)
    return EXIT.ok
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
