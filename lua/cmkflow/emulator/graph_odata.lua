-- Microsoft Graph's OData layer for the emulated Graph (graph.lua routes, graph_*.lua answer):
-- the error envelope and its stock answers, URL paths with OData keys and string literals,
-- JSON bodies, and the query options clients send ($filter, $select, $top, $skiptoken paging).
-- Knows no entity type: each resource module passes its type name and filterable properties.
-- OData URL conventions: https://learn.microsoft.com/graph/query-parameters
local core = require "cmkflow.core"
local respond = require "cmkflow.emulator.respond"
local form = require "cmkflow.form"

local json, crypto = core.json, core.crypto
local ipairs, pairs, type, tostring, tonumber = ipairs, pairs, type, tostring, tonumber

local M = {}

local MAX_PAGE = 999

-- ---- errors -----------------------------------------------------------------------------------

local function err(req, status, code, message, details)
  return respond.graph_error(req, status, code, message, details)
end

local function not_found(req, id)
  return err(req, 404, "Request_ResourceNotFound",
    "Resource '" .. tostring(id) .. "' does not exist or one of its queried reference-property objects are not present.")
end

local function bad_request(req, message, details)
  return err(req, 400, "Request_BadRequest", message, details)
end

local AUTH_MESSAGES = {
  missing = "Access token is empty.",
  malformed = "CompactToken parsing failed with error code: 80049217",
  signature = "Access token validation failure. Invalid signature.",
  issuer = "Access token validation failure. Invalid issuer.",
  audience = "Access token validation failure. Invalid audience.",
  expired = "Access token has expired or is not yet valid.",
  not_yet_valid = "Access token has expired or is not yet valid.",
}

local function unauthorized(req, reason)
  local status, h, body = err(req, 401, "InvalidAuthenticationToken",
    AUTH_MESSAGES[reason] or "Access token validation failure.")
  h["www-authenticate"] = 'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", ' ..
                          'client_id="00000003-0000-0000-c000-000000000000"'
  return status, h, body
end

local function denied(req)
  return err(req, 403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")
end

-- ---- URLs, paths and OData literals -----------------------------------------------------------

-- The base URL the caller used for Graph ("https://host[:port][/graph]/v1.0").
local function base_url(req, version)
  local path, sp = req.path or "", req.service_path or ""
  local prefix = ""
  if #path >= #sp and path:sub(#path - #sp + 1) == sp then prefix = path:sub(1, #path - #sp) end
  local host = req.headers.host or "graph.microsoft.com"
  return (req.scheme or "https") .. "://" .. host .. prefix .. "/" .. version
end

-- Reads an OData string literal starting at s[i] == "'" ('' is a quote). Returns value, next index.
local function read_literal(s, i)
  if s:sub(i, i) ~= "'" then return nil end
  local out, j = {}, i + 1
  while j <= #s do
    local c = s:sub(j, j)
    if c == "'" then
      if s:sub(j + 1, j + 1) == "'" then
        out[#out + 1] = "'"
        j = j + 2
      else
        return table.concat(out), j + 1
      end
    else
      out[#out + 1] = c
      j = j + 1
    end
  end
  return nil
end
M.read_literal = read_literal

-- Splits a service path into segments on "/" outside quoted literals.
local function split_path(path)
  local segs, cur, i, n = {}, {}, 1, #path
  while i <= n do
    local c = path:sub(i, i)
    if c == "'" then
      local _, j = read_literal(path, i)
      if not j then return nil end
      cur[#cur + 1] = path:sub(i, j - 1)
      i = j
    elseif c == "/" then
      if #cur > 0 then segs[#segs + 1] = table.concat(cur) end
      cur = {}
      i = i + 1
    else
      cur[#cur + 1] = c
      i = i + 1
    end
  end
  if #cur > 0 then segs[#segs + 1] = table.concat(cur) end
  return segs
end

-- "name(key)" -> name, key  where key = {prop = "appId"|nil, value = "..."}; "name" -> name, nil.
-- Returns nil for a malformed key.
local function parse_segment(seg)
  local name, inner = seg:match("^([%w%.%$]+)%((.*)%)$")
  if not name then return seg, nil end
  local prop, rest = inner:match("^%s*([%w]+)%s*=%s*(.*)$")
  local literal = rest or inner
  literal = literal:match("^%s*(.-)%s*$")
  if literal:sub(1, 1) == "'" then
    local v, j = read_literal(literal, 1)
    if not v or j ~= #literal + 1 then return name, false end
    return name, { prop = prop, value = v }
  end
  if literal == "" then return name, false end
  return name, { prop = prop, value = literal }
end

-- The route of a service path: version, the route key ("applications/{}/federatedIdentityCredentials")
-- and the keys in order; or nil, status-args for an error. entity_sets: the collection names
-- ({applications = true, ...}) whose next segment may be a bare key ("applications/{id}").
local function parse_route(req, entity_sets)
  local segs = split_path(req.service_path or "/")
  if not segs or #segs == 0 then return nil, 400, "BadRequest", "Invalid request." end
  local version = segs[1]
  if version ~= "v1.0" and version ~= "beta" then
    return nil, 400, "BadRequest", "Invalid version: " .. version
  end
  local parts, keys = {}, {}
  local i = 2
  while i <= #segs do
    local name, key = parse_segment(segs[i])
    if key == false then return nil, 400, "BadRequest", "Bad Request - Error in query syntax." end
    parts[#parts + 1] = name
    if key then
      parts[#parts + 1] = "{}"
      keys[#keys + 1] = key
    elseif entity_sets[name] and segs[i + 1] then
      local nxt = segs[i + 1]
      if not nxt:find("(", 1, true) and not entity_sets[nxt] then
        parts[#parts + 1] = "{}"
        keys[#keys + 1] = { value = nxt }
        i = i + 1
      end
    end
    i = i + 1
  end
  return { version = version, route = table.concat(parts, "/"), keys = keys, segs = segs }
end

local function lower(s) return type(s) == "string" and s:lower() or s end

-- ---- bodies -----------------------------------------------------------------------------------

local function read_body(req)
  local body = req.body
  if body == nil or body == "" then return {} end
  local v = json.decode(body)
  if type(v) ~= "table" or json.is_array(v) then return nil end
  return v
end

local function body_error(req)
  return err(req, 400, "BadRequest",
    "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.")
end

local function unknown_property(req, prop, type_name)
  return err(req, 400, "BadRequest", "Property '" .. prop .. "' does not exist on type 'microsoft.graph." ..
    type_name .. "'. Make sure to only use property names that are defined by the type or mark the type as open type.")
end

local function invalid_value(req, prop, resource)
  return bad_request(req, "Invalid value specified for property '" .. prop .. "' of resource '" .. resource .. "'.")
end

local function str_array(v)
  if type(v) ~= "table" then return nil end
  local out = json.array()
  for i, s in ipairs(v) do
    if type(s) ~= "string" then return nil end
    out[i] = s
  end
  if next(v) ~= nil and #out == 0 then return nil end
  return out
end

local function copy_array(t)
  local out = json.array()
  for i, v in ipairs(t or {}) do out[i] = v end
  return out
end

local function or_null(v) if v == nil then return json.null end return v end

-- ---- $filter, $select, $top -------------------------------------------------------------------

-- Parses the $filter forms clients use into a list of clauses joined by "and":
--   prop eq 'x' | prop eq true|false | startswith(prop,'x') | prop/any(c:c eq 'x')
-- Returns clauses or nil, message.
local function parse_filter(text)
  local clauses, i, n = {}, 1, #text
  local function skip() while i <= n and text:sub(i, i):match("%s") do i = i + 1 end end
  local function literal()
    skip()
    local c = text:sub(i, i)
    if c == "'" then
      local v, j = read_literal(text, i)
      if not v then return nil end
      i = j
      return v
    end
    local word = text:match("^(%w+)", i)
    if word == "true" or word == "false" then
      i = i + #word
      return word == "true"
    end
    return nil
  end
  while true do
    skip()
    local clause
    local fn = text:match("^(startswith)%s*%(", i)
    if fn then
      i = text:find("(", i, true) + 1
      skip()
      local prop = text:match("^([%w]+)", i)
      if not prop then return nil, "a property name" end
      i = i + #prop
      skip()
      if text:sub(i, i) ~= "," then return nil, "','" end
      i = i + 1
      local v = literal()
      if type(v) ~= "string" then return nil, "a string literal" end
      skip()
      if text:sub(i, i) ~= ")" then return nil, "')'" end
      i = i + 1
      clause = { op = "startswith", prop = prop, value = v }
    else
      local prop = text:match("^([%w]+)", i)
      if not prop then return nil, "a property name" end
      i = i + #prop
      if text:sub(i, i + 4) == "/any(" then
        i = i + 5
        local var = text:match("^%s*(%w+)%s*:", i)
        if not var then return nil, "a lambda variable" end
        i = text:find(":", i, true) + 1
        skip()
        if text:sub(i, i + #var - 1) ~= var then return nil, "the lambda variable" end
        i = i + #var
        skip()
        if text:sub(i, i + 1) ~= "eq" then return nil, "'eq'" end
        i = i + 2
        local v = literal()
        if type(v) ~= "string" then return nil, "a string literal" end
        skip()
        if text:sub(i, i) ~= ")" then return nil, "')'" end
        i = i + 1
        clause = { op = "any", prop = prop, value = v }
      else
        skip()
        if text:sub(i, i + 1) ~= "eq" then return nil, "'eq'" end
        i = i + 2
        local v = literal()
        if v == nil then return nil, "a literal" end
        clause = { op = "eq", prop = prop, value = v }
      end
    end
    clauses[#clauses + 1] = clause
    skip()
    if i > n then return clauses end
    if text:sub(i, i + 3):lower() ~= "and " then return nil, "'and' or the end of the clause" end
    i = i + 4
  end
end
M.parse_filter = parse_filter

local function match_clause(kind, view, c)
  local v = view[c.prop]
  if c.op == "any" then
    if type(v) ~= "table" then return false end
    for _, x in ipairs(v) do
      if type(x) == "string" and x:lower() == c.value:lower() then return true end
    end
    return false
  end
  if kind == "bool" then return v == c.value end
  if type(v) ~= "string" then return false end
  local a, b = v, c.value
  if kind == "ci" then a, b = a:lower(), b:lower() end
  if c.op == "eq" then return a == b end
  return a:sub(1, #b) == b
end

-- The items of views (already visible, sorted) that $filter selects; or nil, error response args.
-- filters: the entity type's filterable properties, prop -> "ci" (case-insensitive string), "cs"
-- (case-sensitive), "bool", "any" (collection, for /any); startswith only on "ci"/"cs" strings.
local function apply_filter(req, type_name, filters, views)
  local text = req.args["$filter"]
  if text == nil or text == "" then return views end
  local clauses, expected = parse_filter(text)
  if not clauses then
    return nil, table.pack(err(req, 400, "BadRequest", "Invalid filter clause: syntax error, expected " .. expected ..
      " in '" .. text .. "'."))
  end
  local props = filters
  for _, c in ipairs(clauses) do
    local kind = props[c.prop]
    local ok = kind ~= nil
    if ok and c.op == "any" then ok = kind == "any" end
    if ok and c.op ~= "any" then ok = kind ~= "any" end
    if ok and c.op == "startswith" then ok = kind == "ci" or kind == "cs" end
    if ok and kind == "bool" then ok = type(c.value) == "boolean" end
    if ok and (kind == "ci" or kind == "cs") then ok = type(c.value) == "string" end
    if not ok then
      return nil, table.pack(err(req, 400, "Request_UnsupportedQuery",
        "Unsupported or invalid query filter clause specified for property '" .. c.prop .. "' of resource '" ..
        type_name .. "'."))
    end
    c.kind = kind
  end
  local out = {}
  for _, v in ipairs(views) do
    local keep = true
    for _, c in ipairs(clauses) do
      if not match_clause(c.kind, v, c) then keep = false break end
    end
    if keep then out[#out + 1] = v end
  end
  return out
end

local function apply_select(req, v)
  local sel = req.args["$select"]
  if sel == nil or sel == "" then return v end
  local out = {}
  for name in sel:gmatch("[^,%s]+") do
    if v[name] ~= nil then out[name] = v[name] end
  end
  out.id = v.id
  return out
end

-- A collection response: filter, page ($top/$skiptoken), select. type_name: the entity type
-- ("Application"), filters: its filterable properties (apply_filter), set_context: the
-- "@odata.context" fragment after "$metadata#".
local function list_response(req, type_name, filters, set_context, views)
  table.sort(views, function(a, b) return a.id < b.id end)
  local selected, e = apply_filter(req, type_name, filters, views)
  if not selected then return table.unpack(e, 1, e.n) end
  local top = req.args["$top"]
  local n_top
  if top ~= nil then
    n_top = tonumber(top)
    if not n_top or n_top ~= math.floor(n_top) or n_top < 1 or n_top > MAX_PAGE then
      return err(req, 400, "Request_BadRequest", "Invalid page size specified: '" .. tostring(top) ..
        "'. Must be between 1 and " .. MAX_PAGE .. " inclusive.")
    end
  end
  local skip = 0
  local token = req.args["$skiptoken"]
  if token ~= nil then
    skip = tonumber(token:match("^X(%d+)$") or "")
    if not skip then return err(req, 400, "Request_BadRequest", "Invalid skip token '" .. token .. "'.") end
  end
  local page = json.array()
  local last = n_top and math.min(#selected, skip + n_top) or #selected
  for i = skip + 1, last do page[#page + 1] = apply_select(req, selected[i]) end
  local base = base_url(req, req.route.version)
  local doc = { ["@odata.context"] = base .. "/$metadata#" .. set_context, value = page }
  if last < #selected then
    local q = {}
    for k, v in pairs(req.args) do
      if k ~= "$skiptoken" then q[#q + 1] = form.escape(k) .. "=" .. form.escape(v) end
    end
    table.sort(q)
    q[#q + 1] = "$skiptoken=X" .. last
    doc["@odata.nextLink"] = base .. (req.service_path or ""):sub(#req.route.version + 2) .. "?" .. table.concat(q, "&")
  end
  return respond.json(req, 200, doc)
end

local function entity_response(req, status, v)
  return respond.json(req, status, apply_select(req, v))
end

local function is_upsert(req)
  local prefer = req.headers.prefer or ""
  return prefer:lower():find("create-if-missing", 1, true) ~= nil
end

-- The object an entity key addresses: find(key) -> object | nil[, "badkey"]. A key by id must be a
-- GUID. Returns the object, or nil and the packed error response (400 for a malformed id or a
-- property that is no alternate key of microsoft.graph.<entity>, 404 for none).
local function lookup(req, key, entity, find)
  if (key.prop == nil or key.prop == "id") and not crypto.is_guid(key.value) then
    return nil, table.pack(bad_request(req, "Invalid object identifier '" .. key.value .. "'."))
  end
  local obj, why = find(key)
  if why == "badkey" then
    return nil, table.pack(err(req, 400, "BadRequest", "The property '" .. key.prop ..
      "' is not an alternate key of type 'microsoft.graph." .. entity .. "'."))
  end
  if not obj then return nil, table.pack(not_found(req, key.value)) end
  return obj
end

M.err, M.not_found, M.bad_request, M.unauthorized, M.denied = err, not_found, bad_request, unauthorized, denied
M.body_error, M.unknown_property, M.invalid_value = body_error, unknown_property, invalid_value
M.base_url, M.split_path, M.parse_segment, M.parse_route = base_url, split_path, parse_segment, parse_route
M.read_body, M.str_array, M.copy_array, M.or_null, M.lower = read_body, str_array, copy_array, or_null, lower
M.list_response, M.apply_select = list_response, apply_select
M.entity_response, M.is_upsert = entity_response, is_upsert
M.lookup = lookup

return M
