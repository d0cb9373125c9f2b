-- cmkflow.core.server: the libmicrohttpd server with a Lua handler, and its certificate generator.
-- Clients are the curl(1) command line tool, so TLS, keep-alive and dropped connections are seen
-- exactly as a real client sees them.
local core = require "cmkflow.core"
local server = core.server
local json = core.json
local files = require "support.files"

-- Child processes must not inherit the sanitizer runtimes the asan preset preloads into lua5.4:
-- curl(1) with libasan preloaded deadlocks in its second setlocale() call (glibc's locale lock is
-- left held), so every command runs with LD_PRELOAD unset.
local function shell(cmd)
  return "unset LD_PRELOAD; " .. cmd
end

local function sh(cmd)
  local p = assert(io.popen(shell(cmd)))
  local out = p:read("a")
  p:close()
  return out
end

local function run(cmd)
  return os.execute(shell(cmd))
end

-- One PKI for the whole file.
local ca_pem, ca_key = server.make_ca("cmkflow spec CA")
local cert_pem, key_pem = server.make_cert(ca_pem, ca_key)
local ca_file = os.tmpname()
files.write(ca_file, ca_pem)

-- The curl command line for args, writing headers to hdr; its output ends in "\nSTATUS CONNECTS RC\n".
local function curl_cmd(args, hdr, opts)
  local cacert = opts.no_cacert and "" or ("--cacert " .. ca_file)
  return ("curl -sS --max-time 30 %s -D %s -w '\\n%%{http_code} %%{num_connects}' %s 2>/dev/null; echo \" $?\"")
    :format(cacert, hdr, args)
end

local function curl_result(out, hdr)
  local headers = files.read(hdr)
  os.remove(hdr)
  local body, status, connects, rc = out:match("^(.*)\n(%d+) (%d+) (%d+)\n$")
  assert(rc, "unexpected curl output: " .. out)
  return { rc = tonumber(rc), status = tonumber(status), connects = connects, body = body,
           headers = headers }
end

-- Run curl; returns {rc, status, connects, body, headers (raw)}.
local function curl(args, opts)
  local hdr = os.tmpname()
  return curl_result(sh(curl_cmd(args, hdr, opts or {})), hdr)
end

-- Concurrency without timing: start the `slow` request (one the handler delays) in the background,
-- wait (bounded) until srv has dispatched it, run `fast` to completion, then wait for `slow`.
-- Returns both results and the order in which the two curl processes finished ("fast slow").
local function overlap(srv, slow_args, fast_args)
  local order_file, hdr = os.tmpname(), os.tmpname()
  local before = srv:stats().requests
  local bg = assert(io.popen(shell(curl_cmd(slow_args, hdr, {}) .. "; echo slow >> " .. order_file)))
  for _ = 1, 500 do
    if srv:stats().requests > before then break end
    run("sleep 0.01")
  end
  local dispatched = srv:stats().requests > before
  local fast = curl(fast_args)
  local f = assert(io.open(order_file, "a"))
  f:write("fast\n")
  f:close()
  local slow = curl_result(bg:read("a"), hdr)
  bg:close()
  local order = files.read(order_file):gsub("\n$", ""):gsub("\n", " ")
  os.remove(order_file)
  assert(dispatched, "the delayed request never reached the handler")
  return slow, fast, order
end

local function start(opts)
  local o = { listen = "127.0.0.1:0", tls = true, cert_pem = cert_pem, key_pem = key_pem }
  for k, v in pairs(opts) do o[k] = v end
  return assert(server.start(o))
end

teardown(function() os.remove(ca_file) end)

describe("server.make_ca / make_cert", function()
  local function text(pem)
    local f = os.tmpname()
    files.write(f, pem)
    local out = sh("openssl x509 -noout -text -in " .. f .. " 2>&1")
    os.remove(f)
    return out
  end

  it("makes a CA that can sign and a leaf for the emulator's names", function()
    local ca = text(ca_pem)
    assert.matches("Subject: O = cmkflow test, CN = cmkflow spec CA", ca, 1, true)
    assert.matches("Basic Constraints: critical%s+CA:TRUE", ca)
    assert.matches("Certificate Sign", ca, 1, true)
    local leaf = text(cert_pem)
    assert.matches("Basic Constraints: critical%s+CA:FALSE", leaf)
    assert.matches("TLS Web Server Authentication", leaf, 1, true)
    assert.matches("Authority Key Identifier", leaf, 1, true)
    for _, name in ipairs { "DNS:management.azure.com", "DNS:*.vault.azure.net", "DNS:localhost",
                            "DNS:login.microsoftonline.com", "DNS:*.vault.usgovcloudapi.net",
                            "DNS:microsoftgraph.chinacloudapi.cn", "IP Address:127.0.0.1" } do
      assert.matches(name, leaf, 1, true)
    end
    assert.matches("ASN1 OID: prime256v1", leaf, 1, true)
    assert.is_nil(leaf:find("DNS:example.com", 1, true))
    assert.matches("-----BEGIN PRIVATE KEY-----", key_pem, 1, true)
    -- the chain verifies
    local leaf_file = os.tmpname()
    files.write(leaf_file, cert_pem)
    local out = sh(("openssl verify -purpose sslserver -CAfile %s %s 2>&1"):format(ca_file, leaf_file))
    os.remove(leaf_file)
    assert.matches(": OK", out, 1, true)
  end)

  it("takes explicit names and rejects a bad IP literal", function()
    local c = server.make_cert(ca_pem, ca_key, { dns = { "only.example.test" }, ip = { "::1" } })
    local t = text(c)
    assert.matches("DNS:only.example.test", t, 1, true)
    assert.matches("IP Address:0:0:0:0:0:0:0:1", t, 1, true)
    assert.is_nil(t:find("management.azure.com", 1, true))
    local cert, err = server.make_cert(ca_pem, ca_key, { ip = { "not-an-ip" } })
    assert.is_nil(cert)
    assert.equals("CertificateGenerationFailed", err.code)
    -- a key that does not belong to the CA certificate
    local _, other_key = server.make_ca()
    cert, err = server.make_cert(ca_pem, other_key)
    assert.is_nil(cert)
    assert.equals("CertificateGenerationFailed", err.code)
  end)

  it("lists the default names", function()
    local names = server.default_names()
    local dns = table.concat(names.dns, " ")
    assert.matches("management.azure.com", dns, 1, true)
    assert.matches("*.vault.azure.cn", dns, 1, true)
    assert.matches("login.chinacloudapi.cn", dns, 1, true)
    -- derived from the cloud table (cmkflow.clouds), not a list of its own
    for _, name in ipairs(require("cmkflow.clouds").host_names()) do
      assert.matches(name, dns, 1, true)
    end
    assert.matches("*.blob.core.windows.net", dns, 1, true)
    assert.equals("127.0.0.1", names.ip[1])
  end)
end)

describe("server.start with the echo handler", function()
  local srv, url, port

  setup(function()
    srv = start { handler = "spec/support/handlers/echo.lua", config = '{"answer":42}' }
    url, port = srv:url(), srv:port()
  end)
  teardown(function() if srv then srv:stop() end end)

  it("serves HTTPS on an ephemeral loopback port, verified against the generated CA", function()
    assert.is_true(port > 0)
    assert.equals("https://127.0.0.1:" .. port, url)
    local r = curl(("'%s/some/path%%20x?b=2&a=hello%%20world&flag'"):format(url))
    assert.equals(0, r.rc)
    assert.equals(200, r.status)
    local req = json.decode(r.body)
    assert.equals("GET", req.method)
    assert.equals("/some/path x", req.path)
    assert.equals("b=2&a=hello%20world&flag", req.query)
    assert.equals("hello world", req.args.a)
    assert.equals("2", req.args.b)
    assert.equals("", req.args.flag)
    assert.equals("127.0.0.1", req.host)
    assert.equals("127.0.0.1", req.remote)
    assert.equals(port, req.port)
    assert.equals("https", req.scheme)
    assert.equals('{"answer":42}', req.config)
    assert.equals(1, req.inits)
  end)

  it("is trusted for Azure host names through --connect-to", function()
    for _, host in ipairs { "management.azure.com", "myvault.vault.azure.net", "login.microsoftonline.com",
                            "kv1.vault.usgovcloudapi.net" } do
      local r = curl(("--connect-to %s:443:127.0.0.1:%d https://%s/x"):format(host, port, host))
      assert.equals(0, r.rc, host)
      assert.equals(host, json.decode(r.body).host)
    end
  end)

  it("fails verification without the CA and for a name the certificate does not cover", function()
    local r = curl(url .. "/x", { no_cacert = true })
    assert.equals(60, r.rc)
    r = curl(("--connect-to evil.example.com:443:127.0.0.1:%d https://evil.example.com/x"):format(port))
    assert.equals(60, r.rc)
  end)

  it("keeps the connection alive between requests", function()
    -- -w prints once per URL: "1" connect for the first, "0" for the reused connection
    local out = sh(("curl -sS --cacert %s -o /dev/null -o /dev/null -w '%%{num_connects}\\n' %s/one %s/two")
      :format(ca_file, url, url))
    assert.equals("1\n0\n", out)
  end)

  it("delivers request headers and a large body to the handler", function()
    local body_file = os.tmpname()
    local chunk = ("0123456789abcdef"):rep(64)
    local body = chunk:rep(200) .. "end" -- ~200 KiB
    files.write(body_file, body)
    local r = curl(("-X PUT -H 'X-Custom-Header: Value One' -H 'X-Repeat: a' -H 'X-Repeat: b' "
      .. "-H 'Content-Type: application/octet-stream' --data-binary @%s %s/upload"):format(body_file, url))
    os.remove(body_file)
    assert.equals(200, r.status)
    local req = json.decode(r.body)
    assert.equals("PUT", req.method)
    assert.equals(#body, req.body_len)
    assert.equals(body, req.body)
    assert.equals("Value One", req.headers["x-custom-header"])
    assert.equals("a, b", req.headers["x-repeat"])
    assert.equals("application/octet-stream", req.headers["content-type"])
    assert.is_nil(req.headers["X-Custom-Header"])
  end)

  it("sends the handler's status and headers (repeated values, numbers; computed length)", function()
    local r = curl(url .. "/x?status=201")
    assert.equals(201, r.status)
    assert.matches("\nx%-multi: one\r\nx%-multi: two\r\n", r.headers)
    assert.matches("\nx%-number: 42\r\n", r.headers)
    assert.matches("\nContent%-Length: " .. #r.body .. "\r\n", r.headers)
    assert.is_nil(r.headers:find("999", 1, true))
  end)

  it("answers 500 with a JSON error naming the log line, never the error's text, when the handler raises", function()
    local r = curl(url .. "/error")
    assert.equals(500, r.status)
    local e = json.decode(r.body)
    assert.equals("InternalServerError", e.error.code)
    assert.matches("error %d+; details are in its log", e.error.message)
    -- neither the handler's message nor its source path nor a traceback reaches the client
    assert.is_nil(e.error.message:find("on purpose", 1, true))
    assert.is_nil(r.body:find(".lua", 1, true))
    assert.is_nil(e.error.message:find("stack traceback", 1, true))
    -- the server is still fine afterwards
    assert.equals(200, curl(url .. "/after").status)
  end)

  it("drops the connection when the handler returns nil", function()
    local r = curl(url .. "/drop")
    assert.equals(52, r.rc) -- empty reply from server
    assert.equals(200, curl(url .. "/after").status)
  end)

  it("delays a response without blocking other requests", function()
    -- the fast request is sent after the delayed one reached the handler and is answered first
    -- (2 s: far longer than a curl start on a loaded machine, so the order holds under load)
    local slow, fast, order = overlap(srv, url .. "/slow?delay_ms=2000", url .. "/fast")
    assert.equals("fast slow", order)
    assert.equals(200, fast.status)
    assert.equals("/fast", json.decode(fast.body).path)
    -- the delayed response still arrives, complete
    assert.equals(0, slow.rc)
    assert.equals(200, slow.status)
    assert.equals("/slow", json.decode(slow.body).path)
    assert.equals("2000", json.decode(slow.body).args.delay_ms)
  end)

  it("counts requests", function()
    local before = srv:stats().requests
    curl(url .. "/a")
    assert.equals(before + 1, srv:stats().requests)
    assert.is_true(srv:stats().contexts >= 1)
  end)
end)

describe("server.start options", function()
  it("refuses to listen on anything but a loopback IP literal", function()
    for _, listen in ipairs { "0.0.0.0:0", "10.1.2.3:8443", "localhost:0", "[::]:0" } do
      local ok, err = pcall(server.start, { listen = listen, handler_source = "return function() end" })
      assert.is_false(ok)
      assert.matches("listen address '" .. listen:gsub("%p", "%%%0") .. "'", err)
    end
    local ok, err = pcall(server.start, { listen = "127.0.0.1", handler_source = "return function() end" })
    assert.is_false(ok)
    assert.matches("HOST:PORT", err, 1, true)
  end)

  it("raises when the handler does not load or its init fails", function()
    local ok, err = pcall(server.start, { handler_source = "return function(" })
    assert.is_false(ok)
    assert.matches("server handler failed to load", err, 1, true)
    ok, err = pcall(server.start, { handler = "spec/support/handlers/echo.lua", config = "fail-init" })
    assert.is_false(ok)
    assert.matches("init refused the config", err, 1, true)
    ok, err = pcall(server.start, { handler_source = "return 42" })
    assert.is_false(ok)
    assert.matches("must return a function", err, 1, true)
    ok, err = pcall(server.start, { tls = true, handler_source = "return function() end" })
    assert.is_false(ok)
    assert.matches("cert_pem", err, 1, true)
  end)

  it("returns nil, err when the port is taken", function()
    local a = start { handler_source = "return function() return 200, {}, 'a' end" }
    local a_port = a:port()
    local b, err = server.start { listen = "127.0.0.1:" .. a_port, tls = true, cert_pem = cert_pem,
                                  key_pem = key_pem, handler_source = "return function() end" }
    a:stop()
    assert.is_nil(b)
    -- a taken address has its own code (the emulator's CLI names --listen for it)
    assert.equals("AddressInUse", err.code)
    assert.matches("127.0.0.1:" .. a_port .. " is already in use", err.message, 1, true)
  end)

  it("starts an HTTPS proxy that tunnels only the names it is given, and says when its address is taken", function()
    local srv <close> = start { handler_source = "return function(req) return 200, {}, req.host end" }
    local p <close> = assert(server.proxy { listen = "127.0.0.1:0", target = "127.0.0.1:" .. srv:port(),
                                            hosts = { "management.azure.com", "*.vault.azure.net" } })
    assert.matches("^http://127%.0%.0%.1:%d+$", p:url())
    local taken, err = server.proxy { listen = "127.0.0.1:" .. p:port(), target = "127.0.0.1:" .. srv:port(), hosts = { "x" } }
    assert.is_nil(taken)
    assert.equals("AddressInUse", err.code)
    assert.error_matches(function() server.proxy { target = "127.0.0.1:1" } end, "'hosts'")
    assert.error_matches(function() server.proxy { listen = "0.0.0.0:0", target = "127.0.0.1:1", hosts = { "x" } } end,
      "loopback")
    assert.equals(0, p:stats().refused)
  end)

  it("serves plain HTTP, a handler module and a function handler", function()
    local srv <close> = start { tls = false, handler_module = "support.handlers.echo", config = "cfg" }
    assert.matches("^http://127%.0%.0%.1:%d+$", srv:url())
    local r = curl(srv:url() .. "/plain")
    assert.equals(200, r.status)
    assert.equals("http", json.decode(r.body).scheme)
    assert.equals("cfg", json.decode(r.body).config)

    local fn <close> = start { handler_source = "return function(req, config) return 203, nil, config .. req.path end",
                               config = "C" }
    r = curl(fn:url() .. "/p")
    assert.equals(203, r.status)
    assert.equals("C/p", r.body)
  end)

  it("stops: joins the thread, closes the port, and is idempotent", function()
    local srv = start { handler_source = "return function() return 200, {}, 'up' end" }
    local url = srv:url()
    assert.equals("up", curl(url .. "/").body)
    srv:stop()
    local r = curl(url .. "/")
    assert.equals(7, r.rc) -- could not connect
    srv:stop()
    assert.has_error(function() srv:url() end, "server is stopped")
    server.stop(start { handler_source = "return function() end" })
  end)

  it("stops while a delayed response is pending", function()
    local srv = start { handler_source = "return function() return 200, {}, 'late', 10000 end" }
    local out = os.tmpname()
    run(("curl -sS --cacert %s -o %s %s/x >/dev/null 2>&1 &"):format(ca_file, out, srv:url()))
    -- wait (bounded) until the request reached the handler
    for _ = 1, 200 do
      if srv:stats().requests > 0 then break end
      run("sleep 0.05")
    end
    assert.equals(1, srv:stats().requests)
    srv:stop()
    os.remove(out)
  end)
end)

describe("spec/support/testserver.lua", function()
  local tenant, other_tenant = "11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222"
  local client_id = "33333333-3333-3333-3333-333333333333"
  local secret = "test-secret-" .. tostring(os.time())
  local srv, port

  local function arm(args)
    return curl(("--connect-to management.azure.com:443:127.0.0.1:%d %s"):format(port, args))
  end
  local function vault(args)
    return curl(("--connect-to kv1.vault.azure.net:443:127.0.0.1:%d %s"):format(port, args))
  end
  local function login(args)
    return curl(("--connect-to login.microsoftonline.com:443:127.0.0.1:%d %s"):format(port, args))
  end
  local function get_token(t, s, scope)
    return login(("-d grant_type=client_credentials -d client_id=%s --data-urlencode client_secret=%s "
      .. "--data-urlencode scope=%s https://login.microsoftonline.com/%s/oauth2/v2.0/token")
      :format(client_id, s, scope or "https://management.azure.com/.default", t))
  end
  local function journal()
    return json.decode(curl(srv:url() .. "/_test/journal").body)
  end

  setup(function()
    srv = start { handler = "spec/support/testserver.lua", config = json.encode {
      tenant = tenant,
      token = { clients = { [client_id] = { secret = secret, tenant = tenant } } },
      routes = {
        { method = "GET", path = "/subscriptions", auth = true, responses = {
          { status = 503, headers = { ["Retry-After"] = "1" }, body = { error = { code = "ServerBusy" } } },
          { status = 200, body = { value = json.array {} } },
        } },
        { method = "GET", path = "/subscriptions/[^/]+/resourceGroups/(rg%d+)", pattern = true,
          responses = { { status = 200, headers = { ["x-rg"] = "yes" }, body = "rg text" } } },
        { method = "GET", path = "/keys/k1", auth = true, audience = "https://vault.azure.net",
          responses = { { status = 200, body = { key = { kid = "https://kv1.vault.azure.net/keys/k1/v1" } } } } },
        { method = "GET", path = "/flaky", responses = { { drop = true }, { status = 200, body = "ok" } } },
        -- long enough that the other request (a curl process start on a loaded 2-core machine)
        -- always completes inside it; the test waits for it only once
        { method = "GET", path = "/slow", responses = { { status = 202, delay_ms = 2000 } } },
        { path = "/tenant-bound", auth = true, tenant = other_tenant, responses = { { status = 200 } } },
      },
    } }
    port = srv:port()
  end)
  teardown(function() if srv then srv:stop() end end)
  before_each(function() assert.equals(204, curl("-X POST " .. srv:url() .. "/_test/reset").status) end)

  it("issues tokens for the right secret and returns AADSTS7000215 for a wrong one", function()
    local r = get_token(tenant, secret)
    assert.equals(200, r.status)
    local t = json.decode(r.body)
    assert.equals("Bearer", t.token_type)
    assert.equals(3599, t.expires_in)
    assert.matches("^[%w_-]+%.[%w_-]+%.[%w_-]+$", t.access_token)

    r = get_token(tenant, "wrong-secret")
    assert.equals(401, r.status)
    local e = json.decode(r.body)
    assert.equals("invalid_client", e.error)
    assert.matches("^AADSTS7000215: Invalid client secret provided%.", e.error_description)
    assert.same({ 7000215 }, { e.error_codes[1] })

    r = get_token(other_tenant, secret)
    assert.equals(400, r.status)
    assert.equals(700016, json.decode(r.body).error_codes[1])

    r = login(("-d grant_type=password -d client_id=%s https://login.microsoftonline.com/%s/oauth2/v2.0/token")
      :format(client_id, tenant))
    assert.equals("unsupported_grant_type", json.decode(r.body).error)
  end)

  it("guards auth routes with its own tokens (ARM and Key Vault styles)", function()
    local r = arm("https://management.azure.com/subscriptions")
    assert.equals(401, r.status)
    assert.equals("AuthenticationFailed", json.decode(r.body).error.code)
    assert.matches('www%-authenticate: Bearer authorization_uri="https://login.windows.net/"', r.headers)

    r = vault("https://kv1.vault.azure.net/keys/k1")
    assert.equals(401, r.status)
    assert.matches(('www-authenticate: Bearer authorization="https://login.windows.net/%s", resource="https://vault.azure.net"')
      :format(tenant), r.headers, 1, true)

    r = arm("-H 'Authorization: Bearer not.a.token' https://management.azure.com/subscriptions")
    assert.equals("InvalidAuthenticationToken", json.decode(r.body).error.code)

    local arm_token = json.decode(get_token(tenant, secret).body).access_token
    -- first response of the sequence, then the last one repeats
    r = arm(("-H 'Authorization: Bearer %s' https://management.azure.com/subscriptions"):format(arm_token))
    assert.equals(503, r.status)
    assert.matches("\nretry%-after: 1\r\n", r.headers)
    for _ = 1, 2 do
      r = arm(("-H 'Authorization: Bearer %s' https://management.azure.com/subscriptions"):format(arm_token))
      assert.equals(200, r.status)
      assert.equals('{"value":[]}', r.body)
    end

    -- a management token is the wrong audience for the vault
    r = vault(("-H 'Authorization: Bearer %s' https://kv1.vault.azure.net/keys/k1"):format(arm_token))
    assert.equals(401, r.status)
    assert.matches("AKV10022", json.decode(r.body).error.message, 1, true)
    local kv_token = json.decode(get_token(tenant, secret, "https://vault.azure.net/.default").body).access_token
    r = vault(("-H 'Authorization: Bearer %s' https://kv1.vault.azure.net/keys/k1"):format(kv_token))
    assert.equals(200, r.status)
    assert.equals("https://kv1.vault.azure.net/keys/k1/v1", json.decode(r.body).key.kid)

    r = arm(("-H 'Authorization: Bearer %s' https://management.azure.com/tenant-bound"):format(arm_token))
    assert.equals("InvalidAuthenticationTokenTenant", json.decode(r.body).error.code)
  end)

  it("matches pattern routes, drops, delays and 404s", function()
    local r = arm("https://management.azure.com/subscriptions/s1/resourceGroups/rg42")
    assert.equals(200, r.status)
    assert.equals("rg text", r.body)
    assert.matches("\nx%-rg: yes\r\n", r.headers)
    assert.equals(404, arm("https://management.azure.com/subscriptions/s1/resourceGroups/other").status)
    assert.equals(52, arm("https://management.azure.com/flaky").rc)
    assert.equals("ok", arm("https://management.azure.com/flaky").body)
    -- /slow is delayed: a request sent while it is pending (it is already in the journal) is
    -- answered first
    local slow, fast, order = overlap(srv,
      ("--connect-to management.azure.com:443:127.0.0.1:%d https://management.azure.com/slow"):format(port),
      srv:url() .. "/_test/journal")
    assert.equals("fast slow", order)
    local j = json.decode(fast.body)
    assert.equals("/slow", j[#j].path)
    assert.equals(202, slow.status)
    r = arm("-X DELETE https://management.azure.com/nothing")
    assert.equals(404, r.status)
    assert.equals("NotFound", json.decode(r.body).error.code)
  end)

  it("keeps a journal without secrets, counts and resets", function()
    get_token(tenant, secret)
    local token = json.decode(get_token(tenant, secret).body).access_token
    arm(("-H 'Authorization: Bearer %s' -H 'X-Trace: t1' 'https://management.azure.com/subscriptions?api-version=2022-12-01'")
      :format(token))
    local j = journal()
    assert.equals(3, #j)
    assert.equals("POST", j[1].method)
    assert.equals("/" .. tenant .. "/oauth2/v2.0/token", j[1].path)
    assert.equals(client_id, j[1].form.client_id)
    assert.is_true(j[1].form.has_secret)
    assert.equals("https://management.azure.com/.default", j[1].form.scope)
    assert.is_nil(j[1].body)
    assert.equals("GET", j[3].method)
    assert.equals("/subscriptions", j[3].path)
    assert.equals("api-version=2022-12-01", j[3].query)
    assert.equals("management.azure.com", j[3].host)
    assert.equals("present", j[3].headers.authorization)
    assert.equals("t1", j[3].headers["x-trace"])
    assert.equals(0, j[3].body_len)
    local raw = curl(srv:url() .. "/_test/journal").body
    assert.is_nil(raw:find(secret, 1, true))
    assert.is_nil(raw:find(token, 1, true))
    assert.equals(3, json.decode(curl(srv:url() .. "/_test/count").body).count)
    curl("-X POST " .. srv:url() .. "/_test/reset")
    assert.equals(0, json.decode(curl(srv:url() .. "/_test/count").body).count)
  end)

  it("replaces its routes at run time", function()
    local r = curl(("-X POST --data-binary '%s' %s/_test/routes"):format(
      json.encode { routes = { { path = "/new", responses = { { status = 418, body = "teapot" } } } } }, srv:url()))
    assert.equals(204, r.status)
    r = curl(srv:url() .. "/new")
    assert.equals(418, r.status)
    assert.equals("teapot", r.body)
    assert.equals(404, arm("https://management.azure.com/flaky").status)
  end)
end)
