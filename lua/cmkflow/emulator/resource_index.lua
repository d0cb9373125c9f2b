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
--
-- Memory is what bounds the emulator at scale (10,000 customers: about 80,000 records), so the
-- indexes keep no text of their own. Each kind is a table of tables keyed by parts a record
-- already holds: ix.s[type code][subscription], ix.u[subscription][group name], ix.n[type
-- code][name], ix.t[type code][tenant], ix.p[tenant][principal], ix.y[type code], ix.o[op]. Those
-- parts are short strings (GUIDs, names), which Lua keeps once however often they are used;
-- concatenated keys ("s|/subscriptions/...|3") were new long strings, one per record and index
-- (133 of the 274 MiB of live heap at 10,000 customers). A resource group's "scope" bucket is its
-- "under" bucket filtered by type (a group holds a handful of records).
-- An entry holding one record (most: a name, a principal, a group's...) is that record's lower id
-- (a string the map holds anyway) instead of a table; bucket() hands out a fresh one-entry table.
-- Each record's indexed values are remembered (type code, name, tenant, principal, operation;
-- the id gives the rest), so a replace or a delete removes exactly the entries it was put in,
-- even when the record was changed in place before being stored again.
local M = {}

local RA_TYPE = "microsoft.authorization/roleassignments"
local EMPTY = setmetatable({}, { __newindex = function() error("read-only", 2) end })
local KINDS = { "y", "s", "u", "n", "t", "p", "o" }

local MAPS = setmetatable({}, { __mode = "k" }) -- map -> {data = plain, ix = {[kind] = {...}}, placed}

local function lower(s) return type(s) == "string" and s:lower() or nil end

-- A number per resource type (as text), numbered as types are first seen, the same for every map.
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

-- What rec stored under lower id key is indexed by: {type code, name, tenant, principal, op}
-- (nil when it has no type: then it is in no index).
local function values_of(rec)
  local rtype = lower(rec.type)
  if not rtype then return nil end
  local body = type(rec.body) == "table" and rec.body or nil
  local props = body and type(body.properties) == "table" and body.properties or nil
  local tenant = lower(rec.tenant)
  local op = type(rec.internal) == "table" and rec.internal.operation
  return { code_of(rtype), body and lower(body.name), tenant,
           tenant and rtype == RA_TYPE and props and lower(props.principalId) or nil,
           type(op) == "string" and op:lower() or nil }
end

-- Calls fn(kind, k1, k2) for each entry of a record with id key and values v (k2 nil: the entry
-- is ix[kind][k1]; otherwise ix[kind][k1][k2]).
local function each_entry(key, v, fn)
  local t, name, tenant, principal, op = v[1], v[2], v[3], v[4], v[5]
  fn("y", t)
  local sub = key:match("^/subscriptions/([^/]+)")
  if sub then
    fn("s", t, sub)
    local rg = key:match("^/subscriptions/[^/]+/resourcegroups/([^/]+)")
    if rg then fn("u", sub, rg) end
  end
  if name then fn("n", t, name) end
  if tenant then
    fn("t", t, tenant)
    if principal then fn("p", tenant, principal) end
  end
  if op then fn("o", op) end
end

local function index(m, key, rec)
  if type(key) ~= "string" or type(rec) ~= "table" then return end
  local v = values_of(rec)
  if not v then return end
  local ix, data = m.ix, m.data
  each_entry(key, v, function(kind, k1, k2)
    local t = ix[kind]
    if k2 then
      local inner = t[k1]
      if not inner then
        inner = {}
        t[k1] = inner
      end
      t, k1 = inner, k2
    end
    local b = t[k1]
    if b == nil or b == key then
      t[k1] = key -- one record: its id stands for the bucket
    elseif type(b) == "string" then -- a second record: the entry becomes a table
      t[k1] = { [b] = data[b], [key] = rec }
    else
      b[key] = rec
    end
  end)
  m.placed[key] = v
end

local function unindex(m, key)
  local v = m.placed[key]
  if not v then return end
  local ix = m.ix
  each_entry(key, v, function(kind, k1, k2)
    local outer, t = nil, ix[kind]
    if k2 then
      outer, t = t, t[k1]
      if not t then return end
    end
    local slot = k2 or k1
    local b = t[slot]
    if b == key then
      t[slot] = nil
    elseif type(b) == "table" then
      b[key] = nil
      if next(b) == nil then t[slot] = nil end
    end
    if outer and next(t) == nil then outer[k1] = nil end
  end)
  m.placed[key] = nil
end

-- A map over plain (a table lower id -> record, taken over: write through the map from now on).
function M.wrap(plain)
  plain = plain or {}
  local m = { data = plain, ix = {}, placed = {} }
  for _, k in ipairs(KINDS) do m.ix[k] = {} end
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

-- The entry ix[kind][k1] or ix[kind][k1][k2] as a bucket (a fresh table for a one-record entry).
local function entry(m, kind, k1, k2)
  local e = m.ix[kind][k1]
  if k2 ~= nil then e = e and e[k2] end
  if type(e) == "string" then return { [e] = m.data[e] } end
  return e or EMPTY
end

-- The bucket of one index entry (see the header), or an empty read-only table.
function M.bucket(map, kind, a, b)
  a, b = tostring(a or ""):lower(), b and tostring(b):lower()
  local m = MAPS[map]
  if kind == "type" then
    return TYPE_CODE[a] and entry(m, "y", TYPE_CODE[a]) or EMPTY
  elseif kind == "name" then
    return TYPE_CODE[a] and entry(m, "n", TYPE_CODE[a], b) or EMPTY
  elseif kind == "tenant" then
    return TYPE_CODE[b] and entry(m, "t", TYPE_CODE[b], a) or EMPTY
  elseif kind == "principal" then
    return entry(m, "p", a, b)
  elseif kind == "operation" then
    return entry(m, "o", a)
  end
  local sub, rg = a:match("^/subscriptions/([^/]+)/resourcegroups/([^/]+)$")
  if kind == "under" then
    return sub and entry(m, "u", sub, rg) or EMPTY
  end
  assert(kind == "scope", "unknown index kind")
  local code = TYPE_CODE[b]
  if not code then return EMPTY end
  if not sub then
    sub = a:match("^/subscriptions/([^/]+)$")
    return sub and entry(m, "s", code, sub) or EMPTY
  end
  local out = {}
  for id, r in pairs(entry(m, "u", sub, rg)) do
    if TYPE_CODE[lower(r.type)] == code then out[id] = r end
  end
  return out
end

-- The deepest indexed scope (subscription or resource group) that contains scope, or nil.
function M.indexed_scope(scope)
  local s = scope:lower()
  return s:match("^(/subscriptions/[^/]+/resourcegroups/[^/]+)") or s:match("^(/subscriptions/[^/]+)")
end

return M
