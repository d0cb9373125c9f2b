-- The emulator's ARM resources as a map with indexes, so that a handler's lookup costs the same
-- with 10 resources or 100,000 (docs/performance.md, "Emulator at scale").
--
--   local map = resource_index.wrap(plain)   -- st.resources: reads, writes and pairs as a table
--   map[lower_id] = rec | nil                -- insert, replace or delete: the indexes follow
--   resource_index.raw(map)                  -- the plain table underneath (serialising, copying)
--   resource_index.is_map(v)                 -- whether v is such a map
--   resource_index.bucket(map, kind, ...)    -- {[lower_id] = rec} of one index entry (a fresh
--                                            -- table; empty and read-only when none)
--   resource_index.settle(map)               -- pack the records read or written since the last
--                                            -- settle (the emulator calls it between requests)
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
-- (6.6 MiB more live heap at 2,000 customers). A resource group's "scope" bucket is its
-- "under" bucket filtered by type (a group holds a handful of records).
-- An entry holding one record (most: a name, a principal, a group's...) is that record's lower id
-- (a string the map holds anyway) instead of a table; a bucket of more is a set {[lower id] = true}.
--
-- Records at rest are packed (json.pack: compact JSON compressed against a preset dictionary of
-- typical records, pack_dictionary.lua): one string of about 120 bytes instead of a tree of
-- tables of 1-5 KB (docs/performance.md, "Emulator at scale"). Reading a record through the map
-- unpacks it; settle(), which the emulator calls before each request, packs again all but the
-- M.KEEP most recently unpacked or stored, changes made in place included. So a handler reads
-- and changes records as tables for its whole request. A record is plain data (what the state
-- file holds); one that does not encode stays a table. Hold no record across requests: once
-- packed and read again it is another table.
local json = require("cmkflow.core").json
local DICTIONARY = require "cmkflow.emulator.pack_dictionary"

local M = {}

local RA_TYPE = "microsoft.authorization/roleassignments"
local EMPTY = setmetatable({}, { __newindex = function() error("read-only", 2) end })
local KINDS = { "y", "s", "u", "n", "t", "p", "o" }

local MAPS = setmetatable({}, { __mode = "k" }) -- map -> {data = plain, ix = {[kind] = {...}}, placed, hot}

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

-- A record from its form at rest: packed (json.pack) or JSON text (a state file's). Raises when it
-- is neither (wrap: the state file is refused; only a damaged file holds such a value).
local function unpack(v)
  local rec, why
  if v:byte(1) == 1 then rec, why = json.unpack(v, DICTIONARY) else rec, why = json.decode(v) end
  if type(rec) ~= "table" then error("a resource record is not a JSON object: " .. tostring(why or rec), 0) end
  return rec
end

local function index(m, key, rec)
  if type(rec) == "string" then rec = unpack(rec) end -- a record at rest (wrap)
  if type(key) ~= "string" or type(rec) ~= "table" then return end
  local v = values_of(rec)
  if not v then return end
  local ix = m.ix
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
    elseif type(b) == "string" then -- a second record: the entry becomes a set
      t[k1] = { [b] = true, [key] = true }
    else
      b[key] = true
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
  local m = { data = plain, ix = {}, placed = {}, hot = {}, is_hot = {} }
  for _, k in ipairs(KINDS) do m.ix[k] = {} end
  local hot, is_hot = m.hot, m.is_hot
  local function heat(key)
    if not is_hot[key] then
      is_hot[key] = true
      hot[#hot + 1] = key
    end
  end
  -- the record under key as a table (unpacked until the next settle)
  local function get(key)
    local v = plain[key]
    if type(v) == "string" then
      v = unpack(v)
      plain[key] = v
      heat(key)
    end
    return v
  end
  m.get = get
  local map = setmetatable({}, {
    __index = function(_, key) return get(key) end,
    __newindex = function(_, key, rec)
      if plain[key] ~= nil then unindex(m, key) end
      plain[key] = rec
      if rec ~= nil then
        index(m, key, rec)
        heat(key)
      end
    end,
    -- (changing a field that exists during a traversal is allowed: the unpacked record replaces
    -- its text under the same key)
    __pairs = function()
      return function(_, k)
        local nk = next(plain, k)
        if nk ~= nil then return nk, get(nk) end
      end, plain, nil
    end,
  })
  for key, rec in pairs(plain) do
    index(m, key, rec)
    if type(rec) == "table" then heat(key) end -- packed by the settles to come
  end
  MAPS[map] = m
  return map
end

function M.is_map(v) return MAPS[v] ~= nil end
-- (records in it are tables or packed: wrap takes both, and JSON text)
function M.raw(map) return MAPS[map].data end

-- The records as tables or JSON text (packed ones unpacked to text, not decoded): for a state file.
function M.texts(map)
  local out = {}
  for key, v in pairs(MAPS[map].data) do
    out[key] = type(v) == "string" and v:byte(1) == 1 and assert(json.unpack(v, DICTIONARY, true)) or v
  end
  return out
end

-- Records kept as tables between requests: the most recently unpacked or stored, first in first
-- out. A bulk run touches the same few records per customer over its dozens of requests (the
-- caller's role assignments on every authorization, the resource group...); 1,024 of them hold
-- every record of 32 customers onboarding at once and cost about 2 MiB.
M.KEEP = 1024

-- Packs the records unpacked or stored since the last settle, beyond the keep most recent
-- (default M.KEEP; 0 packs all of them). See the header.
function M.settle(map, keep)
  local m = MAPS[map]
  if not m then return end
  local hot, is_hot, data = m.hot, m.is_hot, m.data
  local n = #hot
  local drop = n - (keep or M.KEEP)
  if drop <= 0 then return end
  for i = 1, drop do
    local key = hot[i]
    is_hot[key] = nil
    local rec = data[key]
    if type(rec) == "table" then data[key] = json.pack(rec, DICTIONARY) or rec end
  end
  table.move(hot, drop + 1, n, 1)
  for i = n - drop + 1, n do hot[i] = nil end
end

-- The entry ix[kind][k1] or ix[kind][k1][k2] as a bucket (a fresh table for a one-record entry).
local function entry(m, kind, k1, k2)
  local e = m.ix[kind][k1]
  if k2 ~= nil then e = e and e[k2] end
  if type(e) == "string" then return { [e] = m.get(e) } end
  if not e then return EMPTY end
  local out = {}
  for key in pairs(e) do out[key] = m.get(key) end
  return out
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
