-- application/x-www-form-urlencoded: the body of OAuth token requests (RFC 6749 appendix B) and
-- the percent-encoding under it.
--
--   form.escape(s)      -> s with every byte outside RFC 3986's unreserved set as %XX
--   form.unescape(s)    -> s with "+" as a space and %XX as its byte
--   form.decode(body)   -> {name = value}; a field without "=" has the value ""; empty names
--                          are skipped; of repeated names the last wins
--   form.encode(fields) -> "name=value&..." in sorted name order, so equal tables give equal bodies
local concat, ipairs, pairs, sort, tostring = table.concat, ipairs, pairs, table.sort, tostring
local char, tonumber = string.char, tonumber

local M = {}

local function hex_byte(h) return char(tonumber(h, 16)) end
local function pct(c) return ("%%%02X"):format(c:byte()) end

function M.escape(s)
  return (tostring(s):gsub("[^%w%-%._~]", pct))
end

function M.unescape(s)
  return (s:gsub("+", " "):gsub("%%(%x%x)", hex_byte))
end

function M.decode(body)
  local fields = {}
  for pair in (body or ""):gmatch("[^&]+") do
    local name, value = pair:match("^([^=]*)=?(.*)$")
    if name ~= "" then fields[M.unescape(name)] = M.unescape(value) end
  end
  return fields
end

function M.encode(fields)
  local names = {}
  for name in pairs(fields) do names[#names + 1] = name end
  sort(names, function(a, b) return tostring(a) < tostring(b) end)
  local parts = {}
  for i, name in ipairs(names) do
    parts[i] = M.escape(name) .. "=" .. M.escape(fields[name])
  end
  return concat(parts, "&")
end

return M
