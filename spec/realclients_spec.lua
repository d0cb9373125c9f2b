-- Issue 3 point 9 and issue 12 point 5: the real Microsoft clients (Debian's az CLI 2.45 and the
-- Azure SDK for Python) run the cross-tenant CMK scenario against `cmkflow emulator`, reaching it
-- through the emulator's HTTPS proxy with nothing but HTTPS_PROXY and its CA (tools/realclients/run;
-- docs/realclients.md). No namespace, no root: run as root, the spec runs the harness as nobody
-- (setpriv), which is where `unshare` used to fail. The run happens once; each step is its own test.
local tokens = require "cmkflow.emulator.tokens"

local SOURCE = os.getenv("CMKFLOW_SOURCE_DIR") or "."
local BIN = os.getenv("CMKFLOW_BIN") or (SOURCE .. "/build/cmkflow")

local function quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- Every step each script reports, in order; each must pass.
local STEPS = {
  az = { "isv cloud", "isv login", "isv group create", "isv app create", "isv identity create",
         "isv federated-credential create", "customer cloud", "customer login", "customer sp create",
         "customer group create", "customer keyvault create", "customer key create (az rest)",
         "customer role assignment (az rest)", "isv storage account create", "isv storage account show" },
  sdk = { "isv login", "isv group create", "isv app create (Graph REST)", "isv identity create",
          "isv federated-credential create (Graph REST)", "customer login", "customer sp create (Graph REST)",
          "customer group create", "customer keyvault create", "customer key create (KeyClient)",
          "customer role assignment", "isv storage account create", "isv storage account show" },
  -- the customer kit's az script, unmodified (tools/realclients/kit.sh; docs/handoff.md)
  kit = { "isv onboard (cmkflow)", "handoff (cmkflow)", "customer.sh (az)", "customer.sh again (az)",
          "isv resume (cmkflow)" },
}
local function as_root()
  local p = assert(io.popen("id -u"))
  local uid = p:read("l")
  p:close()
  return uid == "0"
end

local run -- { code, output, passed = { az = {step = index}, sdk = ... }, failed = { az = "line" } }
local function run_once()
  if run then return run end
  local out = os.tmpname()
  local cmd = ("cd %s && CMKFLOW_BIN=%s timeout 280 tools/realclients/run >%s 2>&1"):format(quote(SOURCE), quote(BIN), quote(out))
  local home
  if as_root() then
    -- unprivileged: nobody, its own HOME, no supplementary groups
    home = assert(io.popen("mktemp -d /tmp/cmkflow-rc-home.XXXXXX")):read("l")
    os.execute("chown nobody:nogroup " .. quote(home))
    cmd = ("cd %s && setpriv --reuid=nobody --regid=nogroup --clear-groups env HOME=%s CMKFLOW_BIN=%s "
      .. "timeout 280 tools/realclients/run >%s 2>&1"):format(quote(SOURCE), quote(home), quote(BIN), quote(out))
  end
  local ok, how, code = os.execute(cmd)
  if home then os.execute("rm -rf " .. quote(home)) end
  local f = assert(io.open(out, "rb"))
  local output = f:read("a")
  f:close()
  os.remove(out)
  run = { code = ok and 0 or (how == "exit" and code or 128 + code), output = output,
          passed = { az = {}, sdk = {}, kit = {} }, order = { az = {}, sdk = {}, kit = {} }, failed = {} }
  for line in output:gmatch("[^\n]+") do
    local client, step = line:match("^PASS (%a+): (.+)$")
    if client and run.passed[client] then
      run.order[client][#run.order[client] + 1] = step
      run.passed[client][step] = #run.order[client]
    end
    local fclient = line:match("^FAIL (%a+): ")
    if fclient then run.failed[fclient] = line end
  end
  return run
end

describe("real clients against the emulator (tools/realclients/run)", function()
  it("finds the real clients installed (tools/bootstrap installs them) and the emulator starting", function()
    local r = run_once()
    assert(r.code ~= 2, "tools/realclients/run could not run: install the packages with tools/bootstrap "
      .. "(as root; azure-cli python3-azure python3-msal util-linux iproute2) and build cmkflow. Output:\n" .. r.output)
    assert(r.code ~= 124, "tools/realclients/run timed out after 280 s. Output:\n" .. r.output)
    assert.matches("emulator at https://127%.0%.0%.1:%d+", r.output)
  end)

  it("runs the clients through the emulator's HTTPS proxy, unprivileged when the suite runs as root", function()
    local r = run_once()
    local user = as_root() and "nobody" or "[%w_%-]+"
    assert.matches("clients through its proxy http://127%.0%.0%.1:%d+ as " .. user .. "\n", r.output)
    assert.is_nil(r.output:find("namespace", 1, true), r.output)
  end)

  for _, client in ipairs { "az", "kit", "sdk" } do
    for i, step in ipairs(STEPS[client]) do
      it(client .. ": " .. step, function()
        local r = run_once()
        local at = r.passed[client][step]
        assert(at, ("%s step '%s' did not pass: %s\n%s"):format(client, step, tostring(r.failed[client]), r.output))
        -- in the script's order: a step passes only after every step before it
        assert.equals(i, at, client .. " steps ran out of order:\n" .. r.output)
      end)
    end
  end

  it("exits 0 and summarises every step when the whole scenario passes", function()
    local r = run_once()
    assert.equals(0, r.code, r.output)
    assert.matches("SUMMARY az: ok, " .. #STEPS.az .. " steps passed", r.output, 1, true)
    assert.matches("SUMMARY sdk: ok, " .. #STEPS.sdk .. " steps passed", r.output, 1, true)
    assert.matches("SUMMARY kit: ok, " .. #STEPS.kit .. " steps passed", r.output, 1, true)
  end)
end)

describe("emulator tokens: single-origin audiences", function()
  local function req(host, port) return { host = host, port = port } end
  it("accepts the request's own loopback origin for ARM, with and without the trailing slash", function()
    assert.is_true(tokens.audience_ok(req("127.0.0.1", 4443), "arm", "https://127.0.0.1:4443/"))
    assert.is_true(tokens.audience_ok(req("127.0.0.1", 4443), "arm", "https://127.0.0.1:4443"))
    assert.is_true(tokens.audience_ok(req("localhost", 4443), "arm", "https://localhost:4443/"))
  end)
  it("refuses another port, another host and another service's origin audience", function()
    assert.is_false(tokens.audience_ok(req("127.0.0.1", 4443), "arm", "https://127.0.0.1:4444/"))
    assert.is_false(tokens.audience_ok(req("localhost", 4443), "arm", "https://127.0.0.1:4443/"))
    assert.is_false(tokens.audience_ok(req("management.azure.com", 4443), "arm", "https://management.azure.com:4443/"))
    assert.is_false(tokens.audience_ok(req("127.0.0.1", 4443), "arm", "https://127.0.0.1:4443/graph"))
    assert.is_false(tokens.audience_ok(req("127.0.0.1", 4443), "graph", "https://127.0.0.1:4443/"))
    assert.is_false(tokens.audience_ok(req("127.0.0.1", 4443), "kv", "https://vault.localhost:4443"))
  end)
  it("accepts origin/graph for Graph and vault.localhost:PORT on a vault host for Key Vault", function()
    assert.is_true(tokens.audience_ok(req("127.0.0.1", 4443), "graph", "https://127.0.0.1:4443/graph"))
    assert.is_true(tokens.audience_ok(req("kv1.vault.localhost", 4443), "kv", "https://vault.localhost:4443"))
    assert.is_false(tokens.audience_ok(req("kv1.vault.localhost", 4443), "kv", "https://vault.localhost:4444"))
    assert.is_false(tokens.audience_ok(req("kv1.vault.azure.net", 4443), "kv", "https://vault.localhost:4443"))
  end)
  it("keeps accepting the real resource URIs", function()
    assert.is_true(tokens.audience_ok(req("127.0.0.1", 4443), "arm", "https://management.azure.com/"))
    assert.is_true(tokens.audience_ok(req("127.0.0.1", 4443), "graph", "https://graph.microsoft.com"))
    assert.is_true(tokens.audience_ok(req("kv1.vault.azure.net", 443), "kv", "https://vault.azure.net"))
    assert.is_false(tokens.audience_ok(req("127.0.0.1", 4443), "arm", nil))
  end)
end)
