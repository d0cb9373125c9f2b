-- Command-line parsing shared by the commands: "--name value", "--name=value", flags, positionals.
local core = require "cmkflow.core"

local M = {}

local EXIT = core.exit

-- Prints a usage problem; returns the usage exit code.
function M.usage_error(msg)
  io.stderr:write("cmkflow: ", msg, "\n", "run 'cmkflow help' for usage\n")
  return EXIT.usage
end

-- Parses args by spec {name = "flag" | "value" | "list"} into opts (positionals in opts[1..n]).
-- Returns opts or nil, message.
function M.parse(args, spec)
  local opts, i = { params = {} }, 1
  while i <= #args do
    local a = args[i]
    local name, inline = a:match("^%-%-([%w-]+)=(.*)$")
    name = name or a:match("^%-%-([%w-]+)$")
    if name then
      local kind = spec[name]
      if not kind then return nil, "unknown option --" .. name end
      if kind == "flag" then
        opts[name] = true
      else
        local v = inline
        if v == nil then
          i = i + 1
          v = args[i]
          if v == nil then return nil, "--" .. name .. " needs a value" end
        end
        if kind == "list" then
          opts[name] = opts[name] or {}
          table.insert(opts[name], v)
        else
          opts[name] = v
        end
      end
    else
      table.insert(opts, a)
    end
    i = i + 1
  end
  return opts
end

-- "k=v" strings into a table; returns it or nil, message.
function M.key_values(list)
  local values = {}
  for _, kv in ipairs(list or {}) do
    local k, v = kv:match("^([%w_%.%-]+)=(.*)$")
    if not k then return nil, "--param needs name=value, got '" .. kv .. "'" end
    values[k] = v
  end
  return values
end

-- --output must be text, json or table; returns true or nil, message.
function M.check_output(output)
  if output and output ~= "json" and output ~= "text" and output ~= "table" then
    return nil, "--output must be text, json or table, not '" .. output .. "'"
  end
  return true
end

return M
