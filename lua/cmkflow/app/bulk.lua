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
local placement = require "cmkflow.app.placement"
local kit = require "cmkflow.app.kit"
local host = require "cmkflow.host"
local pacer = require "cmkflow.azure.pacer"

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

-- ---- the customers' state ---------------------------------------------------------------------

-- Statuses of a run that is over: nothing resumes it.
local FINISHED = { succeeded = true, cancelled = true }

-- What the store knows of the inner workflow's runs for this ISV tenant, by customer: {open = the
-- unfinished run (resumed, never doubled: docs/handoff.md), done = the latest succeeded run, any =
-- the latest run that is not cancelled (its placement counts)}.
local function runs_by_customer(db, inner, isv_tenant, key)
  local by = {}
  for _, r in ipairs(db:runs { workflow = inner.name, limit = 1000000 } or {}) do
    local c = json.decode(r.config or "{}") or {}
    if c.isv_tenant == isv_tenant and r.status ~= "cancelled" then
      local p = json.decode(r.params or "{}") or {}
      local id = p[key]
      if id ~= nil then
        local e = by[id] or {}
        by[id] = e
        r.values = p
        e.any = e.any or r -- newest first
        if r.status == "succeeded" then
          e.done = e.done or r
        elseif not FINISHED[r.status] and not e.open then
          -- a run that failed before its first step (its credentials were refused) holds nothing up
          local started = r.status ~= "failed" or #(db:steps(r.id) or {}) > 0
          if started then e.open = r end
        end
      end
    end
  end
  return by
end

-- Who must act on a failed customer, for people and machines: "isv", "customer" or "retry".
local function party_of(err, values)
  local t = type(err) == "table" and err.tenant
  if t == "isv" or t == "customer" then return t end
  if t and values.customer_tenant and tostring(t):lower() == tostring(values.customer_tenant):lower() then
    return "customer"
  end
  return "retry"
end

local PARTY_TEXT = { isv = "the ISV must act", customer = "the customer must act",
                     retry = "nobody's fault: run bulk-onboard again" }

-- ---- output -----------------------------------------------------------------------------------

local function detail(r)
  if r.outcome == "done" then return r.storage_account or "-" end
  if r.outcome == "skipped" then return "its run is " .. tostring(r.twin_status) end
  if r.outcome == "waiting" then
    return r.kit and ("waiting for the customer: kit " .. r.kit) or ("waiting at gate " .. tostring(r.gate))
  end
  return ("%s (%s)"):format(r.error and errors.text(r.error) or "failed", PARTY_TEXT[r.party] or r.party)
end

local function summary_table(runs, key)
  local out = { ("%-24s %-36s %-8s %s"):format(key, "run id", "outcome", "storage account, kit or error") }
  for _, r in ipairs(runs) do
    out[#out + 1] = ("%-24s %-36s %-8s %s"):format(r[key], r.run_id or "-", r.outcome, detail(r))
  end
  return table.concat(out, "\n") .. "\n"
end

-- The handoff of a run waiting at its gate, from its stored steps (no call): what the kit is made of.
local function stored_handoff(inner, gate, db, run_id, ctx)
  ctx.run_id, ctx.outputs = run_id, {}
  for _, rec in ipairs(db:steps(run_id) or {}) do
    if rec.status == "succeeded" then ctx.outputs[rec.name] = rec.outputs and json.decode(rec.outputs) or {} end
  end
  local ok, h = pcall(gate.handoff, ctx)
  return ok and h or nil
end

-- ---- the command ------------------------------------------------------------------------------

local function dir_of(path) return path:match("^(.*)/[^/]*$") or "." end

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
  -- the gate's values (the customer's vault URI and key name) are columns too, not parameters
  local gate = spec.gate and inner.by_name[spec.gate]
  local handed = {}
  for i, row in ipairs(rows) do
    local v = {}
    for name in pairs(gate and gate.values or {}) do
      v[name], row[name] = row[name], nil
    end
    handed[i] = next(v) and v or nil
  end
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
  local function refuse(lines)
    app_config.finish()
    return usage(lines)
  end
  -- the handed-back values: both or neither, valid for the run's cloud
  problems = {}
  for i, v in pairs(handed) do
    local names, missing = {}, {}
    for name in pairs(gate.values) do
      names[#names + 1] = name
      if v[name] == nil then missing[#missing + 1] = name end
    end
    table.sort(names)
    table.sort(missing)
    if #missing > 0 then
      problems[#problems + 1] = ("%s: give %s too (the customer hands back %s together), or leave them all empty")
        :format(where(i), table.concat(missing, " and "), table.concat(names, " and "))
    else
      local _, bad = pipeline.check_gate_values(gate, v, { cloud = target.cloud, contexts = { customer = true } })
      for _, b in ipairs(bad or {}) do problems[#problems + 1] = where(i) .. ": " .. b end
    end
  end
  local perr = placement.check(policy)
  if perr then problems[#problems + 1] = perr end
  if #problems > 0 then return refuse(problems) end
  local fits
  fits, problems = M.check_limits(inner, checked, policy, where)
  if not fits then return refuse(problems) end

  if opts.plan then
    local doc = json.array()
    for i, p in ipairs(checked) do
      doc[i] = { [key] = p[key], plan = engine.plan(inner, pipeline.make_ctx(inner, p, policy)) }
    end
    app_config.finish()
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

  -- ARM's refill rates when a policy names other ones than Azure's (an emulator with scaled limits)
  pacer.configure(policy.arm_rates)
  local db = state.open_store()
  local isv = host.contexts.isv or {}
  local isv_tenant = isv.tenant or (isv.credential and isv.credential:describe().tenant) or nil
  local known = runs_by_customer(db, inner, isv_tenant, key)

  -- placement: every customer's storage account in a slot with room, before any call
  local slots, cap, n_subs, n_locs = placement.slots(policy, isv.subscription)
  local placed = type(policy.placement) == "table"
  local function slot_of(values)
    return { subscription = values.subscription or isv.subscription, location = values.location or policy.location }
  end
  local taken, wanted = {}, {}
  for _, e in pairs(known) do
    local k = placement.slot_key(slot_of(e.any.values).subscription, slot_of(e.any.values).location)
    taken[k] = (taken[k] or 0) + 1
  end
  for i, p in ipairs(checked) do
    local e = known[p[key]]
    if e then
      wanted[i] = { fixed = slot_of(e.any.values) }
    elseif p.subscription or p.location or not placed then
      -- the list's own columns, or no placement in the policy: where onboard puts it anyway
      wanted[i] = { fixed = slot_of(p) }
      local k = placement.slot_key(wanted[i].fixed.subscription, wanted[i].fixed.location)
      taken[k] = (taken[k] or 0) + 1
    else
      wanted[i] = {}
    end
  end
  local assigned, perr2 = placement.assign(slots, cap, taken, wanted, n_subs, n_locs)
  if not assigned and placed then return refuse { perr2 } end
  if not placed then
    -- no placement in the policy: the one slot must still hold what the store and the list put there
    local k = placement.slot_key(isv.subscription, policy.location)
    if (taken[k] or 0) > cap then
      return refuse { ("%d storage accounts do not fit in subscription %s, region %s: Azure allows %d per region "
        .. "per subscription; list subscriptions and regions in the policy's placement (docs/customizing.md)")
        :format(taken[k], tostring(isv.subscription), tostring(policy.location), cap) }
    end
  end

  target.workflow = ref
  target.bulk = def.name
  target.isv_tenant = isv_tenant
  local kits = params.kits or (dir_of(params.file) .. "/kits")
  local runs = {}
  -- every run exists before the first starts (an interrupted bulk run leaves resumable runs), created
  -- in one store transaction that looks again for unfinished runs: another process (a second shard on
  -- a shared store, docs/scaling.md) may have started one of these customers since `known` was read
  db:transaction(function()
    local twins = pipeline.unfinished_runs(db, inner, target)
    for i, p in ipairs(checked) do
      local e = known[p[key]] or {}
      local r = { [key] = p[key], customer_tenant = p.customer_tenant, values = handed[i] }
      runs[i] = r
      local twin = not e.open and twins[p[key]]
      if twin then e.open = twin twin.values = json.decode(twin.params or "{}") or {} end
      if e.open then
        r.run_id, r.reused, p = e.open.id, true, e.open.values
      elseif e.done and not params.again then
        r.run_id, r.unchanged = e.done.id, true
        p = e.done.values
        local out = json.decode(db:run(e.done.id).outputs or "{}") or {}
        r.storage_account = type(out.storage_account) == "table" and out.storage_account.name or nil
        r.status = "succeeded"
      else
        if placed and not p.subscription and not p.location then
          p.subscription, p.location = assigned[i].subscription, assigned[i].location
        end
        pipeline.describe_target(target, p)
        r.run_id = assert(db:create_run { workflow = inner.name, params = json.encode(p), config = json.encode(target) })
      end
      r.params = p
      r.subscription, r.location = p.subscription, p.location
    end
  end)

  local total, finished = #runs, 0
  if opts.progress then
    io.stderr:write(("cmkflow: %s: %d customer(s), %s, %d at a time\n"):format(def.name, total, inner.name,
      params.concurrency))
  end
  local now = core.monotonic_ms
  local started = now()
  local next_index = 0
  -- Another process holding a run (a second shard, a `cmkflow resume`), or having finished it since
  -- this one read the store: the row says so and this process leaves the run alone.
  local function held_elsewhere(r, why)
    r.status, r.twin_status = "skipped", why
  end
  local function one(r)
    if r.unchanged then return end
    -- held while the run executes: a `cmkflow resume` of it meanwhile stops, naming this process
    local lock, holder = state.lock_run(r.run_id, db)
    if lock == false then return held_elsewhere(r, "running in " .. tostring(holder)) end
    if not lock then
      r.status, r.error = "failed", pipeline.usage_error(("run %s: %s"):format(r.run_id, tostring(holder)))
      return
    end
    local now_status = db:run(r.run_id).status
    if FINISHED[now_status] then
      lock:release()
      return held_elsewhere(r, now_status .. " by another process")
    end
    local ctx = pipeline.make_ctx(inner, r.params, policy)
    ctx.config_path = target.config
    local has_customer = ctx.has_context("customer")
    if r.reused and r.values then
      -- the customer handed the values back: approve the waiting gate with them
      local decided, derr = pipeline.decide(r.run_id, spec.gate, { values = r.values, by = def.name })
      if not decided then
        r.status, r.error = "failed", derr
        lock:release()
        return
      end
    elseif r.reused and not has_customer and gate and db:run(r.run_id).status == "waiting" then
      -- still nothing handed back, nobody can act for the customer: only the kit again (no call)
      r.status, r.gate = "waiting", spec.gate
      r.handoff = stored_handoff(inner, gate, db, r.run_id, ctx)
      r.ctx = ctx
      lock:release()
      return
    end
    local result = engine.execute { def = inner, ctx = ctx, store = db, run_id = r.run_id }
    lock:release()
    r.status, r.error, r.gate, r.handoff = result.status, result.error, result.gate, result.handoff
    -- the ctx (every step's outputs) is kept only for the kit of a run waiting for its customer
    -- (below): kept for every row, a bulk run would hold every finished customer's outputs to the end
    r.ctx = result.status == "waiting" and ctx or nil
    local acct = result.outputs and result.outputs.storage_account
    r.storage_account = type(acct) == "table" and acct.name or nil
  end
  local function worker(once)
    while true do
      next_index = next_index + 1
      local i = next_index
      if i > total then return end
      local r = runs[i]
      local t0 = now()
      one(r)
      finished = finished + 1
      if opts.progress and not r.unchanged then
        io.stderr:write(("  [%d/%d] %-9s %s  %s  %.2f s\n"):format(finished, total, r.status, r[key], r.run_id,
          (now() - t0) / 1000))
      end
      if once then return end
    end
  end
  local aok, aerr = pcall(async.run, function()
    -- the first customer alone: it creates what all customers share (the ISV's resource group,
    -- application, identity and federated credential), which the others then find, rather than
    -- every worker racing to write the same objects
    local first = async.spawn(worker, true)
    async.await(first)
    local workers = {}
    for w = 1, math.min(params.concurrency, total) do workers[w] = async.spawn(worker) end
    for _, w in ipairs(workers) do async.await(w) end
  end)
  app_config.finish()
  if not aok then
    io.stderr:write("cmkflow: ", def.name, ": ", errors.text(aerr), "\n")
    return errors.exit_code(errors.from(aerr))
  end
  local counts = { done = 0, waiting = 0, failed = 0, skipped = 0 }
  local list = json.array()
  for i, r in ipairs(runs) do
    if r.status == "succeeded" then
      r.outcome = "done"
    elseif r.status == "skipped" then
      r.outcome = "skipped"
    elseif r.status == "waiting" then
      r.outcome = "waiting"
      if r.handoff and r.ctx then
        local dir = kits .. "/" .. r[key]
        local written, werr = kit.write(dir, r.handoff, r.ctx)
        if written then r.kit = dir else r.kit_error = werr end
      end
    else
      r.outcome = "failed"
      r.party = party_of(r.error, r.params or {})
    end
    counts[r.outcome] = counts[r.outcome] + 1
    list[i] = { [key] = r[key], customer_tenant = r.customer_tenant, run_id = r.run_id, status = r.status,
                outcome = r.outcome, storage_account = r.storage_account, subscription = r.subscription,
                location = r.location, kit = r.kit, kit_error = r.kit_error, party = r.party,
                error = r.error and errors.data(r.error), gate = r.gate, reused = r.reused, unchanged = r.unchanged,
                unfinished = r.twin_status }
  end
  local throttling = json.object()
  for k, st in pairs(pacer.shared():stats()) do
    if st.remaining or st.throttled > 0 then throttling[k:gsub("^[^|]*|", "")] = st end
  end
  local elapsed = now() - started
  if opts.output == "json" then
    io.stdout:write(json.encode({ workflow = def.name, runs = list, done = counts.done, succeeded = counts.done,
                                  failed = counts.failed, waiting = counts.waiting, skipped = counts.skipped, elapsed_ms = elapsed,
                                  kits = counts.waiting > 0 and kits or nil, throttling = throttling }), "\n")
  else
    io.stdout:write(summary_table(runs, key))
    io.stdout:write(("%d done, %d failed%s%s\n"):format(counts.done, counts.failed,
      counts.waiting > 0 and (", " .. counts.waiting .. " waiting for the customer (kits in " .. kits .. ")") or "",
      counts.skipped > 0 and (", " .. counts.skipped .. " skipped (another process has their run)") or ""))
  end
  if counts.failed > 0 then return EXIT.failed end
  if counts.waiting > 0 then return EXIT.waiting end
  return EXIT.ok
end

return M
