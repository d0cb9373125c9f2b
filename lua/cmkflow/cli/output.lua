-- What the CLI prints: progress on stderr, results on stdout in three forms (--output): text for
-- people (a short summary: what was created, updated or left unchanged, where, and what to do
-- next), table (one row per resource, as az's table output), json (one line, the contract of
-- docs/exit-codes.md). Failures print as "code: message [party must fix this]" with the hint on
-- the next line.
local core = require "cmkflow.core"
local errors = require "cmkflow.errors"

local json = core.json

local M = {}

M.FORMATS = { text = true, json = true, table = true }

-- ---- colour --------------------------------------------------------------------------------------

-- Colour on stdout only when it is a terminal and NO_COLOR is unset or empty (https://no-color.org).
function M.colour_enabled()
  local no_color = os.getenv("NO_COLOR")
  return core.isatty(1) and (no_color == nil or no_color == "")
end

local SGR = { green = "32", yellow = "33", red = "31", bold = "1", dim = "2" }
local function painter(on)
  return function(colour, s)
    if not on or not SGR[colour] then return s end
    return "\27[" .. SGR[colour] .. "m" .. s .. "\27[0m"
  end
end

-- ---- errors --------------------------------------------------------------------------------------

-- A failure no tenant can fix, for people: what kind of problem it is (the error's kind decides).
local LOCAL_PROBLEM = {
  network = "a local network problem: no tenant must act",
  timeout = "a local network problem (timeout): no tenant must act",
  tls = "a local TLS problem: no tenant must act",
  config = "a configuration problem: no tenant must act",
}

-- A failure for people: the step (when a step failed), the code once, the party that must act
-- (only when one must; else what kind of problem it is, for the kinds no tenant fixes), the hint.
function M.error_text(err)
  err = errors.from(err)
  local s = (err.step and ("step '" .. err.step .. "' failed: ") or "") .. errors.text(err)
  if not errors.party(err) and LOCAL_PROBLEM[err.kind] then s = s .. " [" .. LOCAL_PROBLEM[err.kind] .. "]" end
  if err.hint then s = s .. "\n  hint: " .. err.hint end
  return s
end

-- A command's failure before or outside a run: "cmkflow: ..." on stderr; returns its exit code.
function M.fail(err)
  io.stderr:write("cmkflow: ", M.error_text(err), "\n")
  return errors.exit_code(errors.from(err))
end

-- ---- progress ------------------------------------------------------------------------------------

-- A progress printer for the engine's events (on when stderr is a terminal or --progress).
-- total: the number of steps, or nil when not known yet (resume learns it from the run).
function M.progress_printer(enabled, total)
  if not enabled then return function() end end
  local done = 0
  total = total or "?"
  return function(e)
    if e.kind == "done" or e.kind == "skip" or e.kind == "fail" then done = done + 1 end
    local label = e.title and e.title ~= e.step and (e.step .. " (" .. e.title .. ")") or e.step
    if e.kind == "start" then
      io.stderr:write(("  ... %s\n"):format(label))
    elseif e.kind == "done" then
      io.stderr:write(("  [%d/%s] done  %s  %.2f s\n"):format(done, total, label, (e.elapsed_ms or 0) / 1000))
    elseif e.kind == "skip" then
      io.stderr:write(("  [%d/%s] done  %s  (earlier attempt)\n"):format(done, total, label))
    elseif e.kind == "fail" then
      io.stderr:write(("  [%d/%s] FAILED %s  %.2f s\n"):format(done, total, label, (e.elapsed_ms or 0) / 1000))
    elseif e.kind == "wait" then
      io.stderr:write(("  waiting at approval gate '%s'\n"):format(e.step))
    end
  end
end

-- ---- change records (cmkflow.workflow.engine: created / updated / unchanged, or in a plan
-- ---- create / update / unchanged / run / gate) ----------------------------------------------------

local SYMBOL = { created = "+", create = "+", updated = "~", update = "~", unchanged = "=", run = "~", gate = "?" }
local COLOUR = { created = "green", create = "green", updated = "yellow", update = "yellow", run = "yellow",
                 unchanged = "dim", gate = "bold" }
local PARTY = { isv = "ISV tenant", customer = "customer tenant" }

-- The heading a record goes under: its tenant and subscription (a directory object has none).
local function heading(c)
  if c.action == "run" or c.action == "gate" then return "approval gates and steps without a read of their own" end
  local who = PARTY[c.party] or "tenant"
  local s = who .. " " .. tostring(c.tenant or "(not configured)")
  return s .. (c.subscription and (", subscription " .. c.subscription) or " (directory)")
end

local function shown(v)
  if v == nil then return "(none)" end
  if type(v) == "string" then return ("%q"):format(v) end
  return tostring(v)
end

-- Records as lines for people, grouped under tenant and subscription in the order they came.
local function changes_lines(changes, paint)
  local groups, order = {}, {}
  for _, c in ipairs(changes or {}) do
    local h = heading(c)
    if not groups[h] then groups[h] = {} order[#order + 1] = h end
    table.insert(groups[h], c)
  end
  local out = {}
  for _, h in ipairs(order) do
    out[#out + 1] = h
    for _, c in ipairs(groups[h]) do
      local where = c.resource_group and c.resource_group ~= c.name and c.type ~= "resource group"
        and ("  (resource group " .. c.resource_group .. ")") or ""
      local label = c.action == "run" and (c.name .. ": " .. tostring(c.note))
        or c.action == "gate" and ("waits at approval gate '" .. c.name .. "'")
        or (("%-24s %s%s"):format(c.type or "?", tostring(c.name), where))
      -- a value a plan cannot know before an earlier resource exists (engine placeholders "<step.field>")
      label = label:gsub("<[%w_]+%.[%w_]+>", "(known after apply)")
      out[#out + 1] = "  " .. paint(COLOUR[c.action], ("%s %-9s %s"):format(SYMBOL[c.action] or "?", c.action, label))
      for _, f in ipairs(c.changes or {}) do
        out[#out + 1] = paint(COLOUR[c.action], ("        %s: %s -> %s"):format(f.field, shown(f.from), shown(f.to)))
      end
      if c.note and c.action ~= "run" then out[#out + 1] = "        (" .. c.note .. ")" end
    end
  end
  return out
end

-- Rows (arrays of strings) as an az-style table: a header, a rule, aligned columns.
local function write_table(header, rows)
  local width = {}
  for i, h in ipairs(header) do width[i] = #h end
  for _, r in ipairs(rows) do for i, v in ipairs(r) do width[i] = math.max(width[i], #v) end end
  local function line(r)
    local cells = {}
    for i, v in ipairs(r) do cells[i] = i < #r and (v .. (" "):rep(width[i] - #v)) or v end
    return table.concat(cells, "  ") .. "\n"
  end
  io.stdout:write(line(header))
  local rule = {}
  for i in ipairs(header) do rule[i] = ("-"):rep(width[i]) end
  io.stdout:write(line(rule))
  for _, r in ipairs(rows) do io.stdout:write(line(r)) end
end

local function changes_table(changes)
  local rows = {}
  for _, c in ipairs(changes or {}) do
    local fields = {}
    for _, f in ipairs(c.changes or {}) do fields[#fields + 1] = f.field end
    rows[#rows + 1] = { c.action, PARTY[c.party] and (c.party .. " " .. tostring(c.tenant or "")) or "",
      c.subscription or "", c.resource_group or "", c.type or "", tostring(c.name or ""), table.concat(fields, ",") }
  end
  write_table({ "Action", "Tenant", "Subscription", "ResourceGroup", "Type", "Name", "Changes" }, rows)
end

-- ---- a run's result ------------------------------------------------------------------------------

local function list_text(items)
  local out = {}
  for _, item in ipairs(items or {}) do out[#out + 1] = "    - " .. item end
  return table.concat(out, "\n")
end

-- What a run waiting at a gate hands over (onboard's handoff: cmk.handoff_details), for people.
local function handoff_text(h)
  local lines = {
    "handoff for the customer's administrator (their tenant, their credentials):",
    "  ISV tenant:    " .. tostring(h.isvTenant),
    "  ISV app id:    " .. tostring(h.appId),
    "  consent link:  " .. tostring(h.consentUrl),
  }
  if h.consentUrlNote then lines[#lines + 1] = "                 (" .. h.consentUrlNote .. ")" end
  lines[#lines + 1] = "  the customer creates:\n" .. list_text(h.customerMustCreate)
  lines[#lines + 1] = "  roles the customer's administrator needs for that:\n" .. list_text(h.customerOperatorRoles)
  lines[#lines + 1] = "  the customer runs (cmkflow users"
    .. (h.runId and ("; or use the kit: cmkflow handoff " .. tostring(h.runId) .. " --out DIR") or "") .. "):\n    "
    .. tostring(h.customerCommand)
  if h.isvCommand then
    lines[#lines + 1] = (h.runId and "then the ISV continues this run" or "then the ISV runs")
      .. " with the two values the customer hands back:\n    " .. tostring(h.isvCommand)
  end
  return table.concat(lines, "\n") .. "\n"
end

-- The facts an operator needs after a run: the key the storage account uses and what to run next.
local function next_facts(result)
  local facts = {}
  local outputs = type(result.outputs) == "table" and result.outputs or {}
  local account = type(outputs.storage_account) == "table" and outputs.storage_account or nil
  local enc = account and account.properties and account.properties.encryption
  local kvp = type(enc) == "table" and enc.keyvaultproperties
  if type(kvp) == "table" and kvp.keyvaulturi then
    local key = tostring(kvp.keyvaulturi):gsub("/+$", "") .. "/keys/" .. tostring(kvp.keyname)
    local version = kvp.keyversion ~= nil and kvp.keyversion ~= "" and kvp.keyversion
    facts[#facts + 1] = { "key in use", key .. (version and ("/" .. version .. " (pinned to this version)")
      or " (versionless: Azure Storage follows new versions)") }
    if kvp.currentVersionedKeyIdentifier then facts[#facts + 1] = { "current version", kvp.currentVersionedKeyIdentifier } end
  end
  for _, n in ipairs(result.next or {}) do facts[#facts + 1] = { n[1], n[2] } end
  return facts
end

local function facts_lines(facts)
  local width = 0
  for _, f in ipairs(facts) do width = math.max(width, #f[1]) end
  local out = {}
  for _, f in ipairs(facts) do out[#out + 1] = ("%-" .. (width + 1) .. "s %s"):format(f[1] .. ":", f[2]) end
  return out
end

-- verify's links, one a line in the order Storage walks the chain: status, link, whose side, and
-- for an unverified one who checks it (outputs.links: steps/verify.lua). The error above them names
-- the broken link's problem and fix.
local function links_lines(outputs, paint)
  local out, who = {}, {}
  for _, u in ipairs(type(outputs.unverified) == "table" and outputs.unverified or {}) do who[u.link] = u.who end
  for _, l in ipairs(outputs.links) do
    local colour = l.status == "ok" and "green" or l.status == "broken" and "red" or "yellow"
    local line = ("  %s %-22s (%s side)"):format(paint(colour, ("%-10s"):format(l.status)), l.link,
      l.side == "isv" and "ISV" or tostring(l.side))
    if l.status == "unverified" and who[l.link] then
      line = line .. ": the " .. (who[l.link] == "isv" and "ISV" or who[l.link]) .. " checks it"
    end
    out[#out + 1] = line
  end
  return out
end

-- The JSON document of a run's result (docs/exit-codes.md).
function M.result_doc(result)
  return { run_id = result.run_id, workflow = result.workflow, status = result.status,
           outputs = result.outputs or json.object(), error = result.error and errors.data(result.error) or nil,
           gate = result.gate, handoff = result.handoff, changes = result.changes or json.array() }
end

-- A run's result: {run_id, workflow, status, outputs, error (error table), gate, handoff, changes,
-- next = {{label, command}}} in the form `output` names (text when nil).
function M.result(result, output)
  if output == "json" then
    io.stdout:write(json.encode(M.result_doc(result)), "\n")
    return
  end
  local err = result.error
  if output == "table" then
    if result.changes and #result.changes > 0 then
      changes_table(result.changes)
    else
      write_table({ "RunId", "Workflow", "Status" }, { { result.run_id, tostring(result.workflow or ""), result.status } })
    end
    if err then io.stdout:write("error: ", M.error_text(err), "\n") end
    return
  end
  local paint = painter(M.colour_enabled())
  local counts = {}
  for _, c in ipairs(result.changes or {}) do counts[c.action] = (counts[c.action] or 0) + 1 end
  local tally = {}
  for _, a in ipairs { "created", "updated", "unchanged" } do
    if counts[a] then tally[#tally + 1] = counts[a] .. " " .. a end
  end
  io.stdout:write(("run %s%s: %s%s\n"):format(result.run_id, result.workflow and (" (" .. result.workflow .. ")") or "",
    paint(result.status == "succeeded" and "green" or result.status == "failed" and "red" or "bold", result.status),
    #tally > 0 and (" (" .. table.concat(tally, ", ") .. ")") or ""))
  local lines = changes_lines(result.changes, paint)
  if #lines > 0 then io.stdout:write(table.concat(lines, "\n"), "\n") end
  if result.gate and result.handoff then
    io.stdout:write(("waiting at gate '%s'\n"):format(result.gate), handoff_text(result.handoff))
  elseif result.gate then
    io.stdout:write(("waiting at gate '%s': decide it, then continue\n  cmkflow approve %s %s && cmkflow resume %s\n")
      :format(result.gate, result.run_id, result.gate, result.run_id))
  end
  if err then io.stdout:write("error: ", M.error_text(err), "\n") end
  local outputs = type(result.outputs) == "table" and result.outputs or nil
  if result.status == "succeeded" and outputs then
    -- a run that hands over to the customer (isv-setup: the ISV has more to run): its handoff;
    -- a finished onboard's handoff no longer applies and is left out
    local h = outputs.handoff
    if type(h) == "table" and h.isvCommand then io.stdout:write(handoff_text(h)) end
    local facts = facts_lines(next_facts(result))
    if #facts > 0 then io.stdout:write(table.concat(facts, "\n"), "\n") end
    if type(outputs.links) == "table" then
      io.stdout:write(table.concat(links_lines(outputs, paint), "\n"), "\n")
    elseif #lines == 0 and type(h) ~= "table" then
      -- a workflow that records no resource (rotate-key, smoke): its outputs are its answer, one
      -- "name: value" a line when they are all plain values, else indented JSON
      local names, facts, plain = {}, {}, true
      for k, v in pairs(outputs) do
        names[#names + 1] = tostring(k)
        plain = plain and type(v) ~= "table"
      end
      table.sort(names)
      for _, k in ipairs(names) do facts[#facts + 1] = { k, tostring(outputs[k]) } end
      if not plain then
        io.stdout:write(json.encode(outputs, { pretty = true }), "\n")
      elseif #facts > 0 then
        io.stdout:write(table.concat(facts_lines(facts), "\n"), "\n")
      end
    end
  elseif outputs and type(outputs.links) == "table" then
    io.stdout:write(table.concat(links_lines(outputs, paint), "\n"), "\n") -- verify: which link, whose
  elseif outputs and result.status == "failed" then
    io.stdout:write(json.encode(outputs, { pretty = true }), "\n")
  end
  -- a party's run that ends with what the other party runs next (customer-authorize): last, plainly
  local next_commands = outputs and outputs.isvCommands
  if result.status == "succeeded" and type(next_commands) == "table" then
    io.stdout:write(table.concat(facts_lines { { "key_vault_uri", tostring(outputs.key_vault_uri) },
      { "key_name", tostring(outputs.key_name) } }, "\n"), "\n")
    io.stdout:write("hand the values above back to the ISV, who runs:\n")
    for _, c in ipairs(next_commands) do io.stdout:write("  ", c, "\n") end
  end
end

-- ---- a plan ---------------------------------------------------------------------------------------

-- How many records of a plan change something (create, update, a step without a read of its own).
function M.plan_changes(plan)
  local n = 0
  if not plan.changes then -- not read (--refresh=false): every step that would run
    for _, p in ipairs(plan.steps) do if not p.mutations[1]:match("^approval gate") then n = n + 1 end end
    return n
  end
  for _, c in ipairs(plan.changes or {}) do
    if c.action == "create" or c.action == "update" or c.action == "run" then n = n + 1 end
  end
  return n
end

-- A plan ({steps, changes}: cmkflow.app.pipeline.plan) of workflow `name`.
function M.plan(name, plan, output)
  if output == "json" then
    io.stdout:write(json.encode({ workflow = name, plan = plan.steps, changes = plan.changes }), "\n")
    return
  end
  if not plan.changes then -- not read (--refresh=false): what each step would do, as its plan says
    if output == "table" then
      local rows = {}
      for _, p in ipairs(plan.steps) do for _, m in ipairs(p.mutations) do rows[#rows + 1] = { p.step, m } end end
      write_table({ "Step", "Would" }, rows)
      return
    end
    io.stdout:write(("plan for %s (not read: --refresh=false): %d step(s)\n"):format(name, #plan.steps))
    for _, p in ipairs(plan.steps) do
      for _, m in ipairs(p.mutations) do io.stdout:write(("  %-24s %s\n"):format(p.step, m)) end
    end
    return
  end
  if output == "table" then
    changes_table(plan.changes)
    return
  end
  local paint = painter(M.colour_enabled())
  local counts = {}
  for _, c in ipairs(plan.changes) do counts[c.action] = (counts[c.action] or 0) + 1 end
  io.stdout:write(("plan for %s (read from Azure now; %s create, %s update, %s unchanged):\n"):format(name,
    paint("green", "+"), paint("yellow", "~"), "="))
  local lines = changes_lines(plan.changes, paint)
  if #lines > 0 then io.stdout:write(table.concat(lines, "\n"), "\n") end
  if M.plan_changes(plan) == 0 then
    io.stdout:write("no changes: everything is as this workflow would make it\n")
  else
    io.stdout:write(("plan: %d to create, %d to update, %d unchanged%s\n"):format(counts.create or 0,
      counts.update or 0, counts.unchanged or 0, counts.run and (", " .. counts.run .. " other step(s) to run") or ""))
  end
end

-- ---- approve ------------------------------------------------------------------------------------

-- A gate's decision ({run_id, gate, decision, values, redecided}: cmkflow.app.pipeline.decide).
function M.decision(decided, output)
  if output == "json" then
    local doc = {}
    for k, v in pairs(decided) do doc[k] = v end
    if next(doc.values or {}) == nil then doc.values = json.object() end
    io.stdout:write(json.encode(doc), "\n")
  elseif output == "table" then
    write_table({ "RunId", "Gate", "Decision" }, { { decided.run_id, decided.gate, decided.decision } })
  else
    io.stderr:write(("cmkflow: gate '%s' of run %s %s%s; continue with: cmkflow resume %s\n")
      :format(decided.gate, decided.run_id, decided.redecided and "decided again: " or "", decided.decision,
        decided.run_id))
  end
end

-- ---- runs show -------------------------------------------------------------------------------------

-- A stored run (cmkflow.app.runs.show) in the form `output` names.
function M.run_doc(doc, output)
  if output == "json" then
    io.stdout:write(json.encode(doc), "\n")
    return
  end
  if output == "table" then
    local rows = {}
    for _, s in ipairs(doc.steps or {}) do
      rows[#rows + 1] = { s.name, s.status, tostring(s.attempts or ""), s.error and tostring(s.error.code) or "" }
    end
    write_table({ "Step", "Status", "Attempts", "Error" }, rows)
    return
  end
  local paint = painter(M.colour_enabled())
  local params = {}
  for k, v in pairs(doc.params or {}) do params[#params + 1] = k .. "=" .. tostring(v) end
  table.sort(params)
  io.stdout:write(("run %s (%s): %s\n"):format(doc.run_id, tostring(doc.workflow), doc.status))
  if #params > 0 then io.stdout:write("params: ", table.concat(params, " "), "\n") end
  io.stdout:write("steps:\n")
  local changes = json.array()
  for _, s in ipairs(doc.steps or {}) do
    io.stdout:write(("  %-10s %s%s\n"):format(s.status, s.name,
      (s.attempts or 1) > 1 and (" (" .. s.attempts .. " attempts)") or ""))
    if s.error then io.stdout:write("             ", (M.error_text(s.error):gsub("\n", "\n             ")), "\n") end
    for _, c in ipairs(s.changes or {}) do changes[#changes + 1] = c end
  end
  for _, a in ipairs(doc.approvals or {}) do io.stdout:write(("gate %s: %s\n"):format(a.gate, a.status)) end
  if #changes > 0 then
    io.stdout:write("resources:\n", table.concat(changes_lines(changes, paint), "\n"), "\n")
  end
  if doc.error then io.stdout:write("error: ", M.error_text(doc.error), "\n") end
end

return M
