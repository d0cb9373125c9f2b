-- Client-side checks of Azure names and identifiers, done before any request so that the
-- operator gets a message saying what to fix instead of a 400 from Azure.
-- Every check returns true, or nil and a message: "storage account name 'My_Acct' is invalid: ...".
local tonumber, tostring, type = tonumber, tostring, type
local utf8_len = utf8.len

local M = {}

-- the value as shown in a message: quoted, shortened, control characters escaped
local function show(v)
  if type(v) ~= "string" then return tostring(v) end
  local s = v
  if #s > 64 then s = s:sub(1, 61) .. "..." end
  s = s:gsub("[%c]", function(c) return ("\\x%02x"):format(c:byte()) end)
  return "'" .. s .. "'"
end

local function fail(what, v, fix)
  return nil, what .. " " .. show(v) .. " is invalid: " .. fix
end

local function need_string(what, v)
  if type(v) ~= "string" or v == "" then
    return nil, what .. " is missing" .. (v ~= nil and (" (got " .. type(v) .. ")") or "")
  end
  return true
end

local GUID = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"

function M.guid(v, what)
  what = what or "GUID"
  local ok, err = need_string(what, v)
  if not ok then return nil, err end
  if not v:match(GUID) then
    return fail(what, v, "use the form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx (hexadecimal)")
  end
  return true
end

-- A DNS name of at least two labels, each 1-63 letters, digits and hyphens, not starting or ending
-- with a hyphen.
local function dns_name(v)
  if #v > 253 or not v:find(".", 1, true) then return false end
  for label in (v .. "."):gmatch("([^.]*)%.") do
    if #label < 1 or #label > 63 or not label:match("^[%w%-]+$")
       or label:sub(1, 1) == "-" or label:sub(-1) == "-" then
      return false
    end
  end
  return true
end

function M.tenant(v)
  local ok, err = need_string("tenant", v)
  if not ok then return nil, err end
  if v:match(GUID) then return true end
  local lower = v:lower()
  if lower == "common" or lower == "organizations" or lower == "consumers" then
    return fail("tenant", v, "name a specific tenant (its GUID or a verified domain such as contoso.onmicrosoft.com), "
                .. "not '" .. lower .. "'")
  end
  if not dns_name(v) then
    return fail("tenant", v, "use the tenant's GUID or a verified domain such as contoso.onmicrosoft.com")
  end
  return true
end

function M.subscription(v)
  return M.guid(v, "subscription id")
end

function M.resource_group(v)
  local ok, err = need_string("resource group name", v)
  if not ok then return nil, err end
  local n = utf8_len(v)
  local fix = "use 1-90 letters, digits, underscores, hyphens, periods and parentheses, not ending in a period"
  if not n or n > 90 then return fail("resource group name", v, fix) end
  -- \w in the service's pattern includes non-ASCII letters: bytes >= 0x80 are let through.
  if not v:match("^[%w_%-%.%(%)\128-\255]+$") then return fail("resource group name", v, fix) end
  if v:sub(-1) == "." then return fail("resource group name", v, "it must not end in a period") end
  return true
end

function M.storage_account(v)
  local ok, err = need_string("storage account name", v)
  if not ok then return nil, err end
  if #v < 3 or #v > 24 or not v:match("^[a-z0-9]+$") then
    return fail("storage account name", v, "use 3-24 lowercase letters and digits")
  end
  return true
end

function M.key_vault(v)
  local what = "key vault name"
  local ok, err = need_string(what, v)
  if not ok then return nil, err end
  if #v < 3 or #v > 24 then return fail(what, v, "use 3-24 characters (letters, digits and hyphens)") end
  if not v:match("^[%w%-]+$") then return fail(what, v, "use only letters, digits and hyphens") end
  if not v:match("^%a") then return fail(what, v, "it must start with a letter") end
  if not v:match("%w$") then return fail(what, v, "it must end with a letter or digit") end
  if v:find("--", 1, true) then return fail(what, v, "it must not contain consecutive hyphens") end
  return true
end

function M.user_assigned_identity(v)
  local what = "user-assigned identity name"
  local ok, err = need_string(what, v)
  if not ok then return nil, err end
  if #v < 3 or #v > 128 or not v:match("^[%w][%w_%-]*$") then
    return fail(what, v, "use 3-128 letters, digits, hyphens and underscores, starting with a letter or digit")
  end
  return true
end

function M.key_name(v)
  local what = "key name"
  local ok, err = need_string(what, v)
  if not ok then return nil, err end
  if #v > 127 or not v:match("^[%w%-]+$") then
    return fail(what, v, "use 1-127 letters, digits and hyphens")
  end
  return true
end

function M.key_version(v)
  local what = "key version"
  local ok, err = need_string(what, v)
  if not ok then return nil, err end
  if #v > 64 or not v:match("^%w+$") then
    return fail(what, v, "use the version id from the key's kid (letters and digits, typically 32 hex characters)")
  end
  return true
end

function M.location(v)
  local ok, err = need_string("location", v)
  if not ok then return nil, err end
  if #v > 64 or not v:match("^[a-z0-9]+$") then
    return fail("location", v, "use the lowercase region name without spaces, e.g. 'westeurope'")
  end
  return true
end

function M.api_version(v)
  local ok, err = need_string("api-version", v)
  if not ok then return nil, err end
  local y, m, d = v:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)$")
  if not y then y, m, d = v:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)%-preview$") end
  if not y or tonumber(m) < 1 or tonumber(m) > 12 or tonumber(d) < 1 or tonumber(d) > 31 then
    return fail("api-version", v, "use YYYY-MM-DD or YYYY-MM-DD-preview, e.g. '2023-01-01'")
  end
  return true
end

local function split_https(v)
  local host, rest = v:match("^https://([^/?#]+)(.*)$")
  if not host then return nil end
  local name, port = host:match("^([^:]+):(%d+)$")
  if port then
    if tonumber(port) < 1 or tonumber(port) > 65535 then return nil end
    host = name
  end
  return host, rest, port
end

function M.https_url(v, what)
  what = what or "URL"
  local ok, err = need_string(what, v)
  if not ok then return nil, err end
  if v:find("[%s%c\"<>\\^`{|}]") then return fail(what, v, "it must not contain spaces or quotes") end
  local host = split_https(v)
  if not host then return fail(what, v, "use an https:// URL with a host name") end
  if host:find("@", 1, true) then return fail(what, v, "it must not carry a user name or password") end
  if not host:match("^[%w%.%-]+$") and not host:match("^%[[%x:]+%]$") then
    return fail(what, v, "the host name may only hold letters, digits, dots and hyphens")
  end
  return true
end

-- https://{name}.{suffix}[/] (suffix defaults to the public cloud's vault.azure.net).
-- Returns true, vault name.
function M.key_vault_uri(v, suffix)
  local what = "key vault URI"
  suffix = (suffix or "vault.azure.net"):lower()
  local ok, err = need_string(what, v)
  if not ok then return nil, err end
  local example = "https://{vault-name}." .. suffix
  local host, rest, port = split_https(v)
  if not host then return fail(what, v, "use " .. example) end
  if port and port ~= "443" then return fail(what, v, "use " .. example .. " without a port") end
  if rest ~= "" and rest ~= "/" then
    return fail(what, v, "use " .. example .. " without a path, query or fragment (the key name is separate)")
  end
  local lower = host:lower()
  local name = lower:sub(1, #lower - #suffix - 1)
  if #lower <= #suffix + 1 or lower:sub(-#suffix - 1) ~= "." .. suffix then
    return fail(what, v, "use " .. example)
  end
  local nok, nerr = M.key_vault(name)
  if not nok then return nil, what .. " " .. show(v) .. " is invalid: " .. nerr end
  return true, name
end

-- The workflow parameter types these validators back (cmkflow.workflow.params.register_types).
M.PARAM_TYPES = {
  guid = M.guid, tenant = M.tenant, subscription = M.subscription, location = M.location,
  resource_group = M.resource_group, storage_account = M.storage_account, key_vault = M.key_vault,
  user_assigned_identity = M.user_assigned_identity, key_name = M.key_name, https_url = M.https_url,
  key_vault_uri = M.key_vault_uri,
}

return M
