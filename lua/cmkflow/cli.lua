-- The cmkflow command line. Exit codes: docs/exit-codes.md.
local core = require "cmkflow.core"

local M = {}

local EXIT = { ok = 0, failed = 1, usage = 2, auth = 4, waiting = 6, interrupted = 130 }
M.EXIT = EXIT

local USAGE = [[
usage: cmkflow <command> [options]

commands:
  run WORKFLOW [--param k=v]... [--config FILE] [--cloud emulator|azure|usgov|china]
             [--output text|json] [--progress] [--debug]
                      run a workflow (a file, or a stock workflow: onboard, isv-setup, ...);
                      without --config/CMKFLOW_CONFIG it runs against the embedded emulator
  plan WORKFLOW [same options]
                      list every change the run would make, making none
  resume RUN_ID       continue a failed, interrupted or waiting run
  runs list | runs show RUN_ID
                      the run store ($CMKFLOW_STATE_DIR, default ~/.local/state/cmkflow)
  approve RUN_ID GATE [--reject] [--note TEXT] [--param k=v]...
                      decide an approval gate; --param values (e.g. the customer's key_vault_uri
                      and key_name) are handed to the steps after the gate
  emulator [--listen 127.0.0.1:PORT] [--seed FILE] [--state DIR] [--ca-cert OUT.pem]
                      run the Azure emulator in the foreground (PORT 0 picks a free one);
                      prints {"ready":true,"url":...,"ca_cert":...} on stdout when ready
]] .. require("cmkflow.emulator.cli").USAGE .. [[

  demo [--output text|json] [--debug]
                      run the smoke workflow (one token, one ARM call) against the embedded
                      emulator
  version             print the versions of cmkflow and its libraries
  help                this text

Exit codes: 0 done, 1 failed, 2 usage, 4 authentication, 6 waiting at an approval gate,
130 interrupted.
]]

local function usage_error(msg)
  io.stderr:write("cmkflow: ", msg, "\n", "run 'cmkflow help' for usage\n")
  return EXIT.usage
end

-- Parses "--name value", "--name=value" and flags into opts; positional args into opts[1..n].
local function parse(args, spec)
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

function M.version(args)
  local opts, err = parse(args, { output = "value" })
  if not opts then return usage_error(err) end
  local v = core.versions()
  if opts.output == "json" then
    io.stdout:write(core.json.encode(v), "\n")
  else
    io.stdout:write(("cmkflow %s\nLua %s\nlibcurl %s\n%s\nSQLite %s\nlibmicrohttpd %s\njansson %s\n"):format(
      v.cmkflow, v.lua:gsub("^Lua ", ""), v.libcurl, v.openssl, v.sqlite, v.libmicrohttpd, v.jansson))
  end
  return EXIT.ok
end

-- json: the result as one compact line for machines; text: the same, indented for people.
local function print_result(status, result, output)
  if output ~= "json" then
    local value = core.json.decode(result)
    result = core.json.encode(value, { pretty = true }) or result
  end
  io.stdout:write(result, "\n")
  return status
end

local RUN_OPTIONS = { param = "list", output = "value", debug = "flag", config = "value", cloud = "value",
                      progress = "flag" }
local CLOUDS = { emulator = true, azure = true, usgov = true, china = true }

-- Shared by run and plan: options, parameters, cloud. Returns opts or nil, exit status.
local function run_options(args, what)
  local opts, err = parse(args, RUN_OPTIONS)
  if not opts then return nil, usage_error(err) end
  opts.workflow = opts[1]
  if not opts.workflow then return nil, usage_error(what .. " needs a workflow (a file or a stock workflow name)") end
  if opts[2] then return nil, usage_error("unexpected argument '" .. opts[2] .. "'") end
  if opts.output and opts.output ~= "json" and opts.output ~= "text" then
    return nil, usage_error("--output must be text or json, not '" .. opts.output .. "'")
  end
  if opts.cloud and not CLOUDS[opts.cloud] then
    return nil, usage_error("--cloud must be emulator, azure, usgov or china, not '" .. opts.cloud .. "'")
  end
  opts.params = {}
  for _, kv in ipairs(opts.param or {}) do
    local k, v = kv:match("^([%w_%.%-]+)=(.*)$")
    if not k then return nil, usage_error("--param needs name=value, got '" .. kv .. "'") end
    opts.params[k] = v
  end
  -- progress is for people: on when stderr is a terminal, or when asked
  opts.progress = opts.progress or core.isatty(2)
  if opts.debug then require("cmkflow.host").set_debug(true) end
  return opts
end

function M.run(args)
  local opts, status = run_options(args, "run")
  if not opts then return status end
  local code, script_output = require("cmkflow.workflow.runner").run(opts)
  if script_output then return print_result(code, script_output, opts.output) end
  return code
end

function M.plan(args)
  local opts, status = run_options(args, "plan")
  if not opts then return status end
  opts.plan = true
  return require("cmkflow.workflow.runner").run(opts)
end

function M.resume(args)
  local opts, err = parse(args, { output = "value", progress = "flag", debug = "flag" })
  if not opts then return usage_error(err) end
  if not opts[1] then return usage_error("resume needs a RUN_ID (see 'cmkflow runs list')") end
  opts.progress = opts.progress or core.isatty(2)
  if opts.debug then require("cmkflow.host").set_debug(true) end
  return require("cmkflow.workflow.runner").resume(opts[1], opts)
end

function M.runs(args)
  local sub = table.remove(args, 1)
  local opts, err = parse(args, { output = "value" })
  if not opts then return usage_error(err) end
  local runner = require "cmkflow.workflow.runner"
  if sub == "list" then return runner.runs_list(opts) end
  if sub == "show" then
    if not opts[1] then return usage_error("runs show needs a RUN_ID") end
    return runner.runs_show(opts[1], opts)
  end
  return usage_error("runs needs 'list' or 'show RUN_ID'")
end

function M.approve(args)
  local opts, err = parse(args, { reject = "flag", note = "value", param = "list" })
  if not opts then return usage_error(err) end
  if not opts[1] or not opts[2] then return usage_error("approve needs RUN_ID GATE") end
  opts.values = {}
  for _, kv in ipairs(opts.param or {}) do
    local k, v = kv:match("^([%w_%.%-]+)=(.*)$")
    if not k then return usage_error("--param needs name=value, got '" .. kv .. "'") end
    opts.values[k] = v
  end
  return require("cmkflow.workflow.runner").approve(opts[1], opts[2], opts)
end

function M.emulator(args)
  local opts, err = parse(args, require("cmkflow.emulator.cli").OPTIONS)
  if not opts then return usage_error(err) end
  if opts[1] then return usage_error("emulator takes no positional arguments ('" .. opts[1] .. "')") end
  return require("cmkflow.emulator.cli").main(opts, EXIT)
end

-- The smoke workflow (one token, one ARM call through the production code path) against the
-- embedded emulator with its demo seed, whatever configuration is around: the quickest check that
-- a build works. Emulator state lives under the state dir, as for `cmkflow run` without a config.
function M.demo(args)
  local opts, err = parse(args, { output = "value", debug = "flag" })
  if not opts then return usage_error(err) end
  if opts[1] then return usage_error("demo takes no positional arguments ('" .. opts[1] .. "')") end
  local output = opts.output or "text"
  if output ~= "text" and output ~= "json" then
    return usage_error("--output must be text or json, not '" .. output .. "'")
  end
  local host = require "cmkflow.host"
  if opts.debug then host.set_debug(true) end
  local runner = require "cmkflow.workflow.runner"
  runner.start_embedded_emulator()
  local status, out = host.run("module", "workflows.smoke", nil, "{}")
  runner.finish()
  if status ~= EXIT.ok then
    io.stderr:write("cmkflow demo: ", out, "\n")
    return status
  end
  if output == "json" then
    io.stdout:write(out, "\n")
  else
    local result = core.json.decode(out)
    io.stdout:write(("demo: authenticated to tenant %s\ndemo: %s\n"):format(result.tenant, result.summary))
  end
  return EXIT.ok
end

function M.help()
  io.stdout:write(USAGE)
  return EXIT.ok
end

function M.main(args)
  local cmd = table.remove(args, 1)
  if cmd == nil then
    io.stderr:write(USAGE)
    return EXIT.usage
  end
  if cmd == "--help" or cmd == "-h" then cmd = "help" end
  if cmd == "--version" then cmd = "version" end
  local fn = M[cmd]
  if type(fn) ~= "function" or cmd == "main" then
    return usage_error("unknown command '" .. cmd .. "'")
  end
  return fn(args)
end

return M
