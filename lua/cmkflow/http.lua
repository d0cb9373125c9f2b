-- cmkflow.http: HTTP clients over the state's libcurl session (cmkflow.core.http).
--
--   client = http.new{ ca_file?, connect_to?, proxy?, retry?, timeout_ms?, connect_timeout_ms?,
--                      debug?, headers?, credential?, scope?, tenant? }   -- defaults for requests
--   resp, err = client:request(req)
--       req: the fields of session:submit (method, url, headers, body, ...) plus
--            json = value  -> body = JSON text, content-type application/json (unless set)
--       Inside an async task the task waits (other tasks run); outside, the call drives the
--       session until the request has finished.
--       resp = {status, headers, body, attempts, request_id, client_request_id, elapsed_ms,
--               json (decoded on first access when the content type is JSON; nil otherwise or
--               when the body is not valid JSON — then resp.json_error says why)}
--       err: {code, message, target, retryable, ...} (transport failures, exhausted retries with no
--            response, token failures). HTTP error statuses are responses.
--   client:get(url [, req]) / :put / :post / :patch / :delete / :head  -- shorthands
--   http.session() -> the session (stats, set_clock, set_debug)
local core = require "cmkflow.core"
local async = require "cmkflow.async"
local log = require "cmkflow.util.log"

local json = core.json
local pairs, type, error, setmetatable, rawget, rawset, tostring =
  pairs, type, error, setmetatable, rawget, rawset, tostring

local M = {}

local session = core.http.session()

function M.session() return session end

local DEFAULT_KEYS = { "ca_file", "connect_to", "proxy", "timeout_ms", "connect_timeout_ms", "debug",
                       "credential", "scope", "tenant" }
local RETRY_KEYS = { "max_attempts", "base_delay_ms", "max_delay_ms", "max_total_ms" }

local Client = {}
Client.__index = Client
Client.__name = "cmkflow.http.client"

function M.new(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("http.new expects a table of defaults", 2) end
  local defaults = {}
  for _, k in ipairs(DEFAULT_KEYS) do defaults[k] = opts[k] end
  defaults.retry = opts.retry
  defaults.headers = opts.headers
  return setmetatable({ defaults = defaults }, Client)
end

local function is_json_type(ct)
  if type(ct) ~= "string" then return false end
  ct = ct:lower()
  return ct:find("^application/json") ~= nil or ct:find("^application/[%w.+-]*%+json") ~= nil
end

local response_mt = {
  __index = function(resp, k)
    if k ~= "json" then return nil end
    local headers = rawget(resp, "headers")
    if not (headers and is_json_type(headers["content-type"])) then return nil end
    local body = rawget(resp, "body")
    if body == nil or body == "" then return nil end
    local v, err = json.decode(body)
    if v == nil and err then
      rawset(resp, "json_error", tostring(err))
      return nil
    end
    rawset(resp, "json", v)
    return v
  end,
}

-- The request with the client's defaults filled in (the caller's table is not modified).
local function merge(defaults, req)
  local r = {}
  for k, v in pairs(req) do r[k] = v end
  for _, k in ipairs(DEFAULT_KEYS) do
    if r[k] == nil then r[k] = defaults[k] end
  end
  if defaults.retry then
    local retry = {}
    for _, k in ipairs(RETRY_KEYS) do retry[k] = defaults.retry[k] end
    for k, v in pairs(req.retry or {}) do retry[k] = v end
    r.retry = retry
  end
  local headers, seen = {}, {}
  for k, v in pairs(req.headers or {}) do
    headers[k] = v
    seen[k:lower()] = true
  end
  for k, v in pairs(defaults.headers or {}) do
    if not seen[k:lower()] then headers[k] = v end
  end
  if req.json ~= nil then
    if req.body ~= nil then error("http: req.body and req.json are exclusive", 3) end
    local text, err = json.encode(req.json)
    if not text then error("http: req.json cannot be encoded: " .. tostring(err), 3) end
    r.body = text
    if not seen["content-type"] then headers["Content-Type"] = "application/json" end
  end
  r.json = nil
  r.headers = headers
  return r
end

function Client:request(req)
  if type(req) ~= "table" then error("client:request expects a request table", 2) end
  local merged = merge(self.defaults, req)
  local t = session:submit(merged)
  async.wait(t)
  local resp, err = t:result()
  if resp then setmetatable(resp, response_mt) end
  if log.at("verbose") then
    -- one line per request for -v: no query string (it may carry a signature), no header, no body
    log.verbose(("    %s %s -> %s%s"):format(merged.method or "GET", tostring(merged.url):gsub("%?.*$", ""),
      resp and resp.status or tostring(err and err.code or "failed"),
      resp and resp.elapsed_ms and ("  %.2f s"):format(resp.elapsed_ms / 1000) or ""))
  end
  return resp, err
end

for _, method in ipairs { "GET", "PUT", "POST", "PATCH", "DELETE", "HEAD" } do
  Client[method:lower()] = function(self, url, req)
    local r = {}
    for k, v in pairs(req or {}) do r[k] = v end
    r.method, r.url = method, url
    return self:request(r)
  end
end

return M
