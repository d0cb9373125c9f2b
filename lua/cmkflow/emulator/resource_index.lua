-- The emulator's ARM resources as a map with indexes, so that a handler's lookup costs the same
-- with 10 resources or 100,000 (docs/performance.md, "Emulator at scale").
--
--   local map = resource_index.wrap(plain)   -- st.resources: reads, writes and pairs as a table
--   map[lower_id] = rec | nil                -- insert, replace or delete: the indexes follow
--   resource_index.raw(map)                  -- the plain table underneath (serialising, copying)
--   resource_index.is_map(v)                 -- whether v is such a map
--   resource_index.bucket(map, kind, ...)    -- {[lower_id] = rec} of one index entry (never nil;
--                                            -- read-only: it may be the index's own table)
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
-- Most entries hold one record (a name, a principal, a tenant's role assignments of one kind...:
-- 190,000 of 240,000 with 10,000 customers), so an entry holding one is kept as that record's
-- lower id (a string the map holds anyway) instead of a table; bucket() hands out a fresh
-- one-entry table for it (with short keys: about 20 MiB less at 10,000 customers, docs/performance.md).
local M = {}

local RA_TYPE = "microsoft.authorization/roleassignments"
local EMPTY = setmetatable({}, { __newindex = function() error("read-only", 2) end })

local MAPS = setmetatable({}, { __mode = "k" }) -- map -> {data = plain, ix = {[bucket key] = bucket}, placed}

local function lower(s) return type(s) == "string" and s:lower() or nil end

-- Index keys are short: a letter per kind and a number per resource type (TYPE_CODE, numbered as
-- types are first seen, the same for every map), e.g. "n|3|kv-contoso" for the vaults named
-- kv-contoso; there are a few per record, and each is kept once in the index and in the record's
-- list of the buckets it is in.
local KIND = { type = "y", scope = "s", under = "u", name = "n", tenant = "t", principal = "p", operation = "o" }
local TYPE_CODE, type_codes = {}, 0

local function code_of(rtype)
  local c = TYPE_CODE[rtype]
  if not c then
    type_codes = type_codes + 1
    c = tostring(type_codes)
    TYPE_CODE[rtype] = c
  end
  return c
end

-- The index keys of rec stored under lower id key (an array of exactly their number).
local function keys_of(key, rec)
  local out = {}
  local rtype = lower(rec.type)
  if not rtype then return out end
  local t = code_of(rtype)
  out[#out + 1] = "y|" .. t
  local sub = key:match("^(/subscriptions/[^/]+)")
  if sub then
    out[#out + 1] = "s|" .. sub .. "|" .. t
    local rg = key:match("^(/subscriptions/[^/]+/resourcegroups/[^/]+)")
    if rg then
      out[#out + 1] = "s|" .. rg .. "|" .. t
      out[#out + 1] = "u|" .. rg
    end
  end
  local body = type(rec.body) == "table" and rec.body or nil
  local name = body and lower(body.name)
  if name then out[#out + 1] = "n|" .. t .. "|" .. name end
  local tenant = lower(rec.tenant)
  if tenant then
    out[#out + 1] = "t|" .. tenant .. "|" .. t
    local props = body and type(body.properties) == "table" and body.properties or nil
    local principal = rtype == RA_TYPE and props and lower(props.principalId)
    if principal then out[#out + 1] = "p|" .. tenant .. "|" .. principal end
  end
  local op = type(rec.internal) == "table" and rec.internal.operation
  if type(op) == "string" then out[#out + 1] = "o|" .. op:lower() end
  return { table.unpack(out) }
end

local function unindex(m, key)
  local placed = m.placed[key]
  if not placed then return end
  for _, k in ipairs(placed) do
    local b = m.ix[k]
    if b == key then
      m.ix[k] = nil
    elseif type(b) == "table" then
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
    if b == nil or b == key then
      m.ix[k] = key -- one record: its id stands for the bucket
    elseif type(b) == "string" then -- a second record: the entry becomes a table
      m.ix[k] = { [b] = m.data[b], [key] = rec }
    else
      b[key] = rec
    end
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
  a, b = tostring(a or ""):lower(), b and tostring(b):lower()
  -- the resource type's code in the kinds keyed by type: none yet, no record of that type
  if kind == "type" or kind == "name" then
    a = TYPE_CODE[a]
    if not a then return EMPTY end
  elseif kind == "scope" or kind == "tenant" then
    b = b and TYPE_CODE[b]
    if not b then return EMPTY end
  end
  local k = assert(KIND[kind], "unknown index kind") .. "|" .. a .. (b and ("|" .. b) or "")
  local m = MAPS[map]
  local entry = m.ix[k]
  if type(entry) == "string" then return { [entry] = m.data[entry] } end
  return entry or EMPTY
end

-- The deepest indexed scope (subscription or resource group) that contains scope, or nil.
function M.indexed_scope(scope)
  local s = scope:lower()
  return s:match("^(/subscriptions/[^/]+/resourcegroups/[^/]+)") or s:match("^(/subscriptions/[^/]+)")
end

return M
