-- The one error shape, from the C core to the CLI and the C API (docs/architecture.md#errors).
--
--   { code, message,              -- always
--     tenant,                     -- the party that must act: "isv" | "customer" | a tenant id
--     hint,                       -- what to do about it
--     status, request_id,         -- of the HTTP answer it came from, when it did
--     retryable,                  -- would the same call later succeed
--     kind }                      -- auth | config | usage | network | tls | remote | timeout
--                                 --   | interrupt | internal | unverified; decides the exit code
--
-- The C core (core/lerror.c) makes these tables for transport and token failures, the Azure layer
-- (cmkflow.azure.errors) decodes each service's envelope into them, and code above that decides
-- on fields, never on message text. Interruption is one sentinel table compared by identity.
local core = require "cmkflow.core"

local cerror, EXIT = core.error, core.exit
local ipairs, pairs, tostring, type = ipairs, pairs, tostring, type

local M = {}

M.new = cerror.new
M.is = cerror.is
M.interrupt = cerror.interrupt
M.is_interrupt = cerror.is_interrupt

-- Any raised value as an error table: error tables stay as they are; a table without the
-- metatable keeps its fields (code and message filled in); anything else (a Lua error in a step,
-- a string) becomes {code = "InternalError", kind = "internal", message = text}.
function M.from(value)
  if cerror.is(value) then return value end
  if type(value) == "table" then
    local t = {}
    for k, v in pairs(value) do t[k] = v end
    t.code = type(t.code) == "string" and t.code or "Error"
    t.message = type(t.message) == "string" and t.message or "(an error table without a message)"
    return cerror.new(t)
  end
  return cerror.new { code = "InternalError", kind = "internal", retryable = false, message = tostring(value) }
end

-- The exit code for a failure (docs/exit-codes.md), from its kind.
local EXIT_FOR_KIND = { auth = EXIT.auth, config = EXIT.usage, usage = EXIT.usage, interrupt = EXIT.interrupted,
                        unverified = EXIT.unverified }
function M.exit_code(err)
  if err == nil then return EXIT.ok end
  if cerror.is_interrupt(err) then return EXIT.interrupted end
  return EXIT_FOR_KIND[type(err) == "table" and err.kind or nil] or EXIT.failed
end

-- The plain fields of an error, for the journal and --output json (no metatable, no functions).
local FIELDS = { "code", "message", "tenant", "hint", "status", "request_id", "retryable", "kind", "target",
                 "field", "step", "inner_code", "detail_code", "challenge_tenant", "cause_code", "azure_tenant" }
function M.data(err)
  err = M.from(err)
  local t = {}
  for _, k in ipairs(FIELDS) do
    local v = err[k]
    local tv = type(v)
    if tv == "string" or tv == "boolean" or (tv == "number" and not (k == "status" and v == 0)) then t[k] = v end
  end
  return t
end

-- Who must act, for people: "ISV tenant" from tenant = "isv", "customer tenant" from "customer".
-- Only the step library knows which party's tenant a call went to; an error that names a tenant
-- id only (a transport failure, a bare service answer) blames nobody.
local PARTY = { isv = "ISV tenant", customer = "customer tenant" }
function M.party(err)
  return PARTY[type(err) == "table" and err.tenant or false]
end

-- One line for people: "code: message [ISV tenant must fix this]"; the code appears once even
-- when the service repeats it in its message (Entra: "AADSTS7000215: ...", at the start or after
-- what a step says about the call).
function M.text(err)
  err = M.from(err)
  local msg = err.message or ""
  local code = err.code
  if code and msg:sub(1, #code) == code then msg = msg:sub(#code + 1):gsub("^[:%s]+", "") end
  local at = code and code ~= "" and msg:find(": " .. code .. ": ", 1, true)
  if at then msg = msg:sub(1, at + 1) .. msg:sub(at + #code + 4) end
  local s = code and (code .. ": " .. msg) or msg
  local party = M.party(err)
  if party then s = s .. " [" .. party .. " must fix this]" end
  return s
end

return M
