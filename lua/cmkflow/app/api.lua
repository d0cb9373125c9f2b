-- What the C API runs (cmkflow_host_run_file / cmkflow_host_run_string in core/host.c): a stock
-- workflow by name, a file by path or a chunk, through the same pipeline and engine as the CLI,
-- with the cloud and credentials the host set in code and the run store of $CMKFLOW_STATE_DIR.
local core = require "cmkflow.core"
local errors = require "cmkflow.errors"
local pipeline = require "cmkflow.app.pipeline"

local json, EXIT = core.json, core.exit

local M = {}

-- run(kind, what, chunkname, params_json) -> exit code, result JSON (a run that succeeded or
-- waits at a gate: {run_id, status, outputs, gate}) | error table (any failure).
function M.run(kind, what, chunkname, params_json)
  local params = {}
  if params_json then
    local ok, p = pcall(json.decode, params_json)
    if not ok or type(p) ~= "table" then
      return EXIT.usage, errors.new { code = "InvalidInput", kind = "usage",
                                      message = "parameters are not a valid JSON object: " .. tostring(p) }
    end
    params = p
  end
  local opts = { params = params, host_configured = true }
  if kind == "string" then opts.chunk, opts.chunkname = what, chunkname else opts.workflow = what end
  local prepared, err = pipeline.prepare(opts)
  if not prepared then return errors.exit_code(err), err end
  local result, rerr = pipeline.start(prepared, opts)
  if not result then return errors.exit_code(rerr), rerr end
  if result.status == "succeeded" or result.status == "waiting" then
    local code = result.status == "succeeded" and EXIT.ok or EXIT.waiting
    return code, json.encode { run_id = result.run_id, status = result.status,
                               outputs = result.outputs or json.object(), gate = result.gate }
  end
  return errors.exit_code(result.error), result.error
end

return M
