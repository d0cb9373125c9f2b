-- Microsoft Graph client: error envelopes, @odata.nextLink paging, alternate-key upserts
-- (Prefer: create-if-missing) and retries over directory replication delays.
--
--   local graph = require("cmkflow.azure.graph").new{http, credential, cloud, tenant, sleep?,
--                                                     replication_timeout_s? (120)}
--   g:request(method, path_or_url, body?, headers?) -> resp | nil, err
--   g:get(path, opts?)          -> entity | nil, err  (opts.replication = true retries 404s)
--   g:post(path, body, opts?)   -> entity | true | nil, err
--   g:patch(path, body, opts?)  -> entity | true | nil, err
--   g:delete(path, opts?)       -> true | nil, err   (404 = already gone)
--   g:list(path, opts?)         -> array | nil, err  (follows @odata.nextLink; opts.max_pages 1000)
--   g:find_or_create_application(unique_name, body)        -> app, nil, created
--   g:create_service_principal(app_id, body?)              -> sp, nil, created
--   g:upsert_federated_credential(app_object_id, name, body) -> fic, nil, created
--   graph.odata_string(s) -> "'...'" with quotes doubled and URL-unsafe bytes escaped
-- Paths start with "/" and are relative to {cloud.graph}/v1.0; absolute URLs must be on the Graph host.
local core = require "cmkflow.core"
local errors = require "cmkflow.azure.errors"
local validate = require "cmkflow.azure.validate"
local cloudmod = require "cmkflow.azure.cloud"
local client = require "cmkflow.azure.client"
local form = require "cmkflow.form"

local error, ipairs, math_min, pairs, setmetatable, tostring, type =
  error, ipairs, math.min, pairs, setmetatable, tostring, type
local json = core.json

local M = {}

local BACKOFF_S = { 1, 2, 4, 8, 16 }

-- OData string literal for a URL path: quotes doubled, then percent-encoded except for the
-- characters that are safe in a path segment.
function M.odata_string(s)
  s = tostring(s):gsub("'", "''")
  s = s:gsub("[^%w%-%._~'!%$&%*%+,;=:@]", function(c) return ("%%%02X"):format(c:byte()) end)
  return "'" .. s .. "'"
end
local odata = M.odata_string

-- Percent-encoding for a query value.
local query_escape = form.escape

local Graph = {}
Graph.__index = Graph

function M.new(spec)
  local cloud = client.check_spec(spec, "graph.new")
  return setmetatable({
    http = spec.http,
    credential = spec.credential,
    cloud = cloud,
    tenant = spec.tenant,
    base = cloud.graph .. "/" .. (spec.version or cloud.graph_version or "v1.0"),
    host = cloudmod.https_host(cloud.graph):lower(),
    sleep = spec.sleep or client.default_sleep,
    replication_timeout_s = spec.replication_timeout_s or 120,
  }, Graph)
end

function Graph:url(path_or_url, level)
  level = (level or 1) + 1
  if type(path_or_url) ~= "string" or path_or_url == "" then
    error("graph: a path starting with '/' or an https URL is required", level)
  end
  if path_or_url:sub(1, 1) == "/" then return self.base .. path_or_url end
  if path_or_url:match("^https://") then
    local host = cloudmod.https_host(path_or_url)
    if host and host:lower() == self.host then return path_or_url end
    error("graph: refusing URL " .. path_or_url .. " outside " .. self.cloud.graph, level)
  end
  error("graph: path must start with '/' or be an https URL, got '" .. path_or_url .. "'", level)
end

function Graph:send(method, url, body, headers)
  return client.send(self, self.cloud.graph_scope, method, url, body, headers)
end

function Graph:request(method, path_or_url, body, headers)
  return self:send(method, self:url(path_or_url, 2), body, headers)
end

local ok_status, fail, result_of = client.ok_status, client.fail, client.result_of

-- Is this error a replication symptom (the object exists but this replica cannot see it yet)?
local function replication_symptom(err)
  if type(err) ~= "table" or err.code == "ReplicationTimeout" then return false end
  if err.status == 404 then return true end
  if err.status == 400 then
    -- (cmkflow.azure.errors.from_response decodes Graph's message into this detail code)
    if err.detail_code == "NoBackingApplicationObject" then return true end
  end
  return false
end
M.replication_symptom = replication_symptom

-- Runs attempt() until it succeeds or fails with something other than a replication symptom,
-- sleeping 1, 2, 4, 8, 16, 16... s in between, for at most opts.replication_timeout_s in total;
-- opts.on_wait(what, seconds, err) is told of each wait. attempt() -> value, err, extra.
function Graph:with_replication_retry(what, attempt, opts)
  local limit = (opts and opts.replication_timeout_s) or self.replication_timeout_s
  local waited, i = 0, 0
  while true do
    local value, err, extra = attempt()
    if value ~= nil or not replication_symptom(err) then return value, err, extra end
    i = i + 1
    local delay = BACKOFF_S[math_min(i, #BACKOFF_S)]
    local remaining = limit - waited
    if remaining <= 0 then
      return nil, errors.new {
        code = "ReplicationTimeout", status = err.status, tenant = self.tenant, target = err.target,
        request_id = err.request_id, retryable = true, cause = err,
        message = what .. " is not yet visible in tenant " .. tostring(self.tenant or "(default)") ..
                  " after " .. tostring(waited) .. " s of retries (directory replication); last error: " ..
                  tostring(err.code) .. ": " .. tostring(err.message),
      }
    end
    if delay > remaining then delay = remaining end
    if opts and opts.on_wait then opts.on_wait(what, delay, err) end
    self.sleep(delay * 1000)
    waited = waited + delay
  end
end

function Graph:get(path, opts)
  opts = opts or {}
  local url = self:url(path, 2)
  local function attempt()
    local resp, err = self:send("GET", url, nil, opts.headers)
    if not resp then return nil, err end
    if not ok_status(resp.status) then return fail(self, resp, url) end
    return result_of(resp), nil, resp
  end
  if opts.replication then
    return self:with_replication_retry(opts.what or ("object " .. path), attempt, opts)
  end
  return attempt()
end

local function write(self, method, path, body, opts)
  opts = opts or {}
  local url = self:url(path, 3)
  local resp, err = self:send(method, url, body, opts.headers)
  if not resp then return nil, err end
  if method == "DELETE" and resp.status == 404 then return true, nil, resp end
  if not ok_status(resp.status) then return fail(self, resp, url) end
  return result_of(resp), nil, resp
end

function Graph:post(path, body, opts) return write(self, "POST", path, body, opts) end
function Graph:patch(path, body, opts) return write(self, "PATCH", path, body, opts) end
function Graph:delete(path, opts) return write(self, "DELETE", path, nil, opts) end

function Graph:list(path, opts)
  opts = opts or {}
  return client.list(self, path, self:url(path, 2), opts, function(doc)
    local next_link = doc["@odata.nextLink"]
    if type(next_link) ~= "string" or next_link == "" then return nil end
    local host = cloudmod.https_host(next_link)
    if not host or host:lower() ~= self.host then
      return nil, errors.new {
        code = "UntrustedLink", status = 0, tenant = self.tenant, target = next_link, retryable = false,
        message = "@odata.nextLink points outside " .. self.cloud.graph .. " (not followed)",
      }
    end
    return next_link
  end)
end

-- ---- find-or-create helpers --------------------------------------------------------------

local function copy(t)
  local c = {}
  for k, v in pairs(t or {}) do c[k] = v end
  return setmetatable(c, json.object_mt)
end

local UPSERT = { Prefer = "create-if-missing" }

-- PATCH {path} with Prefer: create-if-missing: 201 -> the created entity; 204 -> GET it.
-- Returns entity, nil, created | nil, err, status_of_upsert.
local function upsert(self, path, body, what, opts)
  local url = self:url(path, 3)
  local resp, err = self:send("PATCH", url, body, UPSERT)
  if not resp then return nil, err end
  if resp.status == 201 or (resp.status == 200 and errors.body_json(resp) ~= nil) then
    return result_of(resp), nil, resp.status == 201
  end
  if resp.status == 204 or resp.status == 200 then
    local entity, gerr = self:get(path, { replication = true, what = what,
                                         replication_timeout_s = opts and opts.replication_timeout_s })
    if entity == nil then return nil, gerr end
    return entity, nil, false
  end
  local e = errors.from_response(resp, { tenant = self.tenant, target = url })
  return nil, e, resp.status
end

function Graph:find_or_create_application(unique_name, body, opts)
  if type(unique_name) ~= "string" or unique_name == "" then
    error("graph: find_or_create_application needs a unique name", 2)
  end
  local b = copy(body)
  return upsert(self, "/applications(uniqueName=" .. odata(unique_name) .. ")", b,
                "application with uniqueName '" .. unique_name .. "'", opts)
end

function Graph:create_service_principal(app_id, body, opts)
  local ok, msg = validate.guid(app_id, "appId")
  if not ok then error("graph: " .. msg, 2) end
  local path = "/servicePrincipals(appId=" .. odata(app_id) .. ")"
  local what = "service principal for appId '" .. app_id .. "'"
  local found, err = self:get(path)
  if found ~= nil then return found, nil, false end
  if err.status ~= 404 then return nil, err end
  local b = copy(body)
  b.appId = app_id
  local created_flag = false
  local sp, perr = self:with_replication_retry("application with appId '" .. app_id .. "'", function()
    local resp, serr = self:send("POST", self.base .. "/servicePrincipals", b)
    if not resp then return nil, serr end
    if resp.status == 409 then
      -- someone (or an earlier run) created it: read it, waiting for it to replicate
      return self:get(path, { replication = true, what = what, replication_timeout_s = opts and opts.replication_timeout_s })
    end
    if not ok_status(resp.status) then return fail(self, resp, self.base .. "/servicePrincipals") end
    created_flag = true
    return result_of(resp)
  end, opts)
  if sp == nil then return nil, perr end
  return sp, nil, created_flag
end

local FIC_NAME = "^[%w][%w%-_]*$"

function Graph:upsert_federated_credential(app_object_id, name, body, opts)
  local ok, msg = validate.guid(app_object_id, "application object id")
  if not ok then error("graph: " .. msg, 2) end
  if type(name) ~= "string" or #name < 3 or #name > 120 or not name:match(FIC_NAME) then
    error("graph: federated credential name '" .. tostring(name) ..
          "' is invalid: use 3-120 letters, digits, '-' and '_', starting with a letter or digit", 2)
  end
  local base = "/applications/" .. app_object_id .. "/federatedIdentityCredentials"
  local what = "federated credential '" .. name .. "' on application " .. app_object_id
  local b = copy(body)
  b.name = name
  local entity, err, created = upsert(self, base .. "(name=" .. odata(name) .. ")", b, what, opts)
  if entity ~= nil then return entity, nil, created end
  if created ~= 404 and created ~= 405 then return nil, err end
  -- The upsert form is not available here: list by name, then PATCH by id or POST.
  local function attempt()
    local list, lerr = self:list(base .. "?$filter=" .. query_escape("name eq " .. odata(name)))
    if list == nil then return nil, lerr end
    local existing
    for _, fic in ipairs(list) do
      if type(fic) == "table" and fic.name == name then existing = fic break end
    end
    if existing and existing.id then
      local u = copy(b)
      u.name = nil
      local pr, perr = self:patch(base .. "/" .. tostring(existing.id), u)
      if pr == nil then return nil, perr end
      return self:get(base .. "/" .. tostring(existing.id), { replication = true, what = what })
    end
    local pr, perr = self:post(base, b)
    if pr == nil then return nil, perr end
    return pr, nil, true
  end
  local fic, ferr, was_created = self:with_replication_retry("application " .. app_object_id, attempt, opts)
  if fic == nil then return nil, ferr end
  return fic, nil, was_created == true
end

return M
