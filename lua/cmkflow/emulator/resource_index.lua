-- The emulator's ARM resources as a map with indexes, so that a handler's lookup costs the same
-- with 10 resources or 100,000 (docs/performance.md, "Emulator at scale").
--
--   local map = resource_index.wrap(plain)   -- st.resources: reads, writes and pairs as a table
--   map[lower_id] = rec | nil                -- insert, replace or delete: the indexes follow
--   resource_index.raw(map)                  -- the plain table underneath (serialising, copying)
--   resource_index.is_map(v)                 -- whether v is such a map
--   resource_index.bucket(map, kind, ...)    -- {[lower_id] = rec} of one index entry (never nil)
--
-- Index kinds (all text lower case; a bucket is a table lower id -> record):
--   "type"   rtype                 every record of a type
--   "scope"  scope, rtype          records of rtype whose id lies under scope, for scope a
--                                  subscription (/subscriptions/s) or a resource group
--                                  (/subscriptions/s/resourcegroups/g): the two scopes handlers list
--   "under"  rgscope               records of any type in a resource group (the group itself too)
--   "name"   rtype, name           records of rtype whose body.name is name
--   "tenant" tenant, rtype         records of rtype in a tenant
--   "principal" tenant, principal  role assignments of a principal (body.properties.principalId)
--   "operation" op                 the record whose internal.operation is op (Storage's create)
-- Each record remembers the buckets it was put in, so a delete or a replace removes it from
-- exactly those, whatever was changed in the record in place since.
local M = {}

local RA_TYPE = "microsoft.authorization/roleassignments"
local EMPTY = setmetatable({}, { __newindex = function() error("read-only", 2) end })

local MAPS = setmetatable({}, { __mode = "k" }) -- map -> {data = plain, ix = {[bucket key] = bucket}, placed}

local function lower(s) return type(s) == "string" and s:lower() or nil end

-- The index keys of rec stored under lower id key.
local function keys_of(key, rec)
  local out = {}
  local rtype = lower(rec.type)
  if not rtype then return out end
  out[#out + 1] = "type|" .. rtype
  local sub = key:match("^(/subscriptions/[^/]+)")
  if sub then
    out[#out + 1] = "scope|" .. sub .. "|" .. rtype
    local rg = key:match("^(/subscriptions/[^/]+/resourcegroups/[^/]+)")
    if rg then
      out[#out + 1] = "scope|" .. rg .. "|" .. rtype
      out[#out + 1] = "under|" .. rg
    end
  end
  local body = type(rec.body) == "table" and rec.body or nil
  local name = body and lower(body.name)
  if name then out[#out + 1] = "name|" .. rtype .. "|" .. name end
  local tenant = lower(rec.tenant)
  if tenant then
    out[#out + 1] = "tenant|" .. tenant .. "|" .. rtype
    local props = body and type(body.properties) == "table" and body.properties or nil
    local principal = rtype == RA_TYPE and props and lower(props.principalId)
    if principal then out[#out + 1] = "principal|" .. tenant .. "|" .. principal end
  end
  local op = type(rec.internal) == "table" and rec.internal.operation
  if type(op) == "string" then out[#out + 1] = "operation|" .. op:lower() end
  return out
end

local function unindex(m, key)
  local placed = m.placed[key]
  if not placed then return end
  for _, k in ipairs(placed) do
    local b = m.ix[k]
    if b then
      b[key] = nil
      if next(b) == nil then m.ix[k] = nil end
    end
  end
  m.placed[key] = nil
end

local function index(m, key, rec)
  if type(key) ~= "string" or type(rec) ~= "table" then return end
  local placed = keys_of(key:lower(), rec)
  for _, k in ipairs(placed) do
    local b = m.ix[k]
    if not b then b = {} m.ix[k] = b end
    b[key] = rec
  end
  m.placed[key] = placed
end

-- A map over plain (a table lower id -> record, taken over: write through the map from now on).
function M.wrap(plain)
  plain = plain or {}
  local m = { data = plain, ix = {}, placed = {} }
  local map = setmetatable({}, {
    __index = plain,
    __newindex = function(_, key, rec)
      if plain[key] ~= nil then unindex(m, key) end
      plain[key] = rec
      if rec ~= nil then index(m, key, rec) end
    end,
    __pairs = function() return next, plain, nil end,
  })
  for key, rec in pairs(plain) do index(m, key, rec) end
  MAPS[map] = m
  return map
end

function M.is_map(v) return MAPS[v] ~= nil end
function M.raw(map) return MAPS[map].data end

-- The bucket of one index entry (see the header), or an empty read-only table.
function M.bucket(map, kind, a, b)
  local k = kind .. "|" .. tostring(a or ""):lower() .. (b and ("|" .. tostring(b):lower()) or "")
  return MAPS[map].ix[k] or EMPTY
end

-- The deepest indexed scope (subscription or resource group) that contains scope, or nil.
function M.indexed_scope(scope)
  local s = scope:lower()
  return s:match("^(/subscriptions/[^/]+/resourcegroups/[^/]+)") or s:match("^(/subscriptions/[^/]+)")
end

return M
