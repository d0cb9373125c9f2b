-- The embedded Azure emulator: with no configuration, `cmkflow` starts the emulator in-process with
-- the demo seed (state under the state directory, so resume finds it) and configures the "isv"
-- and "customer" contexts with the seed's principals.
local core = require "cmkflow.core"
local json = core.json
local host = require "cmkflow.host"
local state = require "cmkflow.app.state"
local ecli = require "cmkflow.emulator.cli"
local seed = require "cmkflow.emulator.demo_seed"
local http = require "cmkflow.http"
local log = require "cmkflow.util.log"

local M = {}

local running

-- Starts it once per process; returns {server, url}.
function M.start()
  if running then return running end
  local dir = state.dir() .. "/emulator"
  assert(core.fs.mkdir_p(dir, tonumber("700", 8)))
  local ca_pem, ca_key = ecli.certificate_authority(dir)
  local cert, key = core.server.make_cert(ca_pem, ca_key, core.server.default_names())
  -- CMKFLOW_EMULATOR_KNOBS: a knobs file, as `cmkflow emulator --knobs FILE` (docs/configuration.md)
  local knobs_file, knobs = os.getenv("CMKFLOW_EMULATOR_KNOBS"), nil
  if knobs_file and knobs_file ~= "" then
    local err
    knobs, err = ecli.parse_knobs { knobs = knobs_file }
    if err then error("CMKFLOW_EMULATOR_KNOBS: " .. err, 0) end
  end
  local srv = assert(core.server.start { listen = "127.0.0.1:0", tls = true, cert_pem = cert, key_pem = key,
    handler_module = "cmkflow.emulator", config = json.encode({ state_dir = dir, knobs = knobs }) })
  host.set_cloud("emulator", srv:url(), dir .. "/ca.pem")
  local c = host.current_cloud()
  for i, ctx in ipairs({ "isv", "customer" }) do
    local t = seed.tenants[i]
    local pr = t.principals[1]
    host.set_credential(ctx, core.auth.credential { kind = "client_secret", tenant = t.id, client_id = pr.appId,
      client_secret = pr.secret, authority = c.authority, ca_file = c.ca_file, connect_to = c.connect_to })
    host.contexts[ctx].subscription = t.subscriptions[1].id
    host.contexts[ctx].tenant = t.id
  end
  log.notice(("cmkflow: no configuration: running against the embedded Azure emulator at %s (demo seed)")
    :format(srv:url()))
  running = { server = srv, url = srv:url() }
  return running
end

-- Before the process exits: the embedded emulator writes its state now (resume finds it).
function M.finish()
  if not running then return end
  local client = http.new { ca_file = host.current_cloud().ca_file, retry = { max_attempts = 1 } }
  client:request { method = "POST", url = running.url .. "/_emulator/save" }
end

return M
