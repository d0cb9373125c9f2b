-- The cmkflow command line: the usage text and the command table; each command lives in its own
-- module under cmkflow.cli (docs/architecture.md). Exit codes: docs/exit-codes.md.
local core = require "cmkflow.core"
local args = require "cmkflow.cli.args"

local M = {}

local EXIT = core.exit
M.EXIT = EXIT

-- command -> module under cmkflow.cli and its function (loaded when the command runs: a command
-- pays only for what it uses, `cmkflow version` starts in milliseconds)
local COMMANDS = {
  run = { "cmkflow.cli.run", "run" }, plan = { "cmkflow.cli.run", "plan" },
  resume = { "cmkflow.cli.resume", "resume" }, runs = { "cmkflow.cli.runs", "runs" },
  approve = { "cmkflow.cli.approve", "approve" }, emulator = { "cmkflow.cli.emulator", "emulator" },
  version = { "cmkflow.cli.version", "version" }, demo = { "cmkflow.cli.demo", "demo" },
  handoff = { "cmkflow.cli.handoff", "handoff" },
}

local USAGE = [[
usage: cmkflow <command> [options]

commands:
  run WORKFLOW [--param k=v]... [--config FILE] [--cloud emulator|azure|usgov|china]
             [--output text|json] [--progress] [--debug]
                      run a workflow (a file, or a stock workflow: onboard, isv-setup, ...);
                      without --config/CMKFLOW_CONFIG it runs against the embedded emulator
  plan WORKFLOW [same options]
                      list every change the run would make, making none
  resume RUN_ID [--param k=v]... [--config FILE]
                      continue a failed, interrupted or waiting run; --param approves the gate it
                      waits at with those values; --config: where its config file is now
  runs list | runs show RUN_ID | runs cancel RUN_ID
                      the run store ($CMKFLOW_STATE_DIR, default ~/.local/state/cmkflow); cancel
                      ends a run for good
  handoff RUN_ID --out DIR [--output text|json]
                      write the customer kit of a run waiting at its handoff: README, consent link,
                      an az CLI script, a customer.lua template and the customer-authorize command
  approve RUN_ID GATE [--reject] [--note TEXT] [--param k=v]...
                      decide an approval gate; --param values (e.g. the customer's key_vault_uri
                      and key_name) are checked and handed to the steps after the gate; approve
                      again to correct them until the run has succeeded
  emulator [--listen 127.0.0.1:PORT] [--proxy 127.0.0.1:PORT|off] [--proxy-connections N]
           [--seed FILE] [--state DIR] [--ca-cert OUT.pem]
                      run the Azure emulator in the foreground, on https://127.0.0.1:10443 with an
                      HTTPS proxy for Azure's host names on 127.0.0.1:10444 unless --listen/--proxy
                      say otherwise (PORT 0 picks a free one); prints {"ready":true,"url":...,
                      "ca_cert":...,"proxy":...} on stdout when ready and records itself in its
                      state directory (--state, else ~/.local/state/cmkflow/emulator), where
                      cloud = "emulator" in a config finds it
  emulator state|reset|snapshot NAME|restore NAME|journal [--state DIR | --endpoint URL --ca-cert PEM]
           [--output text|json] [--since SEQ] [--service SERVICE]
                      the control API of a running emulator (found in its state directory)
]] .. require("cmkflow.emulator.cli").USAGE .. [[

  demo [--output text|json] [--debug]
                      run the smoke workflow (one token, one ARM call) against the embedded
                      emulator
  version             print the versions of cmkflow and its libraries
  help                this text

Exit codes: 0 done, 1 failed, 2 usage, 4 authentication, 6 waiting at an approval gate,
7 verify could not check every link, 130 interrupted.
]]

function M.help()
  io.stdout:write(USAGE)
  return EXIT.ok
end

function M.main(argv)
  local cmd = table.remove(argv, 1)
  if cmd == nil then
    io.stderr:write(USAGE)
    return EXIT.usage
  end
  if cmd == "--help" or cmd == "-h" then cmd = "help" end
  if cmd == "--version" then cmd = "version" end
  local entry = COMMANDS[cmd]
  if entry then return require(entry[1])[entry[2]](argv) end
  local fn = M[cmd]
  if type(fn) ~= "function" or cmd == "main" then
    return args.usage_error("unknown command '" .. cmd .. "'")
  end
  return fn(argv)
end

return M
