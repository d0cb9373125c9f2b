-- Azure Resource Manager client: api-version handling, error envelopes, long-running operations
-- (Azure-AsyncOperation, Location, provisioningState) and nextLink paging.
--
--   local arm = require("cmkflow.azure.arm").new{http = client, credential = cred, cloud = cloud,
--                                                tenant = T?, subscription = S?, sleep = fn?, pacer = p?}
--   (pacer: cmkflow.azure.pacer, default the process's shared one)
--   arm:request(method, path_or_url, {api_version, body, headers}) -> resp | nil, err
--   arm:get(path, opts)            -> body | nil, err            (404 -> nil, err ResourceNotFound...)
--   arm:exists(path, opts)         -> true | false | nil, err
--   arm:put(path, body, opts)      -> result, nil, final_resp | nil, err
--   arm:patch(path, body, opts)    -> idem
--   arm:post(path, body, opts)     -> idem
--   arm:delete(path, opts)         -> true, nil, final_resp | nil, err  (404 = already gone)
--   arm:poll(initial_resp, method, url, opts) -> idem (continue an operation started with wait=false)
--   arm:list(path, opts)           -> array | nil, err
-- result is the final JSON body, or true when the final response has none (204, empty 200/202).
-- opts: api_version (required unless the URL has one), headers, wait (default true),
--       timeout_s (default 1800), poll_interval_s (used without Retry-After; default:
--       client.probe_delay_s of the time waited, 1 s at first), max_pages (1000),
--       on_wait(url, seconds, state) (told of each wait of a long-running operation).
-- Paths starting with "/" are relative to cloud.arm; "{subscription}" is replaced by the client's
-- subscription. Absolute URLs must point at the cloud's ARM host (tokens never go elsewhere).
local core = require "cmkflow.core"
local errors = require "cmkflow.azure.errors"
local validate = require "cmkflow.azure.validate"
local cloudmod = require "cmkflow.azure.cloud"
local client = require "cmkflow.azure.client"
local pacer_mod = require "cmkflow.azure.pacer"

local error, math_max, math_min, setmetatable, tonumber, tostring, type =
  error, math.max, math.min, setmetatable, tonumber, tostring, type
local json = core.json

local M = {}

local TERMINAL = { succeeded = "Succeeded", failed = "Failed", canceled = "Canceled", cancelled = "Canceled" }

local Arm = {}
Arm.__index = Arm

function M.new(spec)
  local cloud = client.check_spec(spec, "arm.new")
  local self = setmetatable({
    http = spec.http,
    credential = spec.credential,
    cloud = cloud,
    tenant = spec.tenant,
    subscription = spec.subscription,
    sleep = spec.sleep or client.default_sleep,
    pacer = spec.pacer or pacer_mod.shared(),
    poll_interval_s = spec.poll_interval_s,
    timeout_s = spec.timeout_s or 1800,
    host = (cloudmod.https_host(cloud.arm)):lower(),
  }, Arm)
  return self
end

local function has_query_param(url, name)
  local q = url:match("%?(.*)$")
  if not q then return false end
  for k in ("&" .. q):gmatch("&([^=&]+)") do
    if k:lower() == name then return true end
  end
  return false
end

local function add_query(url, name, value)
  return url .. (url:find("?", 1, true) and "&" or "?") .. name .. "=" .. value
end

-- The absolute URL for a path or URL, with api-version. Raises for misuse (no api-version,
-- malformed api-version, relative path not starting with "/", foreign host).
function Arm:url(path_or_url, api_version, level)
  level = (level or 1) + 1
  if type(path_or_url) ~= "string" or path_or_url == "" then
    error("arm: a path starting with '/' or an https URL is required", level)
  end
  local url
  if path_or_url:sub(1, 1) == "/" then
    local path = path_or_url
    if path:find("{subscription}", 1, true) then
      if not self.subscription then
        error("arm: path " .. path .. " names {subscription} but the client has no subscription", level)
      end
      path = path:gsub("{subscription}", self.subscription)
    end
    url = self.cloud.arm .. path
  elseif path_or_url:match("^https://") then
    local host = cloudmod.https_host(path_or_url)
    if not host or host:lower() ~= self.host then
      error("arm: refusing URL " .. path_or_url .. " outside " .. self.cloud.arm, level)
    end
    url = path_or_url
  else
    error("arm: path must start with '/' or be an https URL, got '" .. path_or_url .. "'", level)
  end
  if not has_query_param(url, "api-version") then
    if api_version == nil then
      error("arm: api_version is required for " .. path_or_url, level)
    end
    local ok, msg = validate.api_version(api_version)
    if not ok then error("arm: " .. msg, level) end
    url = add_query(url, "api-version", api_version)
  end
  return url
end

-- Is this (absolute) link safe to follow with our token?
function Arm:trusted(url)
  local host = cloudmod.https_host(url)
  return host ~= nil and host:lower() == self.host
end

local function untrusted(self, url, what)
  return nil, errors.new {
    code = "UntrustedLink", status = 0, tenant = self.tenant, target = url, retryable = false,
    message = what .. " points outside " .. self.cloud.arm .. ": " .. tostring(url) .. " (not followed)",
  }
end

-- How long a request throttled past the HTTP client's retries is sent again (429 with Retry-After).
M.THROTTLED_MAX_S = 900

-- Sends one request (retries of 408/429/5xx happen below), paced by ARM's throttling headers
-- (cmkflow.azure.pacer). Returns the raw response for any status.
function Arm:send(method, url, body, headers)
  local pacer = self.pacer
  local key, kind = pacer:key(self.credential, url, method)
  local waited_ms = 0
  while true do
    local wait = pacer:acquire(key, kind)
    while wait > 0 do
      self.sleep(wait)
      waited_ms = waited_ms + wait
      wait = pacer:acquire(key, kind)
    end
    local resp, err = client.send(self, self.cloud.arm_scope, method, url, body, headers)
    pacer:observe(key, resp)
    if not (resp and resp.status == 429) or waited_ms >= M.THROTTLED_MAX_S * 1000 then return resp, err end
  end
end

function Arm:request(method, path_or_url, opts)
  opts = opts or {}
  local url = self:url(path_or_url, opts.api_version, 2)
  return self:send(method, url, opts.body, opts.headers)
end

local ok_status, fail, result_of = client.ok_status, client.fail, client.result_of

function Arm:get(path, opts)
  opts = opts or {}
  local url = self:url(path, opts.api_version, 2)
  local resp, err = self:send("GET", url, nil, opts.headers)
  if not resp then return nil, err end
  if not ok_status(resp.status) then return fail(self, resp, url) end
  return errors.body_json(resp) or json.object {}, nil, resp
end

function Arm:exists(path, opts)
  opts = opts or {}
  local url = self:url(path, opts.api_version, 2)
  local resp, err = self:send(opts.method or "GET", url, nil, opts.headers)
  if not resp then return nil, err end
  if resp.status == 404 then return false end
  if ok_status(resp.status) then return true end
  return fail(self, resp, url)
end

-- ---- long-running operations ------------------------------------------------------------

local function retry_after_s(resp, default)
  local v = errors.header(resp, "retry-after")
  local n = tonumber(v)
  if n then return math_min(math_max(n, 0), 600) end
  return default
end

local function provisioning_state(doc)
  if type(doc) ~= "table" then return nil end
  local props = doc.properties
  local state = type(props) == "table" and props.provisioningState or nil
  if state == nil then state = doc.provisioningState end
  if type(state) ~= "string" then return nil end
  return state
end

local function is_terminal(state)
  return state == nil or TERMINAL[state:lower()] ~= nil
end

-- A poller that bounds the total wait (counted in the waits it performs, so that a fake clock
-- makes the bound exact) and raises OperationTimedOut.
local function new_waiter(self, opts, url)
  local timeout_s = opts.timeout_s or self.timeout_s
  local fixed_s = opts.poll_interval_s or self.poll_interval_s
  local waited_s = 0
  return function(resp, last_state, monitor)
    local delay = retry_after_s(resp, fixed_s or client.probe_delay_s(waited_s))
    if waited_s + delay > timeout_s then
      if waited_s < timeout_s then
        delay = timeout_s - waited_s
      else
        return nil, errors.new {
          code = "OperationTimedOut", status = 0, tenant = self.tenant, target = url, retryable = true,
          monitor = monitor,
          message = "the operation on " .. url .. " did not finish within " .. tostring(timeout_s) ..
                    " s (last status: " .. tostring(last_state or "InProgress") .. ")" ..
                    (monitor and ("; it may still complete: status at " .. monitor) or ""),
        }
      end
    end
    if opts.on_wait then opts.on_wait(url, delay, last_state) end
    self.sleep(delay * 1000)
    waited_s = waited_s + delay
    return true
  end
end

local function operation_error(self, doc, state, url, monitor)
  local e = type(doc) == "table" and doc.error
  local code, message
  if type(e) == "table" then
    code, message = e.code, e.message
  end
  return nil, errors.new {
    code = type(code) == "string" and code or ("Operation" .. state),
    message = type(message) == "string" and message or ("the operation on " .. url .. " ended " .. state),
    details = type(e) == "table" and e.details or nil,
    status = 0, tenant = self.tenant, target = url, retryable = false, operation_status = state,
    monitor = monitor,
  }
end

-- Polls GET url until provisioningState is terminal.
local function poll_state(self, url, doc, resp, wait)
  local state = provisioning_state(doc)
  while not is_terminal(state) do
    local ok, werr = wait(resp, state, url)
    if not ok then return nil, werr end
    local r, err = self:send("GET", url)
    if not r then return nil, err end
    if not ok_status(r.status) then return fail(self, r, url) end
    resp, doc = r, errors.body_json(r)
    state = provisioning_state(doc)
  end
  local lower = state and state:lower()
  if lower == "failed" or lower == "canceled" or lower == "cancelled" then
    local e = type(doc) == "table" and (doc.error or (type(doc.properties) == "table" and doc.properties.error))
    return operation_error(self, { error = e }, TERMINAL[lower], url)
  end
  return doc == nil and true or doc, nil, resp
end

local function poll_async(self, method, url, initial, monitor, wait)
  local resp, state = initial, "InProgress"
  while true do
    local ok, werr = wait(resp, state, monitor)
    if not ok then return nil, werr end
    local r, err = self:send("GET", monitor)
    if not r then return nil, err end
    if not ok_status(r.status) then
      local e = errors.from_response(r, { tenant = self.tenant, target = monitor })
      e.message = "reading the status of the operation on " .. url .. " failed: " .. tostring(e.message)
      return nil, e
    end
    resp = r
    local doc = errors.body_json(r)
    state = type(doc) == "table" and type(doc.status) == "string" and doc.status or "InProgress"
    local terminal = TERMINAL[state:lower()]
    if terminal == "Succeeded" then
      if method == "DELETE" then return true, nil, r end
      local location = errors.header(initial, "location")
      if method == "POST" then
        if location then
          if not self:trusted(location) then return untrusted(self, location, "Location") end
          local fr, ferr = self:send("GET", location)
          if not fr then return nil, ferr end
          if not ok_status(fr.status) then return fail(self, fr, location) end
          return result_of(fr), nil, fr
        end
        if type(doc.properties) == "table" then return doc.properties, nil, r end
        return true, nil, r
      end
      -- PUT / PATCH: the resource itself is the result
      local fr, ferr = self:send("GET", url)
      if not fr then return nil, ferr end
      if not ok_status(fr.status) then return fail(self, fr, url) end
      return result_of(fr), nil, fr
    elseif terminal then
      return operation_error(self, doc, terminal, url, monitor)
    end
  end
end

local function poll_location(self, method, url, initial, location, wait)
  local resp = initial
  while true do
    local ok, werr = wait(resp, "InProgress", location)
    if not ok then return nil, werr end
    local r, err = self:send("GET", location)
    if not r then return nil, err end
    resp = r
    if r.status == 202 then
      local next_location = errors.header(r, "location")
      if next_location and next_location ~= location then
        if not self:trusted(next_location) then return untrusted(self, next_location, "Location") end
        location = next_location
      end
    elseif r.status == 204 then
      return true, nil, r
    elseif ok_status(r.status) then
      return result_of(r), nil, r
    elseif r.status == 404 and method == "DELETE" then
      return true, nil, r
    else
      return fail(self, r, url)
    end
  end
end

-- Continues an operation from its initial response.
function Arm:poll(resp, method, url, opts)
  opts = opts or {}
  local status = resp.status
  if method == "DELETE" and status == 404 then return true, nil, resp end
  if not ok_status(status) then return fail(self, resp, url) end
  if status == 204 then return true, nil, resp end
  local wait = new_waiter(self, opts, url)
  local async_url = errors.header(resp, "azure-asyncoperation")
  local location = errors.header(resp, "location")
  if async_url and (status == 201 or status == 202 or (status == 200 and method ~= "PUT" and method ~= "PATCH")) then
    if not self:trusted(async_url) then return untrusted(self, async_url, "Azure-AsyncOperation") end
    return poll_async(self, method, url, resp, async_url, wait)
  end
  if status == 202 and location then
    if not self:trusted(location) then return untrusted(self, location, "Location") end
    return poll_location(self, method, url, resp, location, wait)
  end
  local doc = errors.body_json(resp)
  if (method == "PUT" or method == "PATCH") and not is_terminal(provisioning_state(doc)) then
    return poll_state(self, url, doc, resp, wait)
  end
  local state = provisioning_state(doc)
  if state then
    local lower = state:lower()
    if lower == "failed" or lower == "canceled" or lower == "cancelled" then
      return poll_state(self, url, doc, resp, wait)
    end
  end
  if doc == nil then return true, nil, resp end
  return doc, nil, resp
end

local function mutate(self, method, path, body, opts)
  opts = opts or {}
  local url = self:url(path, opts.api_version, 3)
  local resp, err = self:send(method, url, body, opts.headers)
  if not resp then return nil, err end
  if opts.wait == false then
    if method == "DELETE" and resp.status == 404 then return resp end
    if not ok_status(resp.status) then return fail(self, resp, url) end
    return resp
  end
  return self:poll(resp, method, url, opts)
end

function Arm:put(path, body, opts) return mutate(self, "PUT", path, body, opts) end
function Arm:patch(path, body, opts) return mutate(self, "PATCH", path, body, opts) end
function Arm:post(path, body, opts) return mutate(self, "POST", path, body, opts) end
function Arm:delete(path, opts) return mutate(self, "DELETE", path, nil, opts) end

-- ---- paging ------------------------------------------------------------------------------

function Arm:list(path, opts)
  opts = opts or {}
  local url = self:url(path, opts.api_version, 2)
  return client.list(self, path, url, opts, function(doc)
    local next_link = doc.nextLink
    if type(next_link) ~= "string" or next_link == "" then return nil end
    if not self:trusted(next_link) then return untrusted(self, next_link, "nextLink") end
    if not has_query_param(next_link, "api-version") and opts.api_version then
      next_link = add_query(next_link, "api-version", opts.api_version)
    end
    return next_link
  end, "; narrow the query or raise max_pages")
end

return M
