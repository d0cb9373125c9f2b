-- `cmkflow __generate man|bash|zsh` (run by the build, CMakeLists.txt): the man page cmkflow(1)
-- from the command table (cmkflow.cli.commands), and the bash and zsh completion scripts that
-- lua-argparse writes from the parser built on the same table (cmkflow.cli.parser).
local core = require "cmkflow.core"
local commands = require "cmkflow.cli.commands"
local parser = require "cmkflow.cli.parser"

local M = {}

-- roff text: a backslash and a leading dot or quote are escaped; "-" is a minus (option names)
local function roff(s)
  s = tostring(s):gsub("\\", "\\e"):gsub("%-", "\\-")
  return (s:gsub("^([.'])", "\\&%1"):gsub("\n([.'])", "\n\\&%1"))
end

local function option_label(o)
  local names = (o.short and ("\\fB\\-" .. o.short .. "\\fR, ") or "") .. "\\fB\\-\\-" .. roff(o.long) .. "\\fR"
  if o.arg then names = names .. " \\fI" .. roff(o.arg) .. "\\fR" end
  return names
end

local function options_text(out, options)
  for _, o in ipairs(options) do
    out[#out + 1] = ".TP"
    out[#out + 1] = option_label(o)
    local d = o.description
    if o.choices and not d:find(o.choices[1], 1, true) then d = d .. " (one of: " .. table.concat(o.choices, ", ") .. ")" end
    if o.list and not d:find("repeatable", 1, true) then d = d .. " (repeatable)" end
    out[#out + 1] = roff(d)
  end
end

local function command_text(out, entry, path)
  path = path and (path .. " " .. entry.name) or entry.name
  local words = {}
  for w in path:gmatch("%S+") do words[#words + 1] = w end
  out[#out + 1] = ".SS " .. roff(path)
  -- the same usage line as `cmkflow COMMAND --help`
  out[#out + 1] = ".nf"
  out[#out + 1] = roff((parser.usage(words):gsub("^Usage: ", ""):gsub("\n%s+", "\n    ")))
  out[#out + 1] = ".fi"
  out[#out + 1] = roff(entry.description)
  for _, a in ipairs(entry.args or {}) do
    out[#out + 1] = ".TP"
    out[#out + 1] = "\\fI" .. roff(a.name) .. "\\fR" .. (a.optional and " (optional)" or "")
    out[#out + 1] = roff(a.description)
  end
  options_text(out, entry.options or {})
  for _, sub in ipairs(entry.commands or {}) do command_text(out, sub, path) end
end

-- The man page cmkflow(1) in roff (man(7)).
function M.man()
  local p = commands.PROGRAM
  local out = {
    ('.TH CMKFLOW 1 "" "cmkflow %s" "User Commands"'):format(core.version),
    ".SH NAME",
    "cmkflow \\- " .. roff(p.summary),
    ".SH SYNOPSIS",
    "\\fBcmkflow\\fR \\fICOMMAND\\fR [\\fIOPTIONS\\fR]",
    ".br",
    "\\fBcmkflow help\\fR [\\fICOMMAND\\fR], \\fBcmkflow\\fR \\fICOMMAND\\fR \\fB\\-\\-help\\fR",
    ".SH DESCRIPTION",
    roff(p.description),
    ".SH GLOBAL OPTIONS",
    "Every command takes these:",
  }
  options_text(out, commands.GLOBAL)
  out[#out + 1] = ".SH COMMANDS"
  for _, entry in ipairs(commands.COMMANDS) do command_text(out, entry) end
  out[#out + 1] = ".SH EXIT STATUS"
  for _, c in ipairs(p.exit_codes) do
    out[#out + 1] = ".TP"
    out[#out + 1] = "\\fB" .. c[1] .. "\\fR"
    out[#out + 1] = roff(c[2])
  end
  out[#out + 1] = ".SH ENVIRONMENT"
  for _, e in ipairs(p.environment) do
    out[#out + 1] = ".TP"
    out[#out + 1] = "\\fB" .. roff(e[1]) .. "\\fR"
    out[#out + 1] = roff(e[2])
  end
  out[#out + 1] = ".SH SEE ALSO"
  out[#out + 1] = roff(p.see_also)
  return table.concat(out, "\n") .. "\n"
end

function M.bash() return (parser.build()):get_bash_complete() end

function M.zsh() return (parser.build()):get_zsh_complete() end

-- what: man, bash or zsh; path: the file to write (stdout when none).
function M.main(what, path)
  local fn = ({ man = M.man, bash = M.bash, zsh = M.zsh })[what or ""]
  if not fn then
    io.stderr:write("cmkflow: __generate needs man, bash or zsh [FILE]\n")
    return core.exit.usage
  end
  local f = io.stdout
  if path then
    local err
    f, err = io.open(path, "w")
    if not f then
      io.stderr:write("cmkflow: __generate: ", tostring(err), "\n")
      return core.exit.failed
    end
  end
  f:write(fn())
  if path then f:close() end
  return core.exit.ok
end

return M
