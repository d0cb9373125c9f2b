-- cmkflow workflows [list] | workflows show NAME: the stock workflows (embedded in the binary) and
-- the local ones: *.lua files in the current directory and in $CMKFLOW_WORKFLOWS_DIR whose chunk
-- returns a workflow definition (loaded in the sandbox, as a run loads them; other Lua files, a
-- config or a policy file, are left out). docs/workflows.md.
local core = require "cmkflow.core"
local output = require "cmkflow.cli.output"
local pipeline = require "cmkflow.app.pipeline"

local json, EXIT = core.json, core.exit

local M = {}

-- {name, description, source = "stock" | "local", file (local), def}, stock first, then by name.
local function stock()
  local out = {}
  local modules = core.embedded_modules("workflows.")
  table.sort(modules)
  for _, mod in ipairs(modules) do
    local def = pipeline.load("module", mod)
    if def then out[#out + 1] = { name = def.name, description = def.description, source = "stock", def = def } end
  end
  return out
end

local function local_dirs()
  local dirs = { "." }
  local extra = os.getenv("CMKFLOW_WORKFLOWS_DIR")
  if extra and extra ~= "" and extra ~= "." then dirs[#dirs + 1] = extra end
  return dirs
end

local function local_workflows()
  local out = {}
  for _, dir in ipairs(local_dirs()) do
    local names = core.fs.list(dir) or {}
    table.sort(names)
    for _, n in ipairs(names) do
      if n:match("%.lua$") then
        local path = dir == "." and ("./" .. n) or (dir:gsub("/$", "") .. "/" .. n)
        local ok, def = pcall(pipeline.load, "file", path)
        if ok and def then
          out[#out + 1] = { name = def.name, description = def.description, source = "local", file = path, def = def }
        end
      end
    end
  end
  return out
end

local function all()
  local out = stock()
  for _, w in ipairs(local_workflows()) do out[#out + 1] = w end
  return out
end

-- Is the definition destructive: true, false, or (a function of the parameters) "with NAME=true"
-- for the boolean parameters that make it so, else "depends on parameters".
local function destructive(def)
  local d = def.destructive
  if type(d) ~= "function" then return d and true or false end
  local defaults, names = {}, {}
  for name, spec in pairs(def.params or {}) do defaults[name] = spec.default end
  for name, spec in pairs(def.params or {}) do
    if spec.type == "boolean" then
      local probe = setmetatable({ [name] = true }, { __index = defaults })
      local ok, r = pcall(d, probe)
      if ok and r then names[#names + 1] = name .. "=true" end
    end
  end
  table.sort(names)
  return #names > 0 and ("with " .. table.concat(names, " or ")) or "depends on parameters"
end

local function columns(rows)
  local width = {}
  for _, r in ipairs(rows) do for i, c in ipairs(r) do width[i] = math.max(width[i] or 0, #c) end end
  for _, r in ipairs(rows) do
    local cells = {}
    for i, c in ipairs(r) do cells[i] = i == #r and c or (c .. (" "):rep(width[i] - #c)) end
    io.stdout:write("  ", table.concat(cells, "  "), "\n")
  end
end

function M.list(opts)
  local found = all()
  if opts.output == "json" then
    local out = json.array()
    for i, w in ipairs(found) do
      out[i] = { name = w.name, description = w.description, source = w.source, file = w.file,
                 destructive = destructive(w.def) }
    end
    io.stdout:write(json.encode(out), "\n")
    return EXIT.ok
  end
  if opts.output == "table" then
    local rows = { { "NAME", "SOURCE", "DESCRIPTION" }, { "----", "------", "-----------" } }
    for _, w in ipairs(found) do rows[#rows + 1] = { w.name, w.file or w.source, w.description or "" } end
    columns(rows)
    return EXIT.ok
  end
  for _, source in ipairs { "stock", "local" } do
    local rows = {}
    for _, w in ipairs(found) do
      if w.source == source then rows[#rows + 1] = { w.file or w.name, w.description or "" } end
    end
    if source == "stock" or #rows > 0 then
      io.stdout:write(source == "stock" and "stock workflows (cmkflow run NAME):\n"
        or "local workflows (cmkflow run FILE):\n")
      columns(rows)
    end
  end
  io.stdout:write("parameters and steps of one: cmkflow workflows show NAME\n")
  return EXIT.ok
end

-- A workflow by name (stock, then local by definition name) or by file.
local function find(name)
  for _, w in ipairs(stock()) do if w.name == name then return w end end
  for _, w in ipairs(local_workflows()) do if w.name == name or w.file == name then return w end end
  local kind, what, ref = pipeline.resolve_workflow(name)
  if not kind then return nil, what end
  local def, err = pipeline.load(kind, what)
  if not def then return nil, err end
  return { name = def.name, description = def.description, source = kind == "file" and "local" or "stock",
           file = kind == "file" and ref or nil, def = def }
end

local function param_rows(def)
  local names = {}
  for n in pairs(def.params or {}) do names[#names + 1] = n end
  table.sort(names)
  local out = json.array()
  for _, n in ipairs(names) do
    local p = def.params[n]
    local enum
    if p.enum then
      enum = json.array()
      for i, e in ipairs(p.enum) do enum[i] = e end
    end
    out[#out + 1] = { name = n, type = p.type or "string", required = p.required == true, default = p.default,
                      enum = enum, description = p.description }
  end
  return out
end

local function step_rows(def)
  local out = json.array()
  for _, s in ipairs(def.steps) do
    local needs = json.array()
    for i, n in ipairs(s.needs or {}) do needs[i] = n end
    out[#out + 1] = { name = s.name, title = s.title, tenant = s.tenant or (s.gate and "none") or "unknown",
                      gate = s.gate == true, mutates = not s.gate and s.mutates ~= false, needs = needs }
  end
  return out
end

function M.show(opts)
  local w, err = find(opts[1])
  if not w then return output.fail(err) end
  local params, steps = param_rows(w.def), step_rows(w.def)
  if opts.output == "json" then
    io.stdout:write(json.encode { name = w.name, description = w.description, source = w.source, file = w.file,
      destructive = destructive(w.def), params = params, steps = steps }, "\n")
    return EXIT.ok
  end
  local d = destructive(w.def)
  io.stdout:write(("%s: %s\n"):format(w.name, w.description or ""))
  io.stdout:write(("source: %s%s\n"):format(w.source, w.file and (" (" .. w.file .. ")") or ""))
  io.stdout:write(("destructive: %s\n"):format(d == true and "yes (asks, or needs --yes)" or d == false and "no"
    or (d .. " (then it asks, or needs --yes)")))
  io.stdout:write("\nparameters (-p NAME=VALUE):\n")
  local rows = { { "NAME", "TYPE", "DEFAULT", "DESCRIPTION" } }
  for _, p in ipairs(params) do
    local t = p.type
    if p.enum then
      local e = {}
      for i, v in ipairs(p.enum) do e[i] = tostring(v) end
      t = t .. "(" .. table.concat(e, "|") .. ")"
    end
    rows[#rows + 1] = { p.name, t, p.required and "(required)" or (p.default ~= nil and tostring(p.default)) or "-",
                        p.description or "" }
  end
  if #params == 0 then io.stdout:write("  (none)\n") else columns(rows) end
  io.stdout:write("\nsteps:\n")
  rows = { { "STEP", "TENANT", "CHANGES", "WHAT" } }
  for _, s in ipairs(steps) do
    rows[#rows + 1] = { s.name, s.tenant, s.gate and "gate" or (s.mutates and "yes" or "no (reads)"), s.title or "" }
  end
  columns(rows)
  return EXIT.ok
end

return M
