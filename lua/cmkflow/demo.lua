-- `cmkflow demo`: start a local HTTPS server (in-process, its own CA) that plays Entra ID and
-- ARM, configure a client-secret credential against it through the real Azure hostnames
-- (CONNECT_TO), and run the smoke workflow's step. No Azure, no network beyond 127.0.0.1.
local core = require "cmkflow.core"
local host = require "cmkflow.host"
local json = core.json

local M = {}

local function write_file(path, content)
  local f = assert(io.open(path, "wb"))
  f:write(content)
  f:close()
end

function M.main(args, cli)
  local output = "text"
  for i, a in ipairs(args) do
    if a == "--output" then output = args[i + 1] or "" end
    if a:match("^%-%-output=") then output = a:sub(10) end
    if a == "--debug" then host.set_debug(true) end
  end
  if output ~= "text" and output ~= "json" then
    io.stderr:write("cmkflow: --output must be text or json\n")
    return cli.EXIT.usage
  end

  local ca_pem, ca_key = core.server.make_ca("cmkflow demo CA")
  local cert_pem, key_pem = core.server.make_cert(ca_pem, ca_key, core.server.default_names())
  local ca_file = os.tmpname()
  write_file(ca_file, ca_pem)

  local tenant, subscription, client_id = core.crypto.uuid4(), core.crypto.uuid4(), core.crypto.uuid4()
  -- a throwaway secret shared only with the in-process demo server
  local secret = core.crypto.b64url_encode(core.crypto.random_bytes(24))
  local srv <close> = core.server.start {
    listen = "127.0.0.1:0", tls = true, cert_pem = cert_pem, key_pem = key_pem,
    handler_module = "cmkflow.demo_server",
    config = json.encode({ tenant = tenant, client_id = client_id, client_secret = secret,
                           subscription = subscription }),
  }
  io.stderr:write(("cmkflow demo: local Azure test server at %s (CA %s)\n"):format(srv:url(), ca_file))

  host.set_cloud("emulator", srv:url(), ca_file)
  local cloud = host.current_cloud()
  host.set_credential("isv", core.auth.credential {
    kind = "client_secret", tenant = tenant, client_id = client_id, client_secret = secret,
    authority = cloud.authority, ca_file = ca_file, connect_to = cloud.connect_to,
  })
  secret = nil

  -- the smoke workflow's step (workflows/smoke.lua), on the isv context alone
  local ok, result = pcall(require("cmkflow.workflow.cmk").list_subscriptions,
    { context = host.context, log = function(fmt, ...) io.stderr:write(fmt:format(...), "\n") end })
  os.remove(ca_file)
  if not ok then
    io.stderr:write("cmkflow demo: ", tostring(result), "\n")
    return cli.EXIT.failed
  end
  if output == "json" then
    io.stdout:write(json.encode(result), "\n")
  else
    io.stdout:write(("demo: authenticated to tenant %s\ndemo: %s\n"):format(result.tenant, result.summary))
  end
  return cli.EXIT.ok
end

return M
