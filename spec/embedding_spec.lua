-- libcmkflow embedded in a C program (examples/embed/onboard.c, the example of docs/embedding.md):
-- two hosts on two threads each onboard a customer through the C API against one emulator, with
-- events through the callback, the run store as JSON, no signal handler installed, and every
-- connection of the process to the emulator on 127.0.0.1.
local json = require("cmkflow.core").json
local ext = require "support.external_emulator"
local files = require "support.files"
local cli = require "support.cli"
local seed = require "cmkflow.emulator.demo_seed"

local build = os.getenv("CMKFLOW_BUILD_DIR") or "build"

describe("the C API (examples/embed/onboard.c)", function()
  local emu
  setup(function() emu = ext.start {} end)
  teardown(function() if emu then emu:stop() end end)

  it("onboards two customers on two threads against the emulator, and nothing else is contacted", function()
    local isv, customer = seed.tenants[1], seed.tenants[2]
    local dir = files.tmpdir()
    local env = {
      CMKFLOW_STATE_DIR = dir .. "/state", CMKFLOW_EMULATOR = emu.url, CMKFLOW_EMULATOR_CA = emu.ca_cert,
      ISV_TENANT = isv.id, ISV_CLIENT = isv.principals[1].appId, ISV_SECRET = isv.principals[1].secret,
      ISV_SUBSCRIPTION = isv.subscriptions[1].id,
      CUSTOMER_TENANT = customer.id, CUSTOMER_CLIENT = customer.principals[1].appId,
      CUSTOMER_SECRET = customer.principals[1].secret, CUSTOMER_SUBSCRIPTION = customer.subscriptions[1].id,
    }
    local parts = { "env", "-u", "CMKFLOW_LUA_PATH", "-u", "CMKFLOW_CONFIG" }
    for k, v in pairs(env) do parts[#parts + 1] = k .. "=" .. cli.quote(v) end
    local trace = dir .. "/connect.trace"
    local cmd = table.concat(parts, " ") .. " strace -f -qq -e trace=connect -o " .. cli.quote(trace) .. " " ..
      cli.quote(build .. "/embed_onboard") .. " alpha bravo >" .. cli.quote(dir .. "/out") .. " 2>" ..
      cli.quote(dir .. "/err")
    local _, _, code = os.execute(cmd)
    local out, err = files.read(dir .. "/out", ""), files.read(dir .. "/err", "")
    assert.equal(0, code, out .. err)

    local lines = {}
    for line in out:gmatch("[^\n]+") do lines[#lines + 1] = line end
    assert.equal(3, #lines, out)
    for i, name in ipairs { "alpha", "bravo" } do
      local doc = json.decode(lines[i])
      assert.equal("succeeded", doc.status)
      local enc = doc.outputs.storage_account.properties.encryption
      assert.equal("Microsoft.Keyvault", enc.keySource)
      assert.matches("^st" .. name, doc.outputs.storage_account.name)
    end
    local runs = json.decode(lines[3])
    assert.equal(2, #runs)
    for _, r in ipairs(runs) do
      assert.equal("onboard", r.workflow)
      assert.equal("succeeded", r.status)
    end
    -- events reached the callback, per host, as JSON
    assert.matches('%[alpha%] {[^\n]*"kind":"start"', err)
    assert.matches('%[bravo%] {[^\n]*"kind":"done"[^\n]*"step":"storage_account"', err)

    local text = files.read(trace, "")
    local seen, elsewhere = 0, {}
    for addr in text:gmatch('inet_addr%("([^"]+)"%)') do
      seen = seen + 1
      if addr ~= "127.0.0.1" then elsewhere[#elsewhere + 1] = addr end
    end
    for addr in text:gmatch('inet_pton%(AF_INET6, "([^"]+)"') do elsewhere[#elsewhere + 1] = addr end
    assert.is_true(seen >= 2, text:sub(1, 1000))
    assert.same({}, elsewhere)
  end)
end)
