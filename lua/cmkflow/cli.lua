-- The cmkflow command line: parses argv with the parser built from the command table
-- (cmkflow.cli.commands, cmkflow.cli.parser), applies the global options and runs the command's
-- module under cmkflow.cli (docs/architecture.md). Exit codes: docs/exit-codes.md.
local core = require "cmkflow.core"
local args = require "cmkflow.cli.args"
local parser = require "cmkflow.cli.parser"
local host = require "cmkflow.host"
local log = require "cmkflow.util.log"

local M = {}

local EXIT = core.exit
M.EXIT = EXIT

-- cmkflow help [COMMAND [SUBCOMMAND]]: the help of a command, or of the program.
function M.help(opts)
  local words = { opts[1], opts[2] }
  local text = parser.help(words)
  if not text then
    return args.usage_error(("no command '%s'"):format(table.concat(words, " ")))
  end
  io.stdout:write(text, "\n")
  return EXIT.ok
end

-- --verbose, --debug, --only-show-errors; progress is for people: on when stderr is a terminal,
-- with --progress or -v, never with --only-show-errors.
local function apply_global_options(opts)
  local quiet = opts["only-show-errors"]
  if opts.debug then
    host.set_debug(true)
    log.set_level("debug")
  elseif opts.verbose then
    log.set_level("verbose")
  elseif quiet then
    log.set_level("quiet")
  end
  opts.progress = not quiet and (opts.progress or opts.verbose or opts.debug or core.isatty(2)) or false
  if opts.progress then host.set_retry_notice(2000) end -- a retry that keeps people waiting says why
end

function M.main(argv)
  if argv[1] == nil then
    io.stderr:write(parser.help({}), "\n")
    return EXIT.usage
  end
  if argv[1] == "--version" then argv[1] = "version" end
  -- build time: the man page and the completion scripts, from the same table (cmkflow.cli.generate)
  if argv[1] == "__generate" then return require("cmkflow.cli.generate").main(argv[2], argv[3]) end
  local what, entry, opts, words = parser.parse(argv)
  if what == "help" then
    io.stdout:write(entry, "\n")
    return EXIT.ok
  elseif what == "usage" then
    io.stderr:write("cmkflow: ", entry, "\n", opts, "\n")
    return args.usage_error_hint(words)
  end
  apply_global_options(opts)
  opts.command = table.concat(words, " ")
  return require(entry.module)[entry.fn](opts)
end

return M
