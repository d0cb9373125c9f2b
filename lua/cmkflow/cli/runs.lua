-- cmkflow runs list | runs show RUN_ID | runs cancel RUN_ID: the run store
-- ($CMKFLOW_STATE_DIR/runs.db).
local core = require "cmkflow.core"
local args = require "cmkflow.cli.args"
local output = require "cmkflow.cli.output"
local pipeline = require "cmkflow.app.pipeline"
local state = require "cmkflow.app.state"

local json, EXIT = core.json, core.exit

local M = {}

-- A journaled error: the JSON the engine stored (an error's fields), or older text as a message.
local function stored_error(text)
  if text == nil then return nil end
  local ok, doc = pcall(json.decode, text)
  if ok and type(doc) == "table" then return doc end
  return { code = "Error", message = text }
end

local function list(opts)
  local runs = state.open_store():runs { limit = 50 }
  if opts.output == "json" then
    local out = json.array()
    for _, r in ipairs(runs) do out[#out + 1] = { run_id = r.id, workflow = r.workflow, status = r.status,
      created_at = r.created_at, updated_at = r.updated_at } end
    io.stdout:write(json.encode(out), "\n")
  else
    for _, r in ipairs(runs) do
      io.stdout:write(("%s  %-20s %-11s %s\n"):format(r.id, r.workflow, r.status,
        os.date("!%Y-%m-%dT%H:%M:%SZ", r.updated_at)))
    end
  end
  return EXIT.ok
end

local function show(run_id, opts)
  local db = state.open_store()
  local run = db:run(run_id)
  if not run then return output.fail(pipeline.usage_error("no run '" .. run_id .. "'")) end
  local steps = json.array()
  for _, s in ipairs(db:steps(run_id)) do
    steps[#steps + 1] = { name = s.name, status = s.status, attempts = s.attempts, error = stored_error(s.error),
      outputs = s.outputs and json.decode(s.outputs) or nil }
  end
  local approvals = json.array()
  for _, a in ipairs(db:approvals(run_id)) do approvals[#approvals + 1] = { gate = a.gate, status = a.status } end
  local doc = { run_id = run.id, workflow = run.workflow, status = run.status, params = json.decode(run.params),
    error = stored_error(run.error), outputs = run.outputs and json.decode(run.outputs) or nil, steps = steps,
    approvals = approvals }
  if opts.output == "json" then
    io.stdout:write(json.encode(doc), "\n")
  else
    io.stdout:write(json.encode(doc, { pretty = true }), "\n")
  end
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
