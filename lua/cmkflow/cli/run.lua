-- cmkflow run | plan WORKFLOW: a new run of a workflow (or the plan of one) over the shared
-- pipeline (cmkflow.app.pipeline).
local core = require "cmkflow.core"
local args = require "cmkflow.cli.args"
local output = require "cmkflow.cli.output"
local pipeline = require "cmkflow.app.pipeline"
local bulk = require "cmkflow.app.bulk"
local engine = require "cmkflow.workflow.engine"

local EXIT = core.exit
local CHANGES_PENDING = 2 -- plan --detailed-exitcode: there are changes (Terraform's -detailed-exitcode)

local M = {}

-- The workflow and its parameters (--params files, then -p values). Returns opts or nil, exit status.
local function options(opts, what)
  opts.workflow = opts[1]
  local params, perr = args.params(opts)
  if not params then return nil, args.usage_error(perr, what) end
  opts.params = params
  return opts
end

-- Does this run destroy something? A definition says so with `destructive = true | "what it
-- destroys"` or a function of the checked parameters returning one of those (docs/lua-api.md).
-- Returns false or the reason to show.
local function destructive(def, values)
  local d = def.destructive
  if type(d) == "function" then
    local ok, r = pcall(d, values)
    d = not ok or r -- a function that fails counts as destructive: ask rather than not
  end
  if not d then return false end
  return type(d) == "string" and d or "it deletes or disables what earlier runs set up"
end

-- Before a destructive run's first change: --yes, or a "y" on a terminal. Returns true or nil,
-- exit status (2: nothing was changed).
local function confirmed(def, values, opts)
  local reason = destructive(def, values)
  if not reason or opts.yes then return true end
  if not core.isatty(0) then
    io.stderr:write(("cmkflow: workflow %s is destructive (%s): run it with --yes to confirm; nothing was changed\n")
      :format(def.name, reason))
    return nil, EXIT.usage
  end
  io.stderr:write(("cmkflow: workflow %s is destructive: %s.\nContinue? (y/N) "):format(def.name, reason))
  io.stderr:flush()
  local answer = io.stdin:read("l")
  if answer and answer:match("^%s*[yY]") then return true end
  io.stderr:write("cmkflow: cancelled; nothing was changed\n")
  return nil, EXIT.usage
end

local function execute(given, what)
  local opts, status = options(given, what)
  if not opts then return status end
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
  local ok, cstatus = confirmed(prepared.def, prepared.values, opts)
  if not ok then return cstatus end
  local result, rerr = pipeline.start(prepared, opts, output.progress_printer(opts.progress, #prepared.def.steps),
    function(run_id)
      if opts.progress then io.stderr:write(("cmkflow: run %s of %s\n"):format(run_id, prepared.def.name)) end
    end)
  if not result then return output.fail(rerr) end
  output.result(result, opts.output)
  return engine.exit_code(result)
end

function M.run(opts) return execute(opts, "run") end

function M.plan(opts) return execute(opts, "plan") end

return M
