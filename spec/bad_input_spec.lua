-- Issue 4 point 8: every parameter is checked before any call. Each bad invocation below exits 2
-- with a message saying what to fix, and the external emulator's journal shows no request at all
-- for that run (not even a token request).
local cli = require "support.cli"
local files = require "support.files"
local ext = require "support.external_emulator"

local GUID = "11111111-2222-4333-8444-555555555555"
local VAULT = "https://kv-contoso.vault.azure.net"

-- { workflow, {params...}, expected message (Lua pattern) }
local CASES = {
  { "onboard", { "customer=Bad_Name" }, "parameter 'customer' is invalid: use 2%-40 lowercase letters" },
  { "onboard", { "customer=contoso", "key_size=1024" }, "parameter 'key_size' must be one of 2048, 3072, 4096, got '1024'" },
  { "onboard", { "customer=contoso", "key_size=big" }, "parameter 'key_size' must be a whole number" },
  { "onboard", {}, "parameter 'customer' is required" },
  { "onboard", { "customer=contoso", "colour=blue" }, "unknown parameter 'colour' %(this workflow takes: customer, customer_tenant, key_size%)" },
  { "onboard", { "customer" }, "%-%-param needs name=value, got 'customer'" },
  { "customer-authorize", { "customer=contoso", "app_id=not-a-guid" },
    "parameter 'app_id': GUID 'not%-a%-guid' is invalid: use the form xxxxxxxx%-xxxx" },
  { "customer-authorize", { "customer=contoso" }, "parameter 'app_id' is required" },
  { "new-account", { "customer=contoso", "app_id=" .. GUID, "key_vault_uri=http://x", "key_name=cmk-contoso" },
    "parameter 'key_vault_uri': key vault URI 'http://x' is invalid: use https://{vault%-name}%.vault%.azure%.net" },
  { "new-account", { "customer=contoso", "key_vault_uri=" .. VAULT, "key_name=cmk-contoso" }, "parameter 'app_id' is required" },
  { "isv-setup", { "customer=contoso", "customer_tenant=not_a_tenant" },
    "parameter 'customer_tenant': tenant 'not_a_tenant' is invalid: use the tenant's GUID or a verified domain" },
  { "existing-account", { "customer=contoso", "app_id=" .. GUID, "key_vault_uri=" .. VAULT, "key_name=k", "storage_account=UPPER" },
    "parameter 'storage_account': storage account name 'UPPER' is invalid: use 3%-24 lowercase letters and digits" },
  { "verify", { "customer=contoso", "key_name=bad.name" }, "parameter 'key_name': key name 'bad%.name' is invalid" },
  { "rotate-key", { "customer=contoso", "tracking=sometimes" }, "parameter 'tracking' must be one of versionless, versioned" },
  { "revoke", { "customer=contoso", "app_id=" .. GUID, "key_vault_id=/subscriptions/x" },
    "parameter 'key_vault_id': must be an ARM id /subscriptions/SUB/resourceGroups/RG/providers/Microsoft%.KeyVault/vaults/NAME" },
  { "offboard", { "customer=contoso", "delete_account=maybe" }, "parameter 'delete_account' must be true or false, got 'maybe'" },
  { "bulk-onboard", { "file=@bad.csv" }, "line 3: parameter 'customer' is invalid" },
}

-- Only the stock workflows this build has (others may still be on their way).
local function exists(name) return cli.run({ "plan", name, "--param", "zz=1" }).stderr:match("no stock workflow") == nil end

describe("bad input", function()
  local emu, config, csv

  setup(function()
    emu = ext.start()
    config = emu:config()
    csv = files.write(emu.dir .. "/bad.csv", "customer,key_size\ncontoso,2048\nBad_Name,3072\n")
  end)
  teardown(function() if emu then emu:stop() end end)

  for _, c in ipairs(CASES) do
    local wf, params, want = c[1], c[2], c[3]
    it(("%s %s: exit 2, says what to fix, no request"):format(wf, table.concat(params, " ")), function()
      if not exists(wf) then
        pending("no stock workflow " .. wf .. " in this build")
        return
      end
      local args = { "run", wf, "--config", config }
      for _, p in ipairs(params) do
        args[#args + 1] = "--param"
        args[#args + 1] = (p:gsub("@bad%.csv", csv))
      end
      local since = emu:mark() - 1
      local dir = files.tmpdir()
      local r = cli.run(args, { CMKFLOW_STATE_DIR = dir })
      os.execute("rm -rf " .. files.quote(dir))
      assert.equal(2, r.code, r.stderr)
      assert.matches(want, r.stderr)
      assert.equal("", r.stdout)
      local requests = emu:journal(since)
      assert.equal(0, #requests, #requests > 0 and (requests[1].method .. " " .. requests[1].path) or nil)
    end)
  end

  it("the same emulator does see a good run's requests (the journal check above is live)", function()
    local since = emu:mark() - 1
    local r = cli.run({ "run", "onboard", "--param", "customer=contoso", "--config", config, "--output", "json" },
                      { CMKFLOW_STATE_DIR = files.tmpdir() })
    assert.equal(0, r.code, r.stderr)
    assert.is_true(#emu:journal(since) >= 10)
  end)
end)
