-- cmkflow handoff RUN_ID --out DIR: the customer kit of a run waiting at its handoff gate
-- (cmkflow.app.kit; docs/handoff.md).
local core = require "cmkflow.core"
local output = require "cmkflow.cli.output"
local pipeline = require "cmkflow.app.pipeline"
local kit = require "cmkflow.app.kit"
local app_runs = require "cmkflow.app.runs"

local json, EXIT = core.json, core.exit

local M = {}

function M.handoff(opts)
  local run_id, rerr = app_runs.resolve(opts[1])
  if not run_id then return output.fail(rerr) end
  opts[1] = run_id
  local h, ctx = pipeline.handoff(run_id)
  if not h then return output.fail(ctx) end
  local written, werr = kit.write(opts.out, h, ctx)
  if not written then return output.fail(pipeline.usage_error(werr)) end
  if opts.output == "json" then
    io.stdout:write(json.encode { run_id = opts[1], files = json.array(written), handoff = h }, "\n")
  else
    io.stdout:write(("customer kit for run %s in %s:\n"):format(opts[1], opts.out))
    for _, p in ipairs(written) do io.stdout:write("  ", p, "\n") end
    io.stdout:write("send the folder to the customer's administrator; README.md tells them what to do\n")
  end
  return EXIT.ok
end

return M
