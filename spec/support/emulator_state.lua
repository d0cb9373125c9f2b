-- /_emulator/state normalised for comparing end states of runs (spec/resume_spec.lua,
-- spec/emulator_durability_spec.lua): generated ids become labels naming their object, timestamps
-- go, arrays are sorted.
--   emustate.normalise(state) -> table, emustate.canon(v) -> text,
--   emustate.first_difference(a, b) -> "path: a vs b" | nil
local json = require("cmkflow.core").json

local M = {}

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

-- Fields whose value is a point in time (emulator clock) rather than a fact of the end state
-- (a blob container's etag is its last-modified time in hex, as Storage's are).
local TIME_FIELDS = { clock = true, etag = true, lastModifiedTime = true, created = true, updated = true, createdOn = true, updatedOn = true,
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

M.canon, M.normalise, M.first_difference = canon, normalise, first_difference
return M
