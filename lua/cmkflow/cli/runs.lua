-- cmkflow runs list | show RUN_ID | cancel RUN_ID | prune --older-than DURATION: the run store
-- ($CMKFLOW_STATE_DIR/runs.db). A RUN_ID may be a unique prefix of one (cmkflow.app.runs.resolve).
local core = require "cmkflow.core"
local args = require "cmkflow.cli.args"
local output = require "cmkflow.cli.output"
local app_runs = require "cmkflow.app.runs"
local pipeline = require "cmkflow.app.pipeline"

local json, EXIT = core.json, core.exit

local M = {}

local function iso_time(t) return t and os.date("!%Y-%m-%dT%H:%M:%SZ", t) or "-" end

-- 75 -> "1m15s", 7260 -> "2h01m", 90000 -> "1d01h"
local function duration_text(s)
  if not s or s < 0 then return "-" end
  if s < 60 then return ("%ds"):format(s) end
  if s < 3600 then return ("%dm%02ds"):format(s // 60, s % 60) end
  if s < 86400 then return ("%dh%02dm"):format(s // 3600, s % 3600 // 60) end
  return ("%dd%02dh"):format(s // 86400, s % 86400 // 3600)
end

local COLUMNS = { "RUN", "WORKFLOW", "CUSTOMER", "STATUS", "STARTED", "DURATION" }

-- A run's cells in COLUMNS order; short: the table's 8-character id (a prefix resolves).
local function cells(r, short)
  return { short and r.run_id:sub(1, 8) or r.run_id, r.workflow, r.customer or "-", r.status,
           iso_time(r.created_at), duration_text(r.updated_at and r.created_at and (r.updated_at - r.created_at)) }
end

-- Rows as aligned columns (with a header and a rule for the table format).
local function print_columns(rows, header)
  local lines = {}
  if header then lines[1] = COLUMNS end
  for _, r in ipairs(rows) do lines[#lines + 1] = r end
  local width = {}
  for _, l in ipairs(lines) do
    for i, c in ipairs(l) do width[i] = math.max(width[i] or 0, #c) end
  end
  for n, l in ipairs(lines) do
    local out = {}
    for i, c in ipairs(l) do out[i] = i == #l and c or (c .. (" "):rep(width[i] - #c)) end
    io.stdout:write(table.concat(out, "  "), "\n")
    if header and n == 1 then
      local rule = {}
      for i = 1, #l do rule[i] = ("-"):rep(width[i]) end
      io.stdout:write(table.concat(rule, "  "), "\n")
    end
  end
end

-- A run row for JSON: the store's fields plus started (ISO 8601) and duration_s.
local function json_row(r)
  return { run_id = r.run_id, workflow = r.workflow, customer = r.customer, status = r.status,
           created_at = r.created_at, updated_at = r.updated_at, started = iso_time(r.created_at),
           duration_s = r.updated_at and r.created_at and (r.updated_at - r.created_at) or nil }
end

local function print_runs(runs, format)
  if format == "json" then
    local out = json.array()
    for i, r in ipairs(runs) do out[i] = json_row(r) end
    io.stdout:write(json.encode(out), "\n")
    return
  end
  local rows = {}
  for i, r in ipairs(runs) do rows[i] = cells(r, format == "table") end
  print_columns(rows, format == "table")
end

function M.list(opts)
  local limit = opts.limit and math.tointeger(tonumber(opts.limit))
  if opts.limit and (not limit or limit < 1) then
    return args.usage_error("--limit needs a positive whole number, not '" .. opts.limit .. "'", "runs list")
  end
  print_runs(app_runs.list { limit = limit, status = opts.status, workflow = opts.workflow, customer = opts.customer },
             opts.output)
  return EXIT.ok
end

local function show(run_id, opts)
  local doc, err = app_runs.show(run_id)
  if not doc then return output.fail(err) end
  output.run_doc(doc, opts.output)
  return EXIT.ok
end

function M.show(opts)
  local run_id, err = app_runs.resolve(opts[1])
  if not run_id then return output.fail(err) end
  return show(run_id, opts)
end

function M.cancel(opts)
  local run_id, err = app_runs.resolve(opts[1])
  if not run_id then return output.fail(err) end
  local done, cerr = pipeline.cancel(run_id)
  if not done then return output.fail(cerr) end
  if opts.output == "json" then
    io.stdout:write(json.encode(done), "\n")
  else
    io.stdout:write(("run %s: cancelled (was %s); it will not be resumed\n"):format(done.run_id, done.was))
  end
  return EXIT.ok
end

local UNIT_SECONDS = { s = 1, m = 60, h = 3600, d = 86400, w = 604800 }

-- "30d", "12h", "1d12h", "90s" -> seconds | nil
function M.parse_duration(text)
  local total, rest = 0, text
  while rest ~= "" do
    local n, unit, tail = rest:match("^(%d+)([smhdw])(.*)$")
    if not n then return nil end
    total, rest = total + tonumber(n) * UNIT_SECONDS[unit], tail
  end
  return text ~= "" and total or nil
end

function M.prune(opts)
  local seconds = M.parse_duration(opts["older-than"])
  if not seconds then
    return args.usage_error(("--older-than needs a duration such as 30d, 12h, 45m, 90s or 1d12h, not '%s'")
      :format(opts["older-than"]), "runs prune")
  end
  local result = app_runs.prune { before = os.time() - seconds, unfinished = opts.unfinished, dry_run = opts["dry-run"] }
  if opts.output == "json" then
    local doc = { dry_run = opts["dry-run"] == true }
    for _, k in ipairs { "removed", "kept", "busy" } do
      doc[k] = json.array()
      for i, r in ipairs(result[k]) do doc[k][i] = json_row(r) end
    end
    io.stdout:write(json.encode(doc), "\n")
    return EXIT.ok
  end
  local verb = opts["dry-run"] and "would remove" or "removed"
  io.stdout:write(("%s %d run(s) last updated more than %s ago\n"):format(verb, #result.removed, opts["older-than"]))
  local rows = {}
  for i, r in ipairs(result.removed) do rows[i] = cells(r) end
  print_columns(rows)
  if #result.kept > 0 then
    io.stdout:write(("kept %d unfinished run(s) as old (resume or cancel them, or prune with --unfinished)\n")
      :format(#result.kept))
  end
  if #result.busy > 0 then
    io.stdout:write(("kept %d run(s) another process is working on\n"):format(#result.busy))
  end
  return EXIT.ok
end

return M
