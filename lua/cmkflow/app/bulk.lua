-- Bulk runs: one run of a workflow per row of a CSV or JSON list (`cmkflow run bulk-onboard
-- --param file=customers.csv [--param concurrency=8]`). The list is read here, in the trusted CLI
-- process (workflow code in the sandbox cannot read files), and every row is checked against the
-- inner workflow's parameters before any call. Then each row gets its own run in the store, and the
-- runs execute as async tasks on one scheduler (one HTTP session, one emulator), at most
-- `concurrency` at a time. A bulk definition is a workflow file with a `bulk` field:
--   { name = "bulk-onboard", bulk = { workflow = "onboard" },
--     params = { file = {...}, concurrency = {...} }, steps = { ... } }
local core = require "cmkflow.core"
local async = require "cmkflow.async"
local errors = require "cmkflow.errors"
local engine = require "cmkflow.workflow.engine"
local cmk = require "cmkflow.workflow.cmk"
local pipeline = require "cmkflow.app.pipeline"
local state = require "cmkflow.app.state"
local app_config = require "cmkflow.app.config"

local json, EXIT = core.json, core.exit

local M = {}

-- ---- input ------------------------------------------------------------------------------------

-- Splits CSV text into records of fields (RFC 4180: quoted fields, "" inside quotes, CRLF or LF).
-- Returns an array of {line = first line number, fields = {...}} (blank lines skipped), or nil,
-- message.
function M.parse_csv(text)
  text = text:gsub("^\239\187\191", "") -- UTF-8 byte order mark
  local records, fields, field = {}, {}, {}
  local i, n, line, start_line = 1, #text, 1, 1
  local quoted_field = false
  local function end_field()
    fields[#fields + 1] = table.concat(field)
    field = {}
  end
  local function end_record()
    end_field()
    local blank = #fields == 1 and fields[1] == "" and not quoted_field
    if not blank then records[#records + 1] = { line = start_line, fields = fields } end
    fields = {}
    quoted_field = false
  end
  while i <= n do
    local c = text:sub(i, i)
    if c == '"' and #field == 0 then
      -- a quoted field: up to the closing quote, "" is a quote
      quoted_field = true
      local j = i + 1
      while true do
        local q = text:find('"', j, true)
        if not q then return nil, ("line %d: a quoted field is not closed"):format(start_line) end
        local chunk = text:sub(j, q - 1)
        for _ in chunk:gmatch("\n") do line = line + 1 end
        field[#field + 1] = chunk
        if text:sub(q + 1, q + 1) == '"' then
          field[#field + 1] = '"'
          j = q + 2
        else
          i = q + 1
          break
        end
      end
      local nxt = text:sub(i, i)
      if nxt ~= "," and nxt ~= "\n" and nxt ~= "\r" and nxt ~= "" then
        return nil, ("line %d: text after a closing quote (quote the whole field, and double quotes inside it)")
          :format(line)
      end
    elseif c == "," then
      end_field()
      i = i + 1
    elseif c == "\r" or c == "\n" then
      end_record()
      if c == "\r" and text:sub(i + 1, i + 1) == "\n" then i = i + 1 end
      i = i + 1
      line = line + 1
      start_line = line
    else
      local j = text:find('[,\r\n]', i)
      j = j or (n + 1)
      field[#field + 1] = text:sub(i, j - 1)
      i = j
    end
  end
  if #field > 0 or #fields > 0 then end_record() end
  return records
end

-- Rows (tables of raw parameter values) from a CSV or JSON document. Returns rows, where (a
-- function row index -> "line N" / "entry N"), problems (an array, maybe empty) or nil, problems.
function M.parse_rows(text, path)
  local first = text:match("^%s*(.)")
  if not first then return nil, { ("%s is empty: give a CSV with a header line (customer[,key_size]) or a JSON array")
    :format(path) } end
  if first == "[" or first == "{" then
    local doc, err = json.decode(text)
    if doc == nil then return nil, { ("%s is not valid JSON: %s"):format(path, tostring(err)) } end
    if type(doc) ~= "table" or (next(doc) ~= nil and doc[1] == nil) then
      return nil, { ("%s must hold a JSON array of customers (objects like {\"customer\": \"contoso\"} or strings)")
        :format(path) }
    end
    local rows, problems = {}, {}
    for i, item in ipairs(doc) do
      if type(item) == "string" then
        rows[i] = { customer = item }
      elseif type(item) == "table" and (next(item) == nil or item[1] == nil) then
        local row = {}
        for k, v in pairs(item) do
          if type(v) == "table" or v == json.null then
            problems[#problems + 1] = ("entry %d: field '%s' must be text or a number"):format(i, tostring(k))
          elseif type(v) == "number" and math.type(v) == "float" and v == math.floor(v) then
            row[k] = math.tointeger(v)
          else
            row[k] = v
          end
        end
        rows[i] = row
      else
        problems[#problems + 1] = ("entry %d: must be an object like {\"customer\": \"contoso\"} or a string")
          :format(i)
        rows[i] = {}
      end
    end
    if #problems > 0 then return nil, problems end
    return rows, function(i) return ("entry %d"):format(i) end, {}
  end
  local records, err = M.parse_csv(text)
  if not records then return nil, { path .. ": " .. err } end
  local header = table.remove(records, 1)
  local problems = {}
  local names, seen = {}, {}
  for c, h in ipairs(header.fields) do
    h = h:match("^%s*(.-)%s*$")
    if h == "" then problems[#problems + 1] = ("line %d: column %d has no name in the header"):format(header.line, c) end
    if seen[h] then problems[#problems + 1] = ("line %d: column '%s' is named twice in the header"):format(header.line, h) end
    seen[h] = true
    names[c] = h
  end
  if #problems > 0 then return nil, problems end
  local rows, lines = {}, {}
  for _, rec in ipairs(records) do
    if #rec.fields ~= #names then
      problems[#problems + 1] = ("line %d: %d field(s), but the header names %d column(s) (%s)")
        :format(rec.line, #rec.fields, #names, table.concat(names, ","))
    end
    local row = {}
    for c, v in ipairs(rec.fields) do
      v = v:match("^%s*(.-)%s*$")
      if names[c] and v ~= "" then row[names[c]] = v end
    end
    rows[#rows + 1] = row
    lines[#rows] = rec.line
  end
  -- rows with a wrong field count are still checked, so one pass lists every problem
  return rows, function(i) return ("line %d"):format(lines[i]) end, problems
end

-- Checks every row against the inner definition's parameters. Returns an array of checked params
-- or nil, problems (each naming the row and what to fix).
function M.check_rows(inner, rows, where, key)
  local checked, problems, first_row = {}, {}, {}
  for i, row in ipairs(rows) do
    local params, errs = engine.check_params(inner, row)
    if not params then
      for _, e in ipairs(errs) do problems[#problems + 1] = where(i) .. ": " .. e end
    else
      local id = params[key]
      if id ~= nil and first_row[id] then
        problems[#problems + 1] = ("%s: %s '%s' is listed twice (first at %s)"):format(where(i), key, tostring(id),
          where(first_row[id]))
      elseif id ~= nil then
        first_row[id] = i
      end
      checked[i] = params
    end
  end
  if #rows == 0 then problems[#problems + 1] = "the list has no rows: add one line per customer after the header" end
  if #problems > 0 then return nil, problems end
  return checked
end

-- Entra allows 20 federated identity credentials per application. When the policy gives the rows
-- more distinct federated credentials on one application than that, the runs past the 20th would
-- fail half-way (after their identities and vaults exist): refuse the list up front instead.
M.MAX_FEDERATED_CREDENTIALS = 20
function M.check_limits(inner, checked, policy, where)
  if not (policy.names and policy.names.federated_credential and policy.names.app_unique_name) then
    return true
  end
  local per_app = {}
  for i, p in ipairs(checked) do
    local okn, names = pcall(cmk.names, pipeline.make_ctx(inner, p, policy))
    if okn and names.app_unique_name and names.federated_credential then
      local app = per_app[names.app_unique_name] or { n = 0, seen = {} }
      per_app[names.app_unique_name] = app
      if not app.seen[names.federated_credential] then
        app.seen[names.federated_credential] = true
        app.n = app.n + 1
        if app.n == M.MAX_FEDERATED_CREDENTIALS + 1 then app.first_over = i end
      end
    end
  end
  for name, app in pairs(per_app) do
    if app.n > M.MAX_FEDERATED_CREDENTIALS then
      return nil, { ("the policy gives these customers %d federated credentials on application '%s' (from %s on, "
        .. "past Entra's limit of %d per application): in the policy file, name one shared identity and federated "
        .. "credential for all customers (names.identity, names.federated_credential), or one application per group "
        .. "of at most %d customers (names.app, names.app_unique_name)")
        :format(app.n, name, where(app.first_over), M.MAX_FEDERATED_CREDENTIALS, M.MAX_FEDERATED_CREDENTIALS) }
    end
  end
  return true
end

-- ---- output -----------------------------------------------------------------------------------

local function summary_table(runs, key)
  local out = { ("%-24s %-36s %-10s %s"):format(key, "run id", "status", "storage account") }
  for _, r in ipairs(runs) do
    out[#out + 1] = ("%-24s %-36s %-10s %s"):format(r[key], r.run_id, r.status,
      r.storage_account or (r.error and ("error: " .. errors.text(r.error)))
        or (r.gate and ("waiting at gate " .. r.gate))
        or (r.twin_status and ("its run is " .. r.twin_status .. " (another process, or waiting)")) or "-")
  end
  return table.concat(out, "\n") .. "\n"
end

-- ---- the command ------------------------------------------------------------------------------

-- def: the bulk definition; opts: the run command's options.
function M.run(def, opts)
  local function usage(lines)
    io.stderr:write("cmkflow: ", def.name, ": the input needs fixing (nothing was run):\n")
    for _, l in ipairs(lines) do io.stderr:write("  - ", l, "\n") end
    return EXIT.usage
  end
  local spec = def.bulk
  local key = spec.key or "customer"
  local params, problems = engine.check_params(def, opts.params)
  if not params then return usage(problems) end
  local text = nil
  do
    local f, err = io.open(params.file, "rb")
    if not f then return usage { ("parameter 'file': cannot read '%s': %s"):format(params.file, tostring(err)) } end
    text = f:read("a")
    f:close()
  end
  local kind, what, ref = pipeline.resolve_workflow(spec.workflow)
  if not kind then return usage { what.message } end
  local inner, lerr = pipeline.load(kind, what)
  if not inner then return usage { lerr.message } end
  local rows, where, shape = M.parse_rows(text, params.file)
  if not rows then return usage(where) end
  local checked
  checked, problems = M.check_rows(inner, rows, where, key)
  if #shape > 0 or not checked then
    for _, p in ipairs(problems or {}) do shape[#shape + 1] = p end
    table.sort(shape, function(a, b)
      return (tonumber(a:match("^%a+ (%d+)")) or 0) < (tonumber(b:match("^%a+ (%d+)")) or 0)
    end)
    return usage(shape)
  end

  local target, policy = pipeline.connect(opts)
  if not target then
    io.stderr:write("cmkflow: ", errors.text(policy), "\n")
    return errors.exit_code(policy)
  end
  local fits
  fits, problems = M.check_limits(inner, checked, policy, where)
  if not fits then return usage(problems) end

  if opts.plan then
    local doc = json.array()
    for i, p in ipairs(checked) do
      doc[i] = { [key] = p[key], plan = engine.plan(inner, pipeline.make_ctx(inner, p, policy)) }
    end
    if opts.output == "json" then
      io.stdout:write(json.encode({ workflow = def.name, runs = doc }), "\n")
    else
      for _, d in ipairs(doc) do
        io.stdout:write(("plan for %s %s: %d change(s)\n"):format(inner.name, d[key], #d.plan))
        for _, p in ipairs(d.plan) do
          for _, m in ipairs(p.mutations) do io.stdout:write(("  %-24s %s\n"):format(p.step, m)) end
        end
      end
    end
    return EXIT.ok
  end

  local db = state.open_store()
  target.workflow = ref
  target.bulk = def.name
  -- every run exists before the first starts: an interrupted bulk run leaves resumable runs; a
  -- customer with an unfinished run (another shard's, or waiting for the customer) is skipped
  local runs = {}
  for i, c in ipairs(pipeline.create_runs(db, inner, checked, pipeline.describe_target(target))) do
    runs[i] = { [key] = checked[i][key], run_id = c.run_id or c.twin.id, status = c.twin and "skipped" or "pending",
                twin_status = c.twin and c.twin.status }
  end
  local total, done = #runs, 0
  if opts.progress then
    io.stderr:write(("cmkflow: %s: %d run(s) of %s, %d at a time\n"):format(def.name, total, inner.name, params.concurrency))
  end
  local now = core.monotonic_ms
  local started = now()
  local next_index = 0
  local function worker()
    while true do
      next_index = next_index + 1
      local i = next_index
      if i > total then return end
      local r = runs[i]
      local t0 = now()
      -- held while the run executes: a `cmkflow resume` of it meanwhile stops, naming this process
      local lock <close>, holder = state.lock_run(r.status == "pending" and r.run_id or nil, db)
      local result = { status = "skipped" }
      if lock == false then
        r.twin_status = "running in " .. tostring(holder)
      elseif r.status == "pending" then
        result = engine.execute { def = inner, ctx = pipeline.make_ctx(inner, checked[i], policy), store = db,
                                  run_id = r.run_id }
      end
      r.status, r.error, r.gate = result.status, result.error, result.gate
      local acct = result.outputs and result.outputs.storage_account
      r.storage_account = type(acct) == "table" and acct.name or nil
      done = done + 1
      if opts.progress then
        io.stderr:write(("  [%d/%d] %-9s %s  %s  %.2f s\n"):format(done, total, r.status, r[key], r.run_id,
          (now() - t0) / 1000))
      end
    end
  end
  local aok, aerr = pcall(async.run, function()
    local workers = {}
    for w = 1, math.min(params.concurrency, total) do workers[w] = async.spawn(worker) end
    for _, w in ipairs(workers) do async.await(w) end
  end)
  app_config.finish()
  if not aok then
    io.stderr:write("cmkflow: ", def.name, ": ", errors.text(aerr), "\n")
    return errors.exit_code(errors.from(aerr))
  end
  local succeeded, failed, waiting, skipped = 0, 0, 0, 0
  local list = json.array()
  for i, r in ipairs(runs) do
    if r.status == "succeeded" then succeeded = succeeded + 1
    elseif r.status == "waiting" then waiting = waiting + 1
    elseif r.status == "skipped" then skipped = skipped + 1
    else failed = failed + 1 end
    list[i] = { [key] = r[key], run_id = r.run_id, status = r.status, storage_account = r.storage_account,
                error = r.error and errors.data(r.error), gate = r.gate, unfinished = r.twin_status }
  end
  if opts.output == "json" then
    io.stdout:write(json.encode({ workflow = def.name, runs = list, succeeded = succeeded, failed = failed,
                                  waiting = waiting, skipped = skipped, elapsed_ms = now() - started }), "\n")
  else
    io.stdout:write(summary_table(runs, key))
    io.stdout:write(("%d succeeded, %d failed%s%s\n"):format(succeeded, failed,
      waiting > 0 and (", " .. waiting .. " waiting at an approval gate") or "",
      skipped > 0 and (", " .. skipped .. " skipped (an unfinished run of theirs exists: resume it)") or ""))
  end
  if failed > 0 then return EXIT.failed end
  if waiting > 0 then return EXIT.waiting end
  return EXIT.ok
end

return M
