-- What the ARM and Graph clients share: their constructor's checks, the request they send and
-- how a response becomes a result or an error.
--
--   client.check_spec(spec, "arm.new") -> cloud   (raises for a missing table or http client)
--   client.default_sleep(ms)                      (cmkflow.async's sleep, loaded when first used)
--   client.probe_delay_s(waited_s) -> seconds     (the wait before probing again, below)
--   client.send(self, scope, method, url, body?, headers?) -> resp | nil, err
--   client.ok_status(status) -> 2xx?
--   client.fail(self, resp, url) -> nil, err      (the error envelope of resp)
--   client.result_of(resp) -> the JSON body, or true when there is none
--   client.list(self, path, url, opts, next_page, hint?) -> array | nil, err   (paging, below)
local core = require "cmkflow.core"
local errors = require "cmkflow.azure.errors"
local cloudmod = require "cmkflow.azure.cloud"

local error, ipairs, pairs, require, tostring, type = error, ipairs, pairs, require, tostring, type
local json = core.json

local M = {}

-- The errors blame the caller of the constructor (level 3: past check_spec and new).
function M.check_spec(spec, who)
  if type(spec) ~= "table" then error(who .. " expects a table", 3) end
  if not spec.http then error(who .. ": http (a cmkflow.http client) is required", 3) end
  return cloudmod.get(spec.cloud or "azure")
end

function M.default_sleep(ms)
  return require("cmkflow.async").sleep(ms)
end

-- The wait before probing again for something not ready yet when Azure says nothing of when
-- (a long-running operation without Retry-After: "implement your own retry logic",
-- https://learn.microsoft.com/azure/azure-resource-manager/management/async-operations; a
-- role assignment, a federated credential or a vault's DNS name propagating): 1 s while less
-- than 20 s have been waited, then a tenth of the time waited, at most 30 s. A wait of W seconds
-- is thus seen at most max(1 s, W/10) late (plus one probe's own latency), and costs about
-- 20 + 23 ln(W/20) probes instead of W (docs/performance.md, "Waiting").
M.PROBE_MAX_S = 30
function M.probe_delay_s(waited_s)
  local d = (waited_s or 0) // 10
  if d < 1 then return 1 end
  if d > M.PROBE_MAX_S then return M.PROBE_MAX_S end
  return math.tointeger(d) or d
end

-- Sends one request with self's credential and tenant for scope (retries of 408/429/5xx happen
-- in the http client). Returns the raw response for any status.
function M.send(self, scope, method, url, body, headers)
  local h = {}
  for k, v in pairs(headers or {}) do h[k] = v end
  local req = { method = method, url = url, headers = h, credential = self.credential,
                scope = scope, tenant = self.tenant }
  if body ~= nil then
    if type(body) == "table" then
      req.body = json.encode(body)
    else
      req.body = tostring(body)
    end
    h["Content-Type"] = h["Content-Type"] or "application/json"
  end
  h["Accept"] = h["Accept"] or "application/json"
  return self.http:request(req)
end

function M.ok_status(status)
  return status >= 200 and status < 300
end

function M.fail(self, resp, url)
  return nil, errors.from_response(resp, { tenant = self.tenant, target = url })
end

function M.result_of(resp)
  local doc = errors.body_json(resp)
  if doc == nil then return true end
  return doc
end

-- GETs url and the pages after it (at most opts.max_pages, default 1000) and collects their
-- "value" arrays. next_page(doc) -> the next page's URL | nil at the end | nil, err to stop.
-- hint ends the TooManyPages message; path names the listing in errors.
function M.list(self, path, url, opts, next_page, hint)
  local max_pages = opts.max_pages or 1000
  local items, pages = json.array {}, 0
  while url do
    pages = pages + 1
    if pages > max_pages then
      return nil, errors.new {
        code = "TooManyPages", status = 0, tenant = self.tenant, target = path, retryable = false,
        message = "listing " .. path .. " returned more than " .. tostring(max_pages) .. " pages" .. (hint or ""),
      }
    end
    local resp, err = self:send("GET", url, nil, opts.headers)
    if not resp then return nil, err end
    if not M.ok_status(resp.status) then return M.fail(self, resp, url) end
    local doc = errors.body_json(resp)
    if type(doc) ~= "table" then
      return nil, errors.new {
        code = "InvalidResponse", status = resp.status, tenant = self.tenant, target = url, retryable = false,
        request_id = errors.header(resp, "x-ms-request-id"),
        message = "a list page from " .. url .. " is not a JSON object",
      }
    end
    if type(doc.value) == "table" then
      for _, item in ipairs(doc.value) do items[#items + 1] = item end
    end
    local next_url, next_err = next_page(doc)
    if next_err then return nil, next_err end
    url = next_url
  end
  return items
end

return M
