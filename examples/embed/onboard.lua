-- A Lua host of cmkflow (a stock lua5.4 after `make install`): onboards one customer end to end
-- through require "cmkflow", printing each engine event, then the run as JSON.
--   CMKFLOW_EMULATOR=https://127.0.0.1:PORT CMKFLOW_EMULATOR_CA=ca.pem ISV_TENANT=... (as onboard.c)
--   lua5.4 onboard.lua contoso
local cmkflow = require "cmkflow"
local json = require("cmkflow.core").json

local customer = assert(arg[1], "usage: lua5.4 onboard.lua CUSTOMER")
local emulator = os.getenv("CMKFLOW_EMULATOR")
cmkflow.configure {
  cloud = emulator and "emulator" or "azure", endpoint = emulator, ca_file = os.getenv("CMKFLOW_EMULATOR_CA"),
  credentials = {
    isv = { kind = "client_secret", tenant = os.getenv("ISV_TENANT"), client_id = os.getenv("ISV_CLIENT"),
            client_secret = os.getenv("ISV_SECRET") },
    customer = { kind = "client_secret", tenant = os.getenv("CUSTOMER_TENANT"), client_id = os.getenv("CUSTOMER_CLIENT"),
                 client_secret = os.getenv("CUSTOMER_SECRET") },
  },
  subscriptions = { isv = os.getenv("ISV_SUBSCRIPTION"), customer = os.getenv("CUSTOMER_SUBSCRIPTION") },
  on_event = function(ev) io.stderr:write(("[%s] %s %s\n"):format(customer, ev.kind, ev.step or "")) end,
}
local run, err, code = cmkflow.run("onboard", { customer = customer })
if not run then
  io.stderr:write(("%s: %s\n"):format(err.code, err.message))
  os.exit(code)
end
print(json.encode(run))
os.exit(code)
