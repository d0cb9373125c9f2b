-- Secrets never leak. Canary secrets, tokens, an assertion, a PKCS#12 password and a private key
-- go through every credential kind and the ARM / Key Vault scenarios with --debug tracing on;
-- none may appear in stdout, stderr (traces and error messages), files written, or any string
-- reachable in the client's Lua state.
local core = require "cmkflow.core"
local json = core.json
local cli = require "support.cli"
local files = require "support.files"

local sh, write, mkdtemp = files.sh, files.write, files.tmpdir
local function read(path) return files.read(path, "") end
local function b64url(s) return core.crypto.b64url_encode(s) end
local function hex(n) return (core.crypto.random_bytes(n):gsub(".", function(c) return ("%02x"):format(c:byte()) end)) end

local JWT_PATTERN = "eyJ[%w_-]+%.[%w_-]+%.[%w_-]+"

describe("secrets", function()
  local input, canaries, key_lines, ids

  setup(function()
    input = mkdtemp()
    ids = {
      tenant = core.crypto.uuid4(), tenant2 = core.crypto.uuid4(), app = core.crypto.uuid4(),
      cert_app = core.crypto.uuid4(), fed_app = core.crypto.uuid4(), uami = core.crypto.uuid4(),
      chain_app = core.crypto.uuid4(),
    }
    canaries = {
      secret = "cAnArY-client-secret-" .. hex(12),
      wrong_secret = "cAnArY-wrong-secret-" .. hex(12),
      p12_password = "cAnArY-p12-password-" .. hex(8),
      federated = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9." .. b64url('{"sub":"cAnArY-fed-' .. hex(8) .. '"}') .. "." .. b64url(hex(16)),
      mi_token = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9." .. b64url('{"sub":"cAnArY-mi-' .. hex(8) .. '"}') .. "." .. b64url(hex(16)),
    }
    write(input .. "/ids.json", json.encode(ids))
    sh(("(cd %s && openssl req -x509 -newkey rsa:2048 -nodes -keyout key.pem -out crt.pem -days 2 -subj /CN=cmkflow-canary"
      .. " && cat key.pem crt.pem > cert.pem && openssl pkcs12 -export -in crt.pem -inkey key.pem -out cert.p12 -passout pass:%s)")
      :format(cli.quote(input), canaries.p12_password))
    key_lines = {}
    for line in read(input .. "/key.pem"):gmatch("[^\n]+") do
      if not line:match("^%-%-%-%-%-") then key_lines[#key_lines + 1] = line end
    end
    write(input .. "/federated.jwt", canaries.federated)
    local token_route = { method = "GET", path = "/subscriptions", host = "management.azure.com", auth = true,
      responses = { { status = 200, body = { value = { { subscriptionId = ids.tenant, displayName = "canary-sub" } } } } } }
    local kv_route = { method = "GET", path = "/keys/cmk.*", pattern = true, host = "canaryvault.vault.azure.net",
      auth = true, responses = { { status = 200, body = { key = { kid = "https://canaryvault.vault.azure.net/keys/cmk/abc", kty = "RSA" },
        attributes = { enabled = true } } } } }
    write(input .. "/server.json", json.encode({
      tenant = ids.tenant,
      routes = { token_route, kv_route },
      token = { clients = {
        [ids.app] = { secret = canaries.secret, tenant = ids.tenant },
        [ids.cert_app] = { assertion = true, tenant = ids.tenant },
        [ids.fed_app] = { assertions = { canaries.federated }, tenant = ids.tenant },
        [ids.chain_app] = { assertions = { canaries.mi_token }, tenants = { ids.tenant2 } },
      } },
    }))
    write(input .. "/imds.json", json.encode({ routes = { { method = "GET", path = "/metadata/identity/oauth2/token",
      responses = { { status = 200, body = { access_token = canaries.mi_token, expires_in = "3599",
        expires_on = tostring(os.time() + 3599), resource = "api://AzureADTokenExchange", token_type = "Bearer" } } } } } }))
  end)

  teardown(function()
    if input then os.execute("rm -rf " .. cli.quote(input)) end
  end)

  local function assert_clean(where, text)
    for name, value in pairs(canaries) do
      assert.is_nil(text:find(value, 1, true), ("canary %s leaked into %s"):format(name, where))
    end
    for i, line in ipairs(key_lines) do
      assert.is_nil(text:find(line, 1, true), ("private key line %d leaked into %s"):format(i, where))
    end
    local jwt = text:match(JWT_PATTERN)
    assert.is_nil(jwt, "a JWT-shaped token leaked into " .. where)
    assert.is_nil(text:match("client_secret=[^R&%s][^&%s]*"), "a client_secret value leaked into " .. where)
    for value in text:gmatch("[Bb]earer ([^%s\",]+)") do
      -- REDACTED, a WWW-Authenticate challenge's parameters, or prose ("a Bearer or PoP token")
      assert.is_truthy(value == "REDACTED" or value:match("^%a+=") or #value < 16, "a bearer token leaked into " .. where .. ": Bearer " .. value:sub(1, 12) .. "...")
    end
  end

  local function run_scenarios(mode, env)
    local work = mkdtemp()
    local parts = { "cd", cli.quote(work), "&&", "env", "TMPDIR=" .. cli.quote(work), "HOME=" .. cli.quote(work) }
    for k, v in pairs(env) do parts[#parts + 1] = k .. "=" .. cli.quote(v) end
    local src = os.getenv("CMKFLOW_SOURCE_DIR")
    parts[#parts + 1] = ("LUA_PATH=%s " .. files.lua5_4() .. " %s/spec/support/secret_scenarios.lua %s %s %s/strings.txt >%s/stdout 2>%s/stderr")
      :format(cli.quote(src .. "/lua/?.lua;" .. src .. "/lua/?/init.lua;;"), cli.quote(src), mode, cli.quote(input),
              cli.quote(work), cli.quote(work), cli.quote(work))
    -- the handler files are relative to the source tree
    local cmd = table.concat(parts, " "):gsub("^cd [^&]+&& ", "cd " .. cli.quote(src) .. " && ")
    local ok = os.execute(cmd)
    local out = { ok = ok, stdout = read(work .. "/stdout"), stderr = read(work .. "/stderr"),
                  strings = read(work .. "/strings.txt"), files = {} }
    local p = io.popen("find " .. cli.quote(work) .. " -type f")
    for path in p:lines() do out.files[path] = read(path) end
    p:close()
    os.execute("rm -rf " .. cli.quote(work))
    return out
  end

  local function results_of(out)
    local last
    for line in out.stdout:gmatch("[^\n]+") do last = line end
    return assert(json.decode(last or ""), out.stderr:sub(-2000))
  end

  local function assert_all_clean(out)
    assert_clean("stdout", out.stdout)
    assert_clean("stderr", out.stderr)
    assert_clean("the client's Lua strings", out.strings)
    for path, content in pairs(out.files) do assert_clean(path, content) end
    -- the trace really ran, and redacted what it hid
    assert.matches("oauth2/v2.0/token", out.stderr, 1, true)
    assert.matches("REDACTED", out.stderr, 1, true)
  end

  it("keeps a client secret, certificate key, assertions and tokens out of every output", function()
    local out = run_scenarios("secret", { AZURE_TENANT_ID = ids.tenant, AZURE_CLIENT_ID = ids.app,
                                          AZURE_CLIENT_SECRET = canaries.secret })
    assert.is_true(out.ok, out.stderr:sub(-3000))
    local r = results_of(out)
    assert.equals(1, r.environment)
    assert.equals(1, r.certificate)
    assert.equals(1, r.workload_identity)
    assert.equals(1, r.chained)
    assert.equals("https://canaryvault.vault.azure.net/keys/cmk/abc", r.keyvault)
    assert_all_clean(out)
  end)

  it("keeps a wrong secret out of the error messages", function()
    local out = run_scenarios("wrong", { AZURE_TENANT_ID = ids.tenant, AZURE_CLIENT_ID = ids.app,
                                         AZURE_CLIENT_SECRET = canaries.wrong_secret })
    assert.is_true(out.ok, out.stderr:sub(-3000))
    local r = results_of(out)
    assert.equals("AADSTS7000215", r.environment.code)
    assert.matches("Invalid client secret", r.environment.error, 1, true)
    assert.equals("AADSTS7000215", r.keyvault.code)
    assert_all_clean(out)
  end)

  it("keeps a PKCS#12 password out of every output", function()
    local out = run_scenarios("p12", { AZURE_TENANT_ID = ids.tenant, AZURE_CLIENT_ID = ids.cert_app,
      AZURE_CLIENT_CERTIFICATE_PATH = input .. "/cert.p12", AZURE_CLIENT_CERTIFICATE_PASSWORD = canaries.p12_password })
    assert.is_true(out.ok, out.stderr:sub(-3000))
    assert.equals(1, results_of(out).environment)
    assert_all_clean(out)
  end)

  it("keeps the demo's secret and tokens out of its --debug trace", function()
    local r = cli.run({ "demo", "--debug", "--output", "json" })
    assert.equals(0, r.code, r.stderr)
    assert.matches("oauth2/v2.0/token", r.stderr, 1, true)
    assert.matches("REDACTED", r.stderr, 1, true)
    assert.matches("GET /subscriptions", r.stderr, 1, true)
    assert_clean("demo stdout", r.stdout)
    assert_clean("demo stderr", r.stderr)
  end)
end)
