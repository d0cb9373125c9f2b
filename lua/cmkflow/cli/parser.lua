-- The command line's parser, built from the command table (cmkflow.cli.commands) over lua-argparse
-- (Debian's lua-argparse 0.7.1, embedded into the binary at build time): parsing, usage errors,
-- `--help` and `cmkflow help COMMAND`, and the bash and zsh completion scripts all come from the one
-- parser it builds.
local argparse = require "argparse"
local commands = require "cmkflow.cli.commands"

local M = {}

M.HELP_WIDTH = 90

-- argparse's result key of an option: its long name with '_' for '-' (positionals: _arg1, ...)
local function target_of(long) return (long:gsub("%-", "_")) end

local HELP_REQUEST = setmetatable({}, { __name = "cmkflow.cli.help_request" })

local function add_option(p, o)
  local names = (o.short and ("-" .. o.short .. " ") or "") .. "--" .. o.long
  local opt
  if o.arg then
    opt = p:option(names, o.description):argname(o.arg)
    if o.choices then opt:choices(o.choices) end
    if o.list then opt:count("*") elseif o.required then opt:count(1) end
  else
    opt = p:flag(names, o.description)
  end
  opt:target(target_of(o.long))
  if o.long == "help" then
    -- raised through argparse's parse to M.parse: the help of the command it was given to
    opt:action(function() error(setmetatable({ parser = p }, HELP_REQUEST), 0) end)
  end
  return opt
end

-- Adds a command of the table (and its subcommands) to parent; fills index[path] = {parser, entry}.
local function add_command(parent, entry, path, depth, index)
  local p = parent:command(entry.name, entry.description):summary(entry.summary)
  p:add_help(false)
  path = path == "" and entry.name or (path .. " " .. entry.name)
  index[path] = { parser = p, entry = entry }
  local own = {}
  for i, a in ipairs(entry.args or {}) do
    local arg = p:argument(a.name:lower(), a.description):argname(a.name):target("_arg" .. i)
    if a.optional then arg:args("?") end
  end
  for _, o in ipairs(entry.options or {}) do own[#own + 1] = add_option(p, o) end
  local global = {}
  for _, o in ipairs(commands.GLOBAL) do global[#global + 1] = add_option(p, o) end
  if #own > 0 then p:group("Options", table.unpack(own)) end
  p:group("Global options", table.unpack(global))
  if entry.commands then
    p:command_target("_cmd" .. (depth + 1))
    p:require_command(entry.default == nil)
    for _, sub in ipairs(entry.commands) do add_command(p, sub, path, depth + 1, index) end
  end
  return p
end

-- The parser of the whole command line: parser, index (command path "runs list" -> {parser, entry}).
function M.build()
  local root = argparse(commands.PROGRAM.name, commands.PROGRAM.description)
  root:add_help(false)
  root:help_max_width(M.HELP_WIDTH)
  root:help_description_margin(30)
  root:usage_max_width(M.HELP_WIDTH)
  root:command_target("_cmd1")
  root:epilog("Run 'cmkflow help COMMAND' (or cmkflow COMMAND --help) for a command's options.\n"
    .. "Exit codes: 0 done, 1 failed, 2 usage, 4 authentication, 6 waiting at an approval gate, "
    .. "7 verify could not check every link, 130 interrupted (docs/exit-codes.md).")
  root:group("Options", add_option(root, commands.GLOBAL[1]))
  local index = { [""] = { parser = root } }
  for _, entry in ipairs(commands.COMMANDS) do add_command(root, entry, "", 1, index) end
  return root, index
end

-- Every option definition along a command path (the command's own, its parents', the globals).
local function option_defs(index, path_words)
  local defs, path = {}, ""
  for _, w in ipairs(path_words) do
    path = path == "" and w or (path .. " " .. w)
    for _, o in ipairs(index[path].entry.options or {}) do defs[#defs + 1] = o end
  end
  for _, o in ipairs(commands.GLOBAL) do defs[#defs + 1] = o end
  return defs
end

-- Parses argv. Returns one of
--   "run", entry (the table's row: module, fn), opts (options by long name, positionals 1..n)
--   "help", text (a --help asked for)
--   "usage", message, usage (the usage line of the command the mistake was made in), that command
--            ("runs prune"; "" for the program)
function M.parse(argv)
  local root, index = M.build()
  local failed
  local ok, result = pcall(root._parse, root, argv, function(p, message)
    failed = { parser = p, message = message }
    error(failed, 0)
  end)
  if not ok then
    if getmetatable(result) == HELP_REQUEST then return "help", result.parser:get_help() end
    if result == failed then
      local command = failed.parser:_get_fullname():gsub("^%S+ ?", "")
      return "usage", failed.message, failed.parser:get_usage(), command
    end
    error(result, 0)
  end
  local words = {}
  for depth = 1, 9 do
    local w = result["_cmd" .. depth]
    if not w then break end
    words[#words + 1] = w
  end
  local node = index[table.concat(words, " ")].entry
  local defs = option_defs(index, words)
  if node.commands then -- no subcommand given: the command's default one
    words[#words + 1] = node.default
    node = index[table.concat(words, " ")].entry
  end
  local opts = {}
  for _, o in ipairs(defs) do
    local v = result[target_of(o.long)]
    if v ~= nil then opts[o.long] = v end
  end
  for i = 1, #(node.args or {}) do opts[i] = result["_arg" .. i] end
  return "run", node, opts, words
end

local built -- the index of one parser, for help and usage texts
local function find(words)
  if not built then built = select(2, M.build()) end
  return built[table.concat(words, " ")]
end

-- The help of a command path ({"runs", "prune"}; {} for the program): text | nil.
function M.help(words)
  local found = find(words)
  return found and found.parser:get_help() or nil
end

-- The usage line(s) of a command path: text | nil.
function M.usage(words)
  local found = find(words)
  return found and found.parser:get_usage() or nil
end

return M
