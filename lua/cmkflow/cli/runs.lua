-- cmkflow runs list | runs show RUN_ID | runs cancel RUN_ID: the run store
-- ($CMKFLOW_STATE_DIR/runs.db).
local core = require "cmkflow.core"
local args = require "cmkflow.cli.args"
local output = require "cmkflow.cli.output"
local app_runs = require "cmkflow.app.runs"
local pipeline = require "cmkflow.app.pipeline"

local json, EXIT = core.json, core.exit

local M = {}

local function list(opts)
  local runs = app_runs.list(50)
  if opts.output == "json" then
    io.stdout:write(json.encode(runs), "\n")
  else
    for _, r in ipairs(runs) do
      io.stdout:write(("%s  %-20s %-11s %s\n"):format(r.run_id, r.workflow, r.status,
        os.date("!%Y-%m-%dT%H:%M:%SZ", r.updated_at)))
    end
  end
  return EXIT.ok
end

local function show(run_id, opts)
  local doc, err = app_runs.show(run_id)
  if not doc then return output.fail(err) end
  output.run_doc(doc, opts.output)
  return EXIT.ok
end

function M.runs(argv)
  local sub = table.remove(argv, 1)
  local opts, err = args.parse(argv, { output = "value" })
  if not opts then return args.usage_error(err) end
  local ok, oerr = args.check_output(opts.output)
  if not ok then return args.usage_error(oerr) end
  if sub == "list" then return list(opts) end
  if sub == "show" then
    if not opts[1] then return args.usage_error("runs show needs a RUN_ID") end
    return show(opts[1], opts)
  end
  if sub == "cancel" then
    if not opts[1] then return args.usage_error("runs cancel needs a RUN_ID") end
    local done, cerr = pipeline.cancel(opts[1])
    if not done then return output.fail(cerr) end
    if opts.output == "json" then
      io.stdout:write(json.encode(done), "\n")
    else
      io.stdout:write(("run %s: cancelled (was %s); it will not be resumed\n"):format(done.run_id, done.was))
    end
    return EXIT.ok
  end
  return args.usage_error("runs needs 'list', 'show RUN_ID' or 'cancel RUN_ID'")
end

return M
