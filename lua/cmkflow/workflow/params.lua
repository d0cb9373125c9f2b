-- Typed workflow parameters. A workflow declares
--   params = { customer = { type = "string", required = true, pattern = "^[a-z0-9-]+$",
--                           description = "..." },
--              key_size = { type = "integer", enum = { 2048, 3072, 4096 }, default = 3072 }, ... }
-- and every value (from --param k=v, all strings, or from JSON) is checked and converted before
-- any call is made. Built-in types: string, integer, number, boolean; `enum = {...}` on any type.
-- Domain types (guid, tenant, storage_account, key_vault_uri, ...) come from a registry the layer
-- that knows them fills (the Azure layer's cmkflow.azure.validate.PARAM_TYPES, registered by the
-- application layer): this engine knows nothing of Azure (docs/architecture.md).
local M = {}

-- type name -> function(value) -> true | nil, message
local registered = {}

-- Adds domain types: types = { name = validator }. A built-in type cannot be replaced.
function M.register_types(types)
  for name, fn in pairs(types) do
    if type(fn) ~= "function" then error("parameter type '" .. tostring(name) .. "' needs a validator function", 2) end
    if M.BUILTIN[name] then error("parameter type '" .. name .. "' is built in", 2) end
    registered[name] = fn
  end
end

function M.known_type(name) return M.BUILTIN[name] ~= nil or registered[name] ~= nil end

local function convert_integer(v)
  if math.type(v) == "integer" then return v end
  if type(v) == "string" and v:match("^%-?%d+$") then return math.tointeger(tonumber(v)) end
  return nil
end

local CONVERT = {
  string = function(v) return type(v) == "string" and v or nil end,
  integer = convert_integer,
  number = function(v) return type(v) == "number" and v or (type(v) == "string" and tonumber(v)) or nil end,
  boolean = function(v)
    if type(v) == "boolean" then return v end
    if v == "true" or v == "yes" or v == "1" then return true end
    if v == "false" or v == "no" or v == "0" then return false end
    return nil
  end,
}

M.BUILTIN = CONVERT

local TYPE_HINT = { integer = "a whole number", number = "a number", boolean = "true or false", string = "text" }

local function check_one(name, spec, value)
  local t = spec.type or "string"
  local v = value
  if CONVERT[t] then
    v = CONVERT[t](value)
    if v == nil then
      return nil, ("parameter '%s' must be %s, got '%s'"):format(name, TYPE_HINT[t], tostring(value))
    end
  elseif registered[t] then
    if type(value) ~= "string" then
      return nil, ("parameter '%s' must be text, got %s"):format(name, type(value))
    end
    local ok, err = registered[t](value)
    if not ok then return nil, ("parameter '%s': %s"):format(name, err) end
  else
    error(("workflow declares parameter '%s' with unknown type '%s'"):format(name, tostring(t)), 0)
  end
  if spec.enum then
    local found = false
    for _, e in ipairs(spec.enum) do if e == v then found = true end end
    if not found then
      local opts = {}
      for _, e in ipairs(spec.enum) do opts[#opts + 1] = tostring(e) end
      return nil, ("parameter '%s' must be one of %s, got '%s'"):format(name, table.concat(opts, ", "), tostring(value))
    end
  end
  if spec.pattern and type(v) == "string" and not v:match(spec.pattern) then
    return nil, ("parameter '%s' is invalid: %s"):format(name, spec.hint or ("must match " .. spec.pattern))
  end
  if spec.min and type(v) == "number" and v < spec.min then
    return nil, ("parameter '%s' must be at least %s, got %s"):format(name, spec.min, v)
  end
  if spec.max and type(v) == "number" and v > spec.max then
    return nil, ("parameter '%s' must be at most %s, got %s"):format(name, spec.max, v)
  end
  if spec.check then
    local ok, err = spec.check(v)
    if not ok then return nil, ("parameter '%s': %s"):format(name, err) end
  end
  return v
end

-- Checks given (a table of raw values) against specs. Returns the converted values, or nil and a
-- list of messages (one per problem: unknown names, missing required values, invalid values).
function M.check(specs, given)
  local out, problems = {}, {}
  for name in pairs(given) do
    if not specs[name] then
      local known = {}
      for k in pairs(specs) do known[#known + 1] = k end
      table.sort(known)
      problems[#problems + 1] = ("unknown parameter '%s' (this workflow takes: %s)"):format(name,
        #known > 0 and table.concat(known, ", ") or "no parameters")
    end
  end
  local names = {}
  for name in pairs(specs) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    local spec = specs[name]
    local value = given[name]
    if value == nil or value == "" then
      if spec.required then
        problems[#problems + 1] = ("parameter '%s' is required%s"):format(name,
          spec.description and (": " .. spec.description) or "")
      elseif spec.default ~= nil then
        out[name] = spec.default
      end
    else
      local v, err = check_one(name, spec, value)
      if v == nil then problems[#problems + 1] = err else out[name] = v end
    end
  end
  if #problems > 0 then return nil, problems end
  return out
end

return M
