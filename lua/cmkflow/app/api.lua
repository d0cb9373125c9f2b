-- What the C API calls (core/host.c, core/include/cmkflow.h): runs of a stock workflow by name, a
-- file by path or a chunk, through the same pipeline and engine as the CLI, with the cloud and
-- credentials the host set in code (or a configuration file), the policy and the run store it
-- chose; resume, approve, the run store as data, and events for the host's callback.
-- Every function returns an exit code and a result: a JSON string, nil, or an error table.
local core = require "cmkflow.core"
local errors = require "cmkflow.errors"
local host = require "cmkflow.host"
local pipeline = require "cmkflow.app.pipeline"
local state = require "cmkflow.app.state"
local app_runs = require "cmkflow.app.runs"

local json, EXIT = core.json, core.exit

local M = {}

local settings = { config = nil, policy = nil }
local event_sink -- a C function taking the event as JSON, or nil

local function usage(message)
  return EXIT.usage, errors.new { code = "InvalidInput", kind = "usage", message = message }
end

local function decode_object(text, what)
  if text == nil then return {} end
  local ok, v = pcall(json.decode, text)
  if not ok or type(v) ~= "table" then return nil, what .. " are not a valid JSON object: " .. tostring(v) end
  return v
end

-- The engine's events as JSON for the host's callback (errors as their fields).
local function progress(run_id)
  if not event_sink then return nil end
  return function(e)
    local ev = { kind = e.kind, run_id = run_id, step = e.step, title = e.title, elapsed_ms = e.elapsed_ms,
                 error = e.error and errors.data(e.error) or nil }
    event_sink(json.encode(ev))
  end
end

-- Where a run of this host talks to: its configuration file, else what it set in code.
local function target_opts(opts)
  if settings.config then opts.config = settings.config else opts.host_configured = true end
  opts.policy = settings.policy
  return opts
end

-- A finished engine result as (code, JSON) or (code, error).
local function finished(result)
  if result.status == "succeeded" or result.status == "waiting" then
    return result.status == "succeeded" and EXIT.ok or EXIT.waiting,
           json.encode { run_id = result.run_id, status = result.status, outputs = result.outputs or json.object(),
                         gate = result.gate }
  end
  local err = result.error or errors.new { code = "Interrupted", kind = "interrupt", message = result.status }
  return errors.exit_code(err), err
end

-- run(kind, what, chunkname, params_json): kind "file" (a path or a stock workflow's name) or
-- "string" (a chunk).
function M.run(kind, what, chunkname, params_json)
  local params, perr = decode_object(params_json, "parameters")
  if not params then return usage(perr) end
  local opts = target_opts { params = params }
  if kind == "string" then opts.chunk, opts.chunkname = what, chunkname else opts.workflow = what end
  local prepared, err = pipeline.prepare(opts)
  if not prepared then return errors.exit_code(err), err end
  local run_id
  local on_event = event_sink and function(e) progress(run_id)(e) end
  local result, rerr = pipeline.start(prepared, opts, on_event, function(id) run_id = id end)
  if not result then return errors.exit_code(rerr), rerr end
  return finished(result)
end

function M.resume(run_id)
  local result, err = pipeline.resume(run_id, progress(run_id), { connect = target_opts {}, by = "libcmkflow" })
  if not result then return errors.exit_code(err), err end
  return finished(result)
end

function M.approve(run_id, gate, decision, values_json)
  local values, verr = decode_object(values_json, "gate values")
  if not values then return usage(verr) end
  local ok, err = pipeline.decide(run_id, gate, { reject = decision == "rejected", values = values, by = "libcmkflow" })
  if not ok then return errors.exit_code(err), err end
  return EXIT.ok, nil
end

function M.cancel(run_id)
  local done, err = pipeline.cancel(run_id)
  if not done then return errors.exit_code(err), err end
  return EXIT.ok, json.encode(done)
end

function M.list_runs() return EXIT.ok, json.encode(app_runs.list(1000)) end

function M.show_run(run_id)
  local doc, err = app_runs.show(run_id)
  if not doc then return errors.exit_code(err), err end
  return EXIT.ok, json.encode(doc)
end

function M.set_subscription(context, subscription)
  if type(context) ~= "string" or type(subscription) ~= "string" then return usage("context and subscription") end
  host.contexts[context] = host.contexts[context] or {}
  host.contexts[context].subscription = subscription
  return EXIT.ok, nil
end

function M.set_config(path) settings.config = path return EXIT.ok, nil end
function M.set_policy(path) settings.policy = path return EXIT.ok, nil end
function M.set_state_dir(dir) state.set_dir(dir) return EXIT.ok, nil end
function M.set_event_sink(fn) event_sink = fn return EXIT.ok, nil end

return M
