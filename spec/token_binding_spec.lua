-- Credentials bound to their cloud: the core attaches a token only for the hosts of the cloud the
-- credential was configured for and of the service its scope names; anything else fails before a
-- byte is sent. With the emulator selected, no connection of any kind leaves for another address,
-- and the host starts no other program (no shell) for its own work.
local core = require "cmkflow.core"
local clouds = require "cmkflow.clouds"
local F = require "support.auth_fixtures"
local cli = require "support.cli"
local files = require "support.files"

local PUBLIC = "https://login.microsoftonline.com"
local USGOV = "https://login.microsoftonline.us"
local ARM, GRAPH, VAULT = "https://management.azure.com/.default", "https://graph.microsoft.com/.default",
                          "https://vault.azure.net/.default"

describe("cmkflow.clouds.token_destination", function()
  local CASES = {
    -- authority, scope, url, allowed
    { PUBLIC, ARM, "https://management.azure.com/subscriptions?api-version=2022-12-01", true },
    { PUBLIC, GRAPH, "https://graph.microsoft.com/v1.0/applications", true },
    { PUBLIC, VAULT, "https://kv-contoso.vault.azure.net/keys/k?api-version=7.4", true },
    { PUBLIC, "https://storage.azure.com/.default", "https://st1.blob.core.windows.net/c", true },
    { USGOV, "https://management.usgovcloudapi.net/.default", "https://management.usgovcloudapi.net/x", true },
    { nil, ARM, "https://management.azure.com/x", true },                   -- a managed identity
    { PUBLIC, ARM, "https://127.0.0.1:8443/x", false },                     -- the issue's listener
    { PUBLIC, ARM, "https://graph.microsoft.com/v1.0/me", false },          -- ARM token to Graph
    { PUBLIC, GRAPH, "https://management.azure.com/x", false },             -- Graph token to ARM
    { PUBLIC, VAULT, "https://evil.example/keys", false },
    { PUBLIC, VAULT, "https://a.b.vault.azure.net/keys", false },           -- one label only
    { PUBLIC, VAULT, "https://kv.vault.azure.net.evil.example/keys", false },
    { PUBLIC, ARM, "http://management.azure.com/x", false },                -- never in clear text
    { PUBLIC, ARM, "https://management.azure.com@evil.example/x", false },
    { USGOV, ARM, "https://management.azure.com/x", false },                -- another cloud's service
    { PUBLIC, "https://management.usgovcloudapi.net/.default", "https://management.usgovcloudapi.net/x", false },
    { PUBLIC, "api://AzureADTokenExchange/.default", "https://management.azure.com/x", false },
    { "https://127.0.0.1:9443", ARM, "https://127.0.0.1:9443/x", true },    -- a test authority: itself only
    { "https://127.0.0.1:9443", ARM, "https://management.azure.com/x", false },
  }
  for _, c in ipairs(CASES) do
    it(("%s a %s token from %s to %s"):format(c[4] and "allows" or "refuses", c[2], tostring(c[1]), c[3]), function()
      local ok, why = clouds.token_destination(c[1], c[2], c[3])
      assert.equal(c[4], ok == true, why)
      if not c[4] then assert.is_string(why) end
    end)
  end
end)

describe("the core refuses a token for another host before sending anything", function()
  local srv
  before_each(function() srv = F.start({ tenants = { F.TENANT }, clients = { [F.APP] = { secret = F.SECRET } } }) end)
  after_each(function() srv:stop() end)

  it("an ARM token of the public cloud never reaches a local listener", function()
    local port = srv:url():match(":(%d+)$")
    local cred = core.auth.credential { kind = "client_secret", tenant = F.TENANT, client_id = F.APP,
      client_secret = F.SECRET, authority = PUBLIC, ca_file = F.ca(),
      connect_to = { "login.microsoftonline.com:443:127.0.0.1:" .. port } }
    local ok, err = pcall(F.get, srv:url() .. "/x", cred, ARM)
    assert.is_false(ok)
    assert.equal("TokenDestinationRefused", err.code)
    assert.equal("config", err.kind)
    -- not even the token was fetched: nothing was sent to anyone
    assert.equal(0, #F.journal(srv, "token"))
    assert.equal(0, #F.journal(srv, "resource"))
    -- the same credential reaches the ARM host
    local resp = assert(F.arm_get(srv:url(), "/x", cred))
    assert.equal(200, resp.status)
  end)
end)

describe("with the emulator selected", function()
  it("every connection of a whole onboard goes to the emulator on 127.0.0.1", function()
    local dir = files.tmpdir()
    local trace = dir .. "/connect.trace"
    -- strace sees every connect(2) of the process and its threads (tools/bootstrap --test)
    local cmd = ("cd %s && env -u CMKFLOW_LUA_PATH -u CMKFLOW_CONFIG CMKFLOW_STATE_DIR=%s strace -f -qq -e trace=connect,execve "
      .. "-o %s %s run onboard --output json >%s 2>&1"):format(cli.quote(dir), cli.quote(dir .. "/state"),
      cli.quote(trace), cli.quote(cli.bin), cli.quote(dir .. "/out"))
    local _, _, code = os.execute(cmd)
    assert.equal(0, code, files.read(dir .. "/out", ""))
    local text = files.read(trace, "")
    local inet, elsewhere = 0, {}
    for addr in text:gmatch('inet_addr%("([^"]+)"%)') do
      inet = inet + 1
      if addr ~= "127.0.0.1" then elsewhere[#elsewhere + 1] = addr end
    end
    for addr in text:gmatch('inet_pton%(AF_INET6, "([^"]+)"') do
      inet = inet + 1
      elsewhere[#elsewhere + 1] = addr
    end
    assert.is_true(inet >= 3, "strace saw too few connections:\n" .. text:sub(1, 2000))
    assert.same({}, elsewhere)
    -- and the host ran no other program (no shell, no mkdir, no chmod): one execve, its own
    local execs = {}
    for line in text:gmatch("[^\n]*execve%([^\n]*") do execs[#execs + 1] = line end
    assert.equal(1, #execs, table.concat(execs, "\n"))
  end)
end)
