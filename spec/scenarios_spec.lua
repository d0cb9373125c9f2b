-- Scenario cases as data (curl's model): every file in spec/cases/ is one case — the emulator's
-- knobs and faults, the workflow and its parameters, the expected exit code, status, broken link
-- and the tenant that must act (format: spec/cases/README.md). This one driver runs each through
-- the `cmkflow` binary against one external `cmkflow emulator` (demo seed, reset between cases; a
-- case with `seed` overrides gets one of its own), through a config file as a user runs it.
-- Adding a failure mode is adding a file.
local json = require("cmkflow.core").json
local cli = require "support.cli"
local files = require "support.files"
local ext = require "support.external_emulator"

local SRC = os.getenv("CMKFLOW_SOURCE_DIR") or "."
local CASES_DIR = SRC .. "/spec/cases"

-- ---- reading the cases ---------------------------------------------------------------------------

local CASE_FIELDS = { description = true, seed = true, workflow = true, params = true, contexts = true, wrong_secret = true,
  policy = true, files = true, before = true, knobs = true, delays = true, faults = true, output = true,
  expect = true }
local EXPECT_FIELDS = { exit = true, status = true, gate = true, stdout_empty = true, stderr_contains = true,
  stderr_matches = true, error_contains = true, error_matches = true, error_not_contains = true,
  step_failed = true, error_code = true, tenant = true, outputs = true, result = true, requests = true, requests_min = true,
  census = true, faults_fired = true, faulted_share_min = true }

local function case_names()
  local names = {}
  local p = assert(io.popen("ls " .. files.quote(CASES_DIR)))
  for name in p:lines() do
    if name:match("%.lua$") then names[#names + 1] = name end
  end
  p:close()
  table.sort(names)
  return names
end

-- A case file is data: it runs with an empty environment and must return a table with known fields.
local function load_case(name)
  local path = CASES_DIR .. "/" .. name
  local case = assert(loadfile(path, "t", {}))()
  assert(type(case) == "table", path .. " must return a table")
  for k in pairs(case) do assert(CASE_FIELDS[k], path .. ": unknown field '" .. tostring(k) .. "'") end
  assert(type(case.description) == "string", path .. ": description is required")
  assert(type(case.workflow) == "string", path .. ": workflow is required")
  assert(type(case.expect) == "table" and math.type(case.expect.exit) == "integer", path .. ": expect.exit is required")
  for k in pairs(case.expect) do assert(EXPECT_FIELDS[k], path .. ": unknown field 'expect." .. tostring(k) .. "'") end
  return case
end

-- ---- what a failure says --------------------------------------------------------------------------

-- The one place that reads which tenant a failure says must act. Today that is text: the step
-- library appends "[customer tenant must fix this]" (or "[customer tenant: needs ...]"), verify
-- says "Fix (ISV tenant):". When errors are data (a JSON error with a `tenant` field) this is the
-- only function to change.
-- The party that must act is a field of the run's error (cmkflow.errors: tenant = "isv" |
-- "customer"); a case's "ISV or customer" accepts either (a grant still propagating).
local PARTIES = { ISV = { isv = true }, customer = { customer = true },
                  ["ISV or customer"] = { isv = true, customer = true } }
local function names_tenant(run, tenant)
  local err = run.doc and run.doc.error
  return type(err) == "table" and PARTIES[tenant] ~= nil and PARTIES[tenant][err.tenant] == true
end

-- Likewise for the service's error code (e.g. "AuthorizationFailed", "AADSTS7000215").
local function names_error_code(run, code)
  local err = run.doc and run.doc.error
  if type(err) ~= "table" then return false end
  return err.code == code or err.inner_code == code or err.detail_code == code or err.cause_code == code
end

-- The value at a dotted path ("storage_account.properties.encryption.keySource") of t.
local function at(t, path)
  for part in path:gmatch("[^%.]+") do
    if type(t) ~= "table" then return nil end
    t = t[tonumber(part) or part]
  end
  return t
end

-- ---- running one case -------------------------------------------------------------------------------

local emu

-- A config file holding the demo seed's deployer principals for the case's contexts.
local function config_for(case, dir)
  return emu:config { path = dir .. "/config.lua", contexts = case.contexts, seed = emu.seed,
    secrets = case.wrong_secret and { [case.wrong_secret] = "not-the-secret-" .. case.wrong_secret } or nil,
    policy = case.policy and files.write(dir .. "/policy.lua", case.policy) }
end

-- "${dir}" and "${NAME.path}" (the outputs of the `before` run named NAME) in a parameter.
local function expand(value, dir, named)
  return (value:gsub("%${([%w_%.%-]+)}", function(ref)
    if ref == "dir" then return dir end
    local name, path = ref:match("^([%w_%-]+)%.(.+)$")
    local v = name and named[name] and at(named[name], path)
    assert(v ~= nil, "no value for ${" .. ref .. "}")
    return tostring(v)
  end))
end

local function run_workflow(workflow, params, output, config, state_dir, dir, named)
  -- --yes: a case runs destructive workflows (revoke, offboard delete_account=true) unattended
  local args = { "run", workflow, "--config", config, "--yes" }
  for _, p in ipairs(params or {}) do
    args[#args + 1] = "--param"
    args[#args + 1] = expand(p, dir, named)
  end
  if output ~= "text" then
    args[#args + 1] = "--output"
    args[#args + 1] = "json"
  end
  local r = cli.run(args, { CMKFLOW_STATE_DIR = state_dir })
  r.doc = r.stdout:match("^%s*{") and json.decode(r.stdout) or nil
  local err = r.doc and r.doc.error
  r.error_text = (type(err) == "table" and (tostring(err.code) .. ": " .. tostring(err.message)) or "") .. "\n"
                 .. r.stdout .. "\n" .. r.stderr
  return r
end

-- An emulator of its own for a case with `seed` overrides ({["dotted.path"] = value} set on a copy
-- of the demo seed; an empty table is an empty JSON array). Its seed file lives as long as it.
local function start_seeded(overrides)
  local seed = json.decode(json.encode(require "cmkflow.emulator.demo_seed"))
  for path, value in pairs(overrides) do
    local parent, last = seed, nil
    for part in path:gmatch("[^%.]+") do
      if last ~= nil then parent = assert(parent[last], "seed: no " .. path) end
      last = tonumber(part) or part
    end
    parent[last] = (type(value) == "table" and next(value) == nil) and json.array {} or value
  end
  local seed_file = files.write(os.tmpname(), json.encode(seed))
  local seeded = ext.start { args = { "--seed", seed_file } }
  seeded.seed, seeded.seed_file = seed, seed_file
  return seeded
end

-- Back to the world and knobs the emulator started with (emu:fresh, cheaper than a reset). A case
-- that draws from the emulator's PRNG (a fault with a probability) gets the real reset, which
-- re-seeds the PRNG: its draws then do not depend on the cases that ran before it.
local function fresh(case)
  for _, rule in ipairs(case.faults or {}) do
    if rule.probability then return emu:reset() end
  end
  emu:fresh()
end

-- The world after a case's `before` runs. Cases with the same setup (runs, contexts, secret,
-- policy) share it: it is made once, kept as an emulator snapshot with the runs' outputs, and
-- restored for the next such case instead of running the workflows again.
local prepared = {}

local function prepare(case, config, state_dir, dir)
  if not case.before then return {} end
  -- (a case with an emulator of its own shares nothing)
  local key = not case.seed and json.encode { case.before, case.contexts or json.null,
                                              case.wrong_secret or json.null, case.policy or json.null }
  local done = key and prepared[key]
  if done then
    emu:restore(done.snapshot)
    return done.named
  end
  local named = {}
  for i, b in ipairs(case.before) do
    local r = run_workflow(b.workflow, b.params, "json", config, state_dir, dir, named)
    assert(r.code == 0, ("before[%d] %s exited %d: %s %s"):format(i, b.workflow, r.code, r.stdout, r.stderr))
    if b.as then named[b.as] = r.doc.outputs end
  end
  if key then prepared[key] = { snapshot = emu:snapshot(), named = named } end
  return named
end

local function run_case(case)
  local dir = files.tmpdir()
  local state_dir = dir .. "/state"
  files.sh("mkdir -m 700 " .. files.quote(state_dir))
  local config = config_for(case, dir)
  for name, content in pairs(case.files or {}) do files.write(dir .. "/" .. name, content) end

  fresh(case)
  local named = prepare(case, config, state_dir, dir)
  if case.knobs then assert(emu:request("PUT", "/_emulator/knobs", case.knobs) == 200, "PUT /_emulator/knobs") end
  if case.delays then emu:delays(case.delays) end
  for _, rule in ipairs(case.faults or {}) do emu:add_fault(rule) end

  local since = emu:mark() - 1
  local r = run_workflow(case.workflow, case.params, case.output, config, state_dir, dir, named)
  r.journal = emu:journal(since)
  r.state_dir = state_dir
  r.dir = dir
  return r
end

-- ---- checking its outcome ---------------------------------------------------------------------------

local function check(case, r)
  local want = case.expect
  assert.equal(want.exit, r.code, r.stdout .. r.stderr)
  if want.status then assert.equal(want.status, r.doc and r.doc.status, r.stdout) end
  if want.gate then assert.equal(want.gate, r.doc and r.doc.gate, r.stdout) end
  if want.stdout_empty then assert.equal("", r.stdout) end
  for _, s in ipairs(want.stderr_contains or {}) do assert.matches(s, r.stderr, 1, true) end
  for _, p in ipairs(want.stderr_matches or {}) do assert.matches(p, r.stderr) end
  for _, s in ipairs(want.error_contains or {}) do assert.matches(s, r.error_text, 1, true) end
  for _, p in ipairs(want.error_matches or {}) do assert.matches(p, r.error_text) end
  for _, s in ipairs(want.error_not_contains or {}) do assert.not_matches(s, r.error_text, 1, true) end
  if want.tenant then
    assert.is_true(names_tenant(r, want.tenant), "the " .. want.tenant .. " tenant is not named in: " .. r.error_text)
  end
  if want.error_code then
    assert.is_true(names_error_code(r, want.error_code), want.error_code .. " is not named in: " .. r.error_text)
  end
  for path, value in pairs(want.outputs or {}) do
    assert.same(value, at(r.doc and r.doc.outputs, path), "outputs." .. path)
  end
  for path, value in pairs(want.result or {}) do assert.same(value, at(r.doc, path), path) end
  if want.step_failed then
    -- the run's journal, not its text: that step failed (steps that ran beside it may have too)
    local show = cli.run({ "runs", "show", r.doc.run_id, "--output", "json" }, { CMKFLOW_STATE_DIR = r.state_dir })
    assert.equal(0, show.code, show.stderr)
    local status = {}
    for _, s in ipairs(json.decode(show.stdout).steps) do status[s.name] = s.status end
    assert.equal("failed", status[want.step_failed], "step " .. want.step_failed)
  end
  if want.requests then
    assert.equal(want.requests, #r.journal, #r.journal > 0 and (r.journal[1].method .. " " .. r.journal[1].path) or nil)
  end
  if want.requests_min then assert.is_true(#r.journal >= want.requests_min, "requests: " .. #r.journal) end
  if want.census then
    local got = ext.onboard_census(emu:state())
    if want.census == "once" then
      assert.same(ext.ONBOARD_ONCE, got)
    else
      for k, v in pairs(want.census) do assert.equal(v, got[k], "census." .. k) end
    end
  end
  if want.faults_fired or want.faulted_share_min then
    local seen, faulted = {}, 0
    for _, e in ipairs(r.journal) do
      if e.fault then
        faulted = faulted + 1
        seen[e.dropped and "drop" or tostring(e.status)] = true
      end
    end
    for _, kind in ipairs(want.faults_fired or {}) do assert.is_true(seen[kind], "no " .. kind .. " fault fired") end
    if want.faulted_share_min then
      assert.is_true(faulted >= want.faulted_share_min * #r.journal, ("%d of %d requests faulted"):format(faulted, #r.journal))
    end
  end
end

-- ---- the spec -----------------------------------------------------------------------------------------

describe("scenario cases (spec/cases)", function()
  local shared
  setup(function()
    shared = ext.start()
    shared:fresh() -- (the snapshot every case starts from)
    emu = shared
  end)
  teardown(function() if shared then shared:stop() end end)

  local names = case_names()
  it("has cases to run", function() assert.is_true(#names >= 15, #names .. " cases") end)

  for _, name in ipairs(names) do
    local case = load_case(name)
    it(name:gsub("%.lua$", "") .. ": " .. case.description, function()
      local seeded = case.seed and start_seeded(case.seed)
      emu = seeded or shared
      local ok, err = pcall(function()
        local r = run_case(case)
        local checked, problem = pcall(check, case, r)
        os.execute("rm -rf " .. files.quote(r.dir))
        if not checked then error(problem, 0) end
      end)
      emu = shared
      if seeded then
        seeded:stop()
        os.remove(seeded.seed_file)
      end
      if not ok then error(err, 0) end
    end)
  end
end)
