-- What the commands share after parsing (cmkflow.cli.parser parses): usage errors, and workflow
-- parameters from -p/--param NAME=VALUE, -p @FILE.json and --params FILE.
local core = require "cmkflow.core"
local commands = require "cmkflow.cli.commands"
local file = require "cmkflow.util.file"

local M = {}

local json, EXIT = core.json, core.exit

-- Where to read more about a command ("runs prune"; "" or nil: the program); returns the usage
-- exit code.
function M.usage_error_hint(command)
  io.stderr:write("run 'cmkflow help", (command and command ~= "") and (" " .. command) or "", "' for usage\n")
  return EXIT.usage
end

-- Prints a usage problem; returns the usage exit code. command: the command's name for the hint.
function M.usage_error(msg, command)
  io.stderr:write("cmkflow: ", msg, "\n")
  return M.usage_error_hint(command)
end

-- A JSON object of parameters from a file: values | nil, message.
local function params_file(path, option)
  local text = file.read(path)
  if not text then return nil, ("%s: cannot read '%s'"):format(option, path) end
  local ok, doc = pcall(json.decode, text)
  if not ok or type(doc) ~= "table" or doc[1] ~= nil then
    return nil, ("%s: '%s' must hold one JSON object of parameters ({\"customer\": \"contoso\", ...})"):format(option, path)
  end
  for k, v in pairs(doc) do
    if type(k) ~= "string" or (type(v) ~= "string" and type(v) ~= "number" and type(v) ~= "boolean") then
      return nil, ("%s: '%s': parameter '%s' must be a string, number or boolean"):format(option, path, tostring(k))
    end
  end
  return doc
end

-- "k=v" strings (or "@FILE.json") into a table, over values when given; returns it or nil, message.
function M.key_values(list, values)
  values = values or {}
  for _, kv in ipairs(list or {}) do
    if kv:sub(1, 1) == "@" then
      local doc, err = params_file(kv:sub(2), "--param @FILE")
      if not doc then return nil, err end
      for k, v in pairs(doc) do values[k] = v end
    else
      local k, v = kv:match("^([%w_%.%-]+)=(.*)$")
      if not k then return nil, "--param needs name=value, got '" .. kv .. "' (or @FILE.json: a JSON object of parameters)" end
      values[k] = v
    end
  end
  return values
end

-- A command's parameters: every --params FILE, then each -p/--param in order (a later value wins).
function M.params(opts)
  local values = {}
  for _, path in ipairs(opts.params or {}) do
    local doc, err = params_file(path, "--params")
    if not doc then return nil, err end
    for k, v in pairs(doc) do values[k] = v end
  end
  return M.key_values(opts.param, values)
end

-- --output must be one the parser allows; returns true or nil, message.
function M.check_output(output)
  for _, o in ipairs(commands.OUTPUTS) do if output == nil or output == o then return true end end
  return nil, "--output must be " .. table.concat(commands.OUTPUTS, ", ") .. ", not '" .. output .. "'"
end

return M
