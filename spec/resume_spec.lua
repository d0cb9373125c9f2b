-- Issue 4 point 5: `onboard` is idempotent and resumable. Against an external `cmkflow emulator`
-- (through a config file, as a user runs it): a second run after success changes nothing; and for
-- every request boundary k of an uninterrupted run, `cmkflow run onboard` is SIGKILLed while its
-- request k+1 is in flight (the emulator has handled it but holds the answer back: a latency fault
-- rule with `after = k`), then `cmkflow resume RUN_ID` finishes the run, and the emulator's state
-- (/_emulator/state, timestamps and key version ids normalised) equals the uninterrupted run's:
-- same applications, federated credentials, service principals, resources, role assignments,
-- keys and key version counts, no duplicates.
local json = require("cmkflow.core").json
local cli = require "support.cli"
local files = require "support.files"
local ext = require "support.external_emulator"

local CUSTOMER = "contoso"

-- ---- normalising /_emulator/state ---------------------------------------------------------------

local function is_array(t) return t[1] ~= nil or (next(t) == nil and getmetatable(t) ~= nil) end

-- A canonical text for a decoded JSON value (object keys sorted), to sort and compare arrays.
local function canon(v)
  if type(v) ~= "table" then return json.encode(v) end
  local parts = {}
  if is_array(v) then
    for i, x in ipairs(v) do parts[i] = canon(x) end
    return "[" .. table.concat(parts, ",") .. "]"
  end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys)
  for i, k in ipairs(keys) do parts[i] = json.encode(k) .. ":" .. canon(v[k]) end
  return "{" .. table.concat(parts, ",") .. "}"
end

-- Fields whose value is a point in time (emulator clock) rather than a fact of the end state.
local TIME_FIELDS = { clock = true, created = true, updated = true, createdOn = true, updatedOn = true,
  createdAt = true, lastModifiedAt = true, createdDateTime = true, creationTime = true,
  lastKeyRotationTimestamp = true, lastEnabledTime = true, nbf = true, exp = true }

local function is_timestamp(v) return type(v) == "string" and v:match("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d") ~= nil end

-- Ids the emulator generates (application object and app ids, service principal ids, federated
-- credential ids, managed identity ids, key versions, role assignment names) depend on how many ids it handed out before
-- (tokens included), so a killed run shifts them: they become labels naming the object instead
-- ("<app uniqueName>", "<sp tenant/displayName>", ...), wherever they appear. Then timestamps go
-- and every array is sorted. Two objects that are the same thing get the same label, so a
-- duplicate still shows as an extra array element.
local function normalise(state)
  local labels = {}
  for _, t in ipairs(state.tenants) do
    for _, a in ipairs(t.applications) do
      local name = a.uniqueName ~= json.null and a.uniqueName or a.displayName
      labels[a.id] = "<app object " .. name .. ">"
      labels[a.appId] = "<app id " .. name .. ">"
    end
    for _, sp in ipairs(t.service_principals) do labels[sp.id] = ("<sp %s/%s>"):format(t.name, sp.displayName) end
    for _, f in ipairs(t.federated_credentials) do labels[f.id] = "<fic " .. f.name .. ">" end
    for _, r in ipairs(t.resources) do
      if r.type == "Microsoft.ManagedIdentity/userAssignedIdentities" then
        labels[r.properties.clientId] = "<identity client " .. r.name .. ">"
        labels[r.properties.principalId] = "<identity principal " .. r.name .. ">"
      end
    end
  end
  for vault, keys in pairs(state.vault_keys or {}) do
    for _, k in ipairs(keys) do
      for i, ver in ipairs(k.versions or {}) do labels[ver.version] = ("<%s/%s#%d>"):format(vault, k.name, i) end
    end
  end
  local function relabel(v)
    for id, name in pairs(labels) do
      local a, b = v:find(id, 1, true)
      while a do
        v = v:sub(1, a - 1) .. name .. v:sub(b + 1)
        a, b = v:find(id, a + #name, true)
      end
    end
    return v
  end
  -- role assignment names: a label from what they grant (scope, role, principal) once relabelled
  for _, t in ipairs(state.tenants) do
    for _, r in ipairs(t.role_assignments) do
      local p = r.properties
      labels[r.name] = ("<role %s|%s|%s>"):format(relabel(p.scope), p.roleDefinitionId:match("[^/]+$"), relabel(p.principalId))
    end
  end
  local function walk(v)
    if type(v) == "string" then return relabel(v) end
    if type(v) ~= "table" then return v end
    local out = {}
    if is_array(v) then
      for i, x in ipairs(v) do out[i] = walk(x) end
      table.sort(out, function(x, y) return canon(x) < canon(y) end)
      return out
    end
    for k, x in pairs(v) do
      if not TIME_FIELDS[k] and not is_timestamp(x) then out[relabel(k)] = walk(x) end
    end
    return out
  end
  return walk(state)
end

-- The first difference between two normalised states, as "path: a vs b" (nil when equal).
local function first_difference(a, b, path)
  path = path or "state"
  if type(a) ~= "table" or type(b) ~= "table" then
    if canon(a) ~= canon(b) then return ("%s: %s vs %s"):format(path, canon(a), canon(b)) end
    return nil
  end
  local keys = {}
  for k in pairs(a) do keys[k] = true end
  for k in pairs(b) do keys[k] = true end
  local sorted = {}
  for k in pairs(keys) do sorted[#sorted + 1] = k end
  table.sort(sorted, function(x, y) return tostring(x) < tostring(y) end)
  for _, k in ipairs(sorted) do
    local d = first_difference(a[k], b[k], path .. "." .. tostring(k))
    if d then return d end
  end
  return nil
end

local census, ONCE = ext.onboard_census, ext.ONBOARD_ONCE

-- ---- the spec -------------------------------------------------------------------------------------

describe("onboard against an external emulator", function()
  local emu, config, baseline, baseline_requests

  local function onboard_args() return { "run", "onboard", "--param", "customer=" .. CUSTOMER, "--config", config, "--output", "json" } end

  setup(function()
    emu = ext.start()
    emu:fresh() -- the world every run below starts from (emu:fresh() again: back to it)
    config = emu:config()
  end)
  teardown(function() if emu then emu:stop() end end)

  it("an uninterrupted run creates each object once, and a second run changes nothing", function()
    emu:fresh()
    local since = emu:mark() - 1
    local dir = files.tmpdir()
    local r = cli.run(onboard_args(), { CMKFLOW_STATE_DIR = dir })
    assert.equal(0, r.code, r.stderr)
    assert.equal("succeeded", json.decode(r.stdout).status)
    baseline_requests = #emu:journal(since)
    local state = emu:state()
    assert.same(ONCE, census(state))
    baseline = normalise(state)
    assert.is_true(baseline_requests >= 10, "requests: " .. baseline_requests)

    -- again, as a new run (nothing of the first run in its store): the same world
    r = cli.run(onboard_args(), { CMKFLOW_STATE_DIR = files.tmpdir() })
    assert.equal(0, r.code, r.stderr)
    local again = emu:state()
    assert.same(ONCE, census(again))
    assert.same(baseline, normalise(again))
    os.execute("rm -rf " .. files.quote(dir))
  end)

  it("killed with SIGKILL at every request boundary, resume converges to the uninterrupted run's state", function()
    assert.is_table(baseline, "needs the uninterrupted run")
    local failures = {}
    for k = 0, baseline_requests - 1 do
      local function fail(msg) failures[#failures + 1] = ("k=%d: %s"):format(k, msg) end
      emu:fresh()
      -- the (k+1)-th request is handled but its answer is held back for a minute
      local fault = emu:add_fault { latency_ms = 60000, after = k, count = 1 }
      local since = emu:mark() - 1
      local dir = files.tmpdir()
      local env = { CMKFLOW_STATE_DIR = dir }
      local p = ext.spawn(onboard_args(), env)
      local held
      for _ = 1, 300 do -- bounded: 30 s
        for _, e in ipairs(emu:journal(since)) do
          if e.fault == fault then held = e end
        end
        if held or p:done() then break end
        ext.sleep(0.1)
      end
      p:kill("KILL")
      local killed = p:wait()
      emu:clear_faults()
      if not held then
        fail("request " .. (k + 1) .. " never arrived; the client exited " .. tostring(killed.code) .. ": " .. killed.stderr)
      elseif held.seq - since ~= k + 1 then
        fail(("the held request is request %d, not %d"):format(held.seq - since, k + 1))
      elseif killed.code ~= 137 then
        fail("the client was not killed (exit " .. tostring(killed.code) .. ")")
      else
        local list = cli.run({ "runs", "list", "--output", "json" }, env)
        local runs = json.decode(list.stdout)
        if type(runs) ~= "table" or #runs ~= 1 then
          fail("runs list: " .. list.stdout .. list.stderr)
        else
          local r = cli.run({ "resume", runs[1].run_id, "--output", "json" }, env)
          local doc = json.decode(r.stdout)
          if r.code ~= 0 or type(doc) ~= "table" or doc.status ~= "succeeded" then
            fail(("resume exited %d: %s %s"):format(r.code, r.stdout, r.stderr))
          else
            local state = emu:state()
            local got = census(state)
            if canon(got) ~= canon(ONCE) then
              fail("objects after resume: " .. canon(got))
            else
              local d = first_difference(normalise(state), baseline)
              if d then fail("end state differs from the uninterrupted run's (resumed vs uninterrupted) at " .. d) end
            end
          end
        end
      end
      os.execute("rm -rf " .. files.quote(dir))
    end
    assert.are.same({}, failures)
  end)
end)
