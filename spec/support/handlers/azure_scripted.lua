-- A scripted Azure for the cmkflow.azure specs. Runs in the server's own Lua state.
--
-- config (JSON): { routes = [ { method, path, host?,              -- path without the query string
--                               require_headers = {name = value}?, -- else 400 TestHeaderMissing
--                               unauthenticated = response?,       -- answer when no Authorization
--                               responses = [response, ...] } ] }  -- in order; the last repeats
-- response = { status, headers = {}?, body = "text"? | json = value? }
--
-- Also: POST /{tenant}/oauth2/v2.0/token issues "tok-{tenant}-{arm|graph|kv}" (fake tokens made
-- by this test server), and GET /_test/journal returns every request seen, in order:
-- [{method, host, path, query, authorization, prefer, body, route_hit}].
local core = require "cmkflow.core"
local form = require "cmkflow.form"
local json = core.json

local cfg
local counters = {}
local journal = json.array {}

local function reply(status, value, headers)
  local h = { ["content-type"] = "application/json; charset=utf-8" }
  for k, v in pairs(headers or {}) do h[k] = v end
  return status, h, json.encode(value)
end

local function scope_tag(scope)
  if not scope then return "none" end
  if scope:find("vault", 1, true) then return "kv" end
  if scope:find("graph", 1, true) then return "graph" end
  if scope:find("management", 1, true) then return "arm" end
  return "other"
end

local function respond(r)
  local h = {}
  for k, v in pairs(r.headers or {}) do h[k:lower()] = v end
  local body = r.body
  if body == nil and r.json ~= nil then
    body = json.encode(r.json)
    h["content-type"] = h["content-type"] or "application/json; charset=utf-8"
  end
  return r.status or 200, h, body or ""
end

local function same_path(a, b)
  return a == b or form.unescape(a) == form.unescape(b)
end

return function(req, config)
  if not cfg then cfg = assert(json.decode(config)) end
  local path = req.path or "/"
  local host = (req.host or ""):gsub(":%d+$", "")
  local h = req.headers or {}

  if req.method == "GET" and path == "/_test/journal" then
    return reply(200, journal)
  end

  local entry = json.object {
    method = req.method, host = host, path = path, query = req.query or "",
    authorization = h.authorization or json.null, prefer = h.prefer or json.null,
    body = req.body or "",
  }
  journal[#journal + 1] = entry

  local tenant = path:match("^/([^/]+)/oauth2/v2%.0/token$")
  if tenant and req.method == "POST" then
    local f = form.decode(req.body)
    entry.body = json.null -- the form carries the client secret: keep it out of the journal
    entry.token_tenant, entry.token_scope = tenant, f.scope or json.null
    return reply(200, { token_type = "Bearer", expires_in = 3599, ext_expires_in = 3599,
                        access_token = "tok-" .. tenant .. "-" .. scope_tag(f.scope) })
  end

  for i, route in ipairs(cfg.routes or {}) do
    if route.method == req.method and same_path(route.path, path) and (not route.host or route.host == host) then
      entry.route = i
      if route.unauthenticated and not h.authorization then
        return respond(route.unauthenticated)
      end
      for name, want in pairs(route.require_headers or {}) do
        if h[name:lower()] ~= want then
          return reply(400, { error = { code = "TestHeaderMissing",
            message = ("expected header %s: %s, got %s"):format(name, want, tostring(h[name:lower()])) } })
        end
      end
      counters[i] = (counters[i] or 0) + 1
      local list = route.responses or {}
      local r = list[math.min(counters[i], #list)] or { status = 200 }
      return respond(r)
    end
  end
  return reply(404, { error = { code = "TestNoRoute", message = "no route for " .. req.method .. " " .. path } })
end
