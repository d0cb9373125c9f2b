-- Response helpers shared by the emulated services: JSON bodies, each service's error envelope,
-- and the headers Azure sends (request ids, client request id echo).
local core = require "cmkflow.core"
local json = core.json

local M = {}

local JSON_CT = "application/json; charset=utf-8"

-- Text echoed from a request into an answer (a grant type, a name, a path) may be any bytes, and
-- JSON strings are UTF-8: invalid bytes become U+FFFD, as a decoder would show them.
local function valid_utf8(s)
  local out, i = {}, 1
  while true do
    local ok, bad = utf8.len(s, i)
    if ok then
      out[#out + 1] = s:sub(i)
      return table.concat(out)
    end
    out[#out + 1] = s:sub(i, bad - 1) .. "\u{FFFD}"
    i = bad + 1
  end
end

local function scrub(v, depth)
  if type(v) == "string" then return valid_utf8(v) end
  if type(v) ~= "table" or depth > 200 then return v end -- the codec refuses deeper ones anyway
  local t = {}
  for k, x in pairs(v) do t[scrub(k, depth + 1)] = scrub(x, depth + 1) end
  return setmetatable(t, getmetatable(v))
end

-- status, headers, body for a JSON value (or a pre-encoded string) with the common headers.
-- req may be nil; when given, x-ms-client-request-id is echoed.
function M.json(req, status, value, headers)
  local h = { ["content-type"] = JSON_CT, ["cache-control"] = "no-cache", ["x-ms-request-id"] = core.crypto.uuid4() }
  if req and req.headers["x-ms-client-request-id"] then
    h["x-ms-client-request-id"] = req.headers["x-ms-client-request-id"]
  end
  for k, v in pairs(headers or {}) do h[k] = v end
  if value == nil then return status, h, "" end
  if type(value) == "string" then return status, h, value end
  return status, h, json.encode(value) or assert(json.encode(scrub(value, 0)))
end

function M.empty(req, status, headers)
  local st, h = M.json(req, status, nil, headers)
  h["content-type"] = nil
  return st, h, ""
end

-- ARM: {"error":{"code","message"[,"target"][,"details"]}}
function M.arm_error(req, status, code, message, extra)
  local err = { code = code, message = message }
  for k, v in pairs(extra or {}) do err[k] = v end
  return M.json(req, status, { error = err })
end

-- Graph: {"error":{"code","message","innerError":{date, request-id, client-request-id}}}
function M.graph_error(req, status, code, message, details)
  local rid = core.crypto.uuid4()
  local err = { code = code, message = message, details = details,
    innerError = { date = os.date("!%Y-%m-%dT%H:%M:%S"), ["request-id"] = rid,
                   ["client-request-id"] = req and req.headers["client-request-id"] or rid } }
  return M.json(req, status, { error = err }, { ["request-id"] = rid })
end

-- Key Vault data plane: {"error":{"code","message","innererror":{"code"}}}
function M.kv_error(req, status, code, message, inner, headers)
  return M.json(req, status, { error = { code = code, message = message,
    innererror = inner and { code = inner } or nil } }, headers)
end

-- Entra token endpoint error (status 400, or 401 for invalid_client).
function M.aad_error(req, oauth_error, aadsts, text)
  local trace, corr = core.crypto.uuid4(), core.crypto.uuid4()
  local ts = os.date("!%Y-%m-%d %H:%M:%SZ")
  local status = oauth_error == "invalid_client" and 401 or 400
  return M.json(req, status, {
    error = oauth_error,
    error_description = ("AADSTS%d: %s\r\nTrace ID: %s\r\nCorrelation ID: %s\r\nTimestamp: %s"):format(aadsts, text, trace, corr, ts),
    error_codes = json.array { aadsts }, timestamp = ts, trace_id = trace, correlation_id = corr,
    error_uri = "https://login.microsoftonline.com/error?code=" .. aadsts,
  }, { ["cache-control"] = "no-store, no-cache" })
end

return M
