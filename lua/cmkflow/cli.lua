-- The cmkflow command line. Exit codes: docs/exit-codes.md.
local core = require "cmkflow.core"

local M = {}

local EXIT = { ok = 0, failed = 1, usage = 2, auth = 4, waiting = 6, interrupted = 130 }
M.EXIT = EXIT

local USAGE = [[
usage: cmkflow <command> [options]

commands:
  run FILE [--param k=v]... [--output text|json] [--cloud azure|usgov|china] [--debug]
                      run a workflow file; AZURE_TENANT_ID, AZURE_CLIENT_ID and
                      AZURE_CLIENT_SECRET (or _CERTIFICATE_PATH, AZURE_FEDERATED_TOKEN_FILE)
                      give the "isv" context, AZURE_SUBSCRIPTION_ID its subscription
  emulator [--listen 127.0.0.1:PORT] [--seed FILE] [--state DIR] [--ca-cert OUT.pem]
                      run the Azure emulator in the foreground (PORT 0 picks a free one);
                      prints {"ready":true,"url":...,"ca_cert":...} on stdout when ready
  demo [--output text|json] [--debug]
                      run the smoke workflow against a local HTTPS test server
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

function M.run(args)
  local opts, err = parse(args, { param = "list", output = "value", debug = "flag", config = "value",
                                  cloud = "value" })
  if not opts then return usage_error(err) end
  local file = opts[1]
  if not file then return usage_error("run needs a workflow file") end
  if opts.output and opts.output ~= "json" and opts.output ~= "text" then
    return usage_error("--output must be text or json, not '" .. opts.output .. "'")
  end
  local params = {}
  for _, kv in ipairs(opts.param or {}) do
    local k, v = kv:match("^([%w_%.%-]+)=(.*)$")
    if not k then return usage_error("--param needs name=value, got '" .. kv .. "'") end
    params[k] = v
  end
  local host = require "cmkflow.host"
  if opts.debug then host.set_debug(true) end
  if opts.cloud then
    if opts.cloud ~= "azure" and opts.cloud ~= "usgov" and opts.cloud ~= "china" then
      return usage_error("--cloud must be azure, usgov or china, not '" .. opts.cloud .. "'")
    end
    host.set_cloud(opts.cloud)
  end
  -- Azure SDK conventions: an environment credential serves the "default" and "isv" contexts
  if os.getenv("AZURE_CLIENT_ID") or os.getenv("AZURE_TENANT_ID") then
    local ok, cred = pcall(core.auth.credential, { kind = "environment", authority = host.current_cloud().authority })
    if not ok then return usage_error(tostring(cred)) end
    for _, ctx in ipairs({ "default", "isv" }) do
      host.set_credential(ctx, cred)
      host.contexts[ctx].subscription = os.getenv("AZURE_SUBSCRIPTION_ID")
    end
  end
  local status, out = host.run("file", file, nil, core.json.encode(params))
  if status ~= EXIT.ok then
    io.stderr:write("cmkflow: ", out, "\n")
    return status
  end
  return print_result(status, out, opts.output)
end

function M.emulator(args)
  local opts, err = parse(args, { listen = "value", seed = "value", state = "value", ["ca-cert"] = "value" })
  if not opts then return usage_error(err) end
  if opts[1] then return usage_error("emulator takes no positional arguments ('" .. opts[1] .. "')") end
  return require("cmkflow.emulator.cli").main(opts, EXIT)
end

function M.demo(args)
  local demo = require "cmkflow.demo"
  return demo.main(args, M)
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
