-- cmkflow.http against the local HTTPS test server (spec/support/testserver.lua): retries on the
-- session's fake clock, TLS, CONNECT_TO, request ids, connection reuse, traces, proxies.
local core = require "cmkflow.core"
local http = require "cmkflow.http"
local json = core.json
local server = core.server
local files = require "support.files"

local session = http.session()

local ca_pem, ca_key = server.make_ca()
local cert_pem, key_pem = server.make_cert(ca_pem, ca_key, server.default_names())
local ca_file = os.tmpname()
files.write(ca_file, ca_pem)

local TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
local APP = "11111111-2222-3333-4444-555555555555"
local SECRET = "test-secret-value-xyz"

local function start_server(routes)
  return assert(server.start {
    listen = "127.0.0.1:0", tls = true, cert_pem = cert_pem, key_pem = key_pem,
    handler = "spec/support/testserver.lua",
    config = json.encode { routes = routes or {},
                           token = { clients = { [APP] = { secret = SECRET, tenant = TENANT } } } },
  })
end

local srv = start_server()
local client = http.new { ca_file = ca_file }

local function set_routes(routes)
  local resp = assert(client:post(srv:url() .. "/_test/routes", { json = { routes = routes } }))
  assert(resp.status == 204, resp.body)
  assert(client:post(srv:url() .. "/_test/reset", {}).status == 204)
end

local function journal()
  local resp = assert(client:get(srv:url() .. "/_test/journal"))
  return json.decode(resp.body)
end

local function delta(before, after, k) return after[k] - before[k] end

local UUID = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-4%x%x%x%-[89ab]%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"

describe("cmkflow.http", function()
  setup(function() session:set_clock("fake") end)
  teardown(function()
    srv:stop()
    os.remove(ca_file)
  end)

  it("sends GET and PUT with JSON bodies and decodes JSON responses", function()
    set_routes {
      { method = "GET", path = "/things/1", responses = { { status = 200, body = { id = 1, tags = { "a", "b" } } } } },
      { method = "PUT", path = "/things/2", responses = { { status = 201, body = { id = 2 } } } },
    }
    local got = assert(client:get(srv:url() .. "/things/1"))
    assert.equal(200, got.status)
    assert.equal(1, got.json.id)
    assert.same({ "a", "b" }, { got.json.tags[1], got.json.tags[2] })
    assert.matches("^application/json", got.headers["content-type"])
    assert.equal(1, got.attempts)

    local put = assert(client:put(srv:url() .. "/things/2", { json = { name = "two", n = 2 } }))
    assert.equal(201, put.status)
    assert.equal(2, put.json.id)
    local j = journal()
    assert.equal(2, #j)
    assert.equal("PUT", j[2].method)
    assert.equal("application/json", j[2].headers["content-type"])
    local sent = json.decode(j[2].body)
    assert.equal("two", sent.name)
    assert.equal(2, sent.n)
    assert.matches("^cmkflow/%S+ libcurl/%S+$", j[1].headers["user-agent"])
  end)

  it("leaves resp.json nil for non-JSON content", function()
    set_routes { { path = "/text", responses = { { status = 200, headers = { ["content-type"] = "text/plain" }, body = "{\"x\":1}" } } } }
    local resp = assert(client:get(srv:url() .. "/text"))
    assert.equal("{\"x\":1}", resp.body)
    assert.is_nil(resp.json)
  end)

  it("joins repeated response headers and reports the request id", function()
    set_routes { { path = "/multi", responses = { { status = 200, headers = { ["x-multi"] = { "a", "b" }, ["x-ms-request-id"] = "rid-1" } } } } }
    local resp = assert(client:get(srv:url() .. "/multi"))
    assert.equal("a, b", resp.headers["x-multi"])
    assert.equal("rid-1", resp.request_id)
  end)

  it("retries a 503 and returns the 200 (attempts = 2)", function()
    set_routes { { method = "GET", path = "/x", responses = { { status = 503 }, { status = 200, body = { ok = true } } } } }
    local before = session:stats()
    local resp = assert(client:get(srv:url() .. "/x"))
    local after = session:stats()
    assert.equal(200, resp.status)
    assert.equal(2, resp.attempts)
    assert.is_true(resp.json.ok)
    assert.equal(1, delta(before, after, "retries"))
    assert.equal(2, delta(before, after, "attempts"))
    assert.equal(2, #journal())
  end)

  it("honours Retry-After seconds (on the fake clock)", function()
    set_routes { { path = "/ra", responses = { { status = 503, headers = { ["Retry-After"] = "5" } }, { status = 200 } } } }
    local before = session:stats()
    local resp = assert(client:get(srv:url() .. "/ra"))
    local after = session:stats()
    assert.equal(200, resp.status)
    assert.equal(5000, delta(before, after, "slept_ms"))
    assert.is_true(delta(before, after, "clock_skipped_ms") >= 4000)
  end)

  it("honours x-ms-retry-after-ms on a 429 over Retry-After", function()
    set_routes { { path = "/throttled", responses = {
      { status = 429, headers = { ["x-ms-retry-after-ms"] = "250", ["Retry-After"] = "9" } },
      { status = 200 } } } }
    local before = session:stats()
    local resp = assert(client:get(srv:url() .. "/throttled"))
    assert.equal(200, resp.status)
    assert.equal(2, resp.attempts)
    assert.equal(250, delta(before, session:stats(), "slept_ms"))
  end)

  it("gives up after max_attempts and returns the last response", function()
    set_routes { { path = "/down", responses = { { status = 503, body = { error = { code = "ServerBusy" } } } } } }
    local resp, err = client:get(srv:url() .. "/down", { retry = { max_attempts = 4 } })
    assert.is_nil(err)
    assert.equal(503, resp.status)
    assert.equal(4, resp.attempts)
    assert.equal("ServerBusy", resp.json.error.code)
    assert.equal(4, #journal())
  end)

  it("does not retry a 404", function()
    set_routes {}
    local resp = assert(client:get(srv:url() .. "/nothing-here"))
    assert.equal(404, resp.status)
    assert.equal(1, resp.attempts)
  end)

  -- Each on a server of its own: the first attempt then opens a fresh connection (on a reused
  -- one, libcurl itself silently resends once when the server closes it without answering).
  it("retries a dropped connection", function()
    local own = start_server { { path = "/flaky", responses = { { drop = true }, { status = 200, body = { ok = 1 } } } } }
    local resp = assert(client:get(own:url() .. "/flaky"))
    local j = json.decode(assert(client:get(own:url() .. "/_test/journal")).body)
    own:stop()
    assert.equal(200, resp.status)
    assert.equal(2, resp.attempts)
    assert.equal(2, #j)
  end)

  it("reports ConnectionFailed when every attempt is dropped", function()
    local own = start_server { { path = "/gone", responses = { { drop = true } } } }
    local resp, err = client:get(own:url() .. "/gone", { retry = { max_attempts = 3 } })
    local j = json.decode(assert(client:get(own:url() .. "/_test/journal")).body)
    local url = own:url()
    own:stop()
    assert.is_nil(resp)
    assert.equal("ConnectionFailed", err.code)
    assert.is_true(err.retryable)
    assert.matches("after 3 attempts", err.message)
    assert.equal(url .. "/gone", err.target)
    assert.is_true(core.error.is(err))
    assert.equal(3, #j)
  end)

  it("reports a timeout as Timeout", function()
    set_routes { { path = "/slow", responses = { { status = 200, delay_ms = 3000 } } } }
    local resp, err = client:get(srv:url() .. "/slow", { timeout_ms = 200, retry = { max_attempts = 1 } })
    assert.is_nil(resp)
    assert.equal("Timeout", err.code)
  end)

  it("fails TLS verification without the CA, clearly and without retrying", function()
    set_routes { { path = "/tls", responses = { { status = 200 } } } }
    local before = session:stats()
    local resp, err = http.new {}:get(srv:url() .. "/tls?sv=1&sig=SECRETSIG")
    assert.is_nil(resp)
    assert.equal("TLSVerificationFailed", err.code)
    assert.is_false(err.retryable)
    assert.matches("ca_file", err.message)
    assert.not_matches("SECRETSIG", err.target)
    assert.not_matches("SECRETSIG", tostring(err))
    assert.equal(1, delta(before, session:stats(), "attempts"))
    assert.equal(0, #journal())
  end)

  it("reaches real host names through connect_to, with the right Host", function()
    set_routes { { method = "GET", path = "/subscriptions", host = "management.azure.com",
                   responses = { { status = 200, body = { value = {} } } } } }
    local arm = http.new { ca_file = ca_file,
                           connect_to = { "management.azure.com:443:127.0.0.1:" .. srv:port() } }
    local resp = assert(arm:get("https://management.azure.com/subscriptions?api-version=2022-12-01"))
    assert.equal(200, resp.status)
    local j = journal()
    assert.equal(1, #j)
    assert.equal("management.azure.com", j[1].host)
    assert.equal("api-version=2022-12-01", j[1].query)
  end)

  it("sends a fresh x-ms-client-request-id UUID on every request unless the caller sets one", function()
    set_routes { { path = "/id", responses = { { status = 200 } } } }
    local ids = {}
    for i = 1, 3 do
      local resp = assert(client:get(srv:url() .. "/id"))
      assert.matches(UUID, resp.client_request_id)
      ids[i] = resp.client_request_id
    end
    local mine = assert(client:get(srv:url() .. "/id", { headers = { ["x-ms-client-request-id"] = "caller-chosen" } }))
    assert.equal("caller-chosen", mine.client_request_id)
    local j = journal()
    assert.equal(4, #j)
    local seen = {}
    for i = 1, 3 do
      local id = j[i].headers["x-ms-client-request-id"]
      assert.matches(UUID, id)
      assert.equal(ids[i], id)
      assert.is_nil(seen[id])
      seen[id] = true
    end
    assert.equal("caller-chosen", j[4].headers["x-ms-client-request-id"])
  end)

  it("reuses one TLS connection for 50 sequential GETs", function()
    local own = start_server { { path = "/r", responses = { { status = 200, body = { ok = true } } } } }
    local before = session:stats()
    for _ = 1, 50 do
      local resp = assert(client:get(own:url() .. "/r"))
      assert.equal(200, resp.status)
    end
    local after = session:stats()
    own:stop()
    assert.equal(50, delta(before, after, "requests"))
    assert.equal(1, delta(before, after, "connects"))
    assert.equal(1, delta(before, after, "tls_handshakes"))
  end)

  it("keeps the connections of hosts an emulator route pins to one address", function()
    -- curl counts connections per destination: with ARM and Graph both routed to this server, a
    -- per-host bound of 16 made each Graph request close an idle ARM connection and the next ARM
    -- request close a Graph one. A second wave of the same concurrent requests opens nothing.
    local own = start_server { { path = "/r", responses = { { status = 200, body = { ok = true } } } } }
    local route = {}
    for i, h in ipairs { "management.azure.com", "graph.microsoft.com" } do
      route[i] = http.new { ca_file = ca_file, connect_to = { h .. ":443:127.0.0.1:" .. own:port() } }
    end
    local async = require "cmkflow.async"
    local function wave()
      local fns = {}
      for i = 1, 40 do
        local c, host = route[i % 2 + 1], i % 2 == 0 and "management.azure.com" or "graph.microsoft.com"
        fns[i] = function() return assert(c:get("https://" .. host .. "/r")).status end
      end
      return async.run(function() return async.all(fns) end)
    end
    local first = session:stats()
    local statuses = wave()
    local second = session:stats()
    for i = 1, 40 do assert.equal(200, statuses[i]) end
    wave()
    local after = session:stats()
    own:stop()
    assert.is_true(delta(first, second, "connects") > 16) -- the first wave ran side by side
    assert.equal(40, delta(second, after, "requests"))
    assert.equal(0, delta(second, after, "connects"))
  end)

  it("authenticates with a credential, fetching the token once", function()
    set_routes { { method = "GET", path = "/secure", auth = true, responses = { { status = 200, body = { ok = true } } } } }
    local cred = core.auth.credential { kind = "client_secret", tenant = TENANT, client_id = APP,
                                        client_secret = SECRET, authority = srv:url(), ca_file = ca_file }
    local arm = http.new { ca_file = ca_file, credential = cred, scope = "https://management.azure.com/.default" }
    local before = session:stats()
    for _ = 1, 3 do
      local resp = assert(arm:get(srv:url() .. "/secure"))
      assert.equal(200, resp.status)
    end
    local after = session:stats()
    assert.equal(1, delta(before, after, "token_fetches"))
    assert.equal(4, delta(before, after, "requests")) -- 3 + the token request
    local j = journal()
    assert.equal(4, #j)
    assert.matches("/oauth2/v2.0/token$", j[1].path)
    for i = 2, 4 do assert.equal("present", j[i].headers.authorization) end
    -- without the credential the route refuses
    local anon = assert(client:get(srv:url() .. "/secure"))
    assert.equal(401, anon.status)
  end)

  it("finishes the transfer with the credential's error when no token can be had", function()
    set_routes { { path = "/secure2", auth = true, responses = { { status = 200 } } } }
    local cred = core.auth.credential { kind = "client_secret", tenant = TENANT, client_id = APP,
                                        client_secret = "wrong-secret", authority = srv:url(), ca_file = ca_file }
    local resp, err = client:get(srv:url() .. "/secure2", { credential = cred, scope = "https://management.azure.com/.default" })
    assert.is_nil(resp)
    assert.matches("7000215", err.code .. " " .. err.message)
    assert.not_matches("wrong%-secret", tostring(err))
    local j = journal()
    assert.equal(1, #j) -- only the token request: the API call was never sent
    assert.matches("/oauth2/v2.0/token$", j[1].path)
  end)

  it("raises clear errors for malformed or insecure URLs", function()
    for _, case in ipairs {
      { "not a url", "invalid URL 'not a url'" },
      { "ftp://x", "invalid URL 'ftp://x': unsupported scheme 'ftp'" },
      { "http://example.com", "invalid URL 'http://example.com': plain http is allowed only" },
    } do
      local ok, err = pcall(client.get, client, case[1])
      assert.is_false(ok)
      assert.matches(case[2], err, 1, true)
    end
    local ok, err = pcall(session.submit, session, { url = srv:url(), method = "get" })
    assert.is_false(ok)
    assert.matches("upper-case", err, 1, true)
    ok, err = pcall(session.submit, session, { url = srv:url(), headers = { ["X-Bad"] = "a\r\nInjected: 1" } })
    assert.is_false(ok)
    assert.matches("line break", err)
  end)

  it("allows plain http to loopback", function()
    local plain = assert(server.start { listen = "127.0.0.1:0", tls = false,
      handler_source = "return function(req) return 200, {['content-type'] = 'application/json'}, '{\"h\":\"' .. req.host .. '\"}' end" })
    local resp = assert(client:get(plain:url() .. "/"))
    plain:stop()
    assert.equal(200, resp.status)
    assert.equal("127.0.0.1", resp.json.h)
  end)

  it("raises when a transfer's result is read before it finishes", function()
    set_routes { { path = "/wait", responses = { { status = 200 } } } }
    local t = session:submit { url = srv:url() .. "/wait", ca_file = ca_file }
    assert.is_false(t:done())
    assert.has_error(function() t:result() end)
    require("cmkflow.async").wait(t)
    assert.is_true(t:done())
    assert.equal(200, t:result().status)
  end)

  describe("in a child process", function()
    local script = os.tmpname()
    local errfile = os.tmpname()
    teardown(function()
      os.remove(script)
      os.remove(errfile)
    end)

    local function child(env, source, ...)
      files.write(script, source)
      local args = {}
      for i, a in ipairs { ... } do args[i] = ("'%s'"):format(a) end
      local cmd = ("env -u https_proxy -u http_proxy -u no_proxy -u HTTPS_PROXY -u HTTP_PROXY -u NO_PROXY %s LUA_PATH='%s' LUA_CPATH='%s' " .. files.lua5_4() .. " %s %s 2>%s")
        :format(env, package.path, package.cpath, script, table.concat(args, " "), errfile)
      local p = assert(io.popen(cmd))
      local out = p:read("a")
      p:close()
      return out, files.read(errfile, "")
    end

    it("traces requests and responses to stderr with secrets redacted", function()
      set_routes { { path = "/traced", responses = { { status = 200, headers = { ["content-type"] = "text/plain" },
                                                      body = ("0123456789"):rep(1000) } } } }
      local out, err = child("", [[
        local http = require "cmkflow.http"
        local c = http.new { ca_file = arg[2], debug = true }
        local resp = assert(c:get(arg[1] .. "/traced", { headers = { Authorization = "Bearer canary-secret-123" } }))
        io.write(resp.status, " ", #resp.body)
      ]], srv:url(), ca_file)
      assert.equal("200 10000", out)
      assert.not_matches("canary%-secret%-123", err)
      assert.matches("Authorization: REDACTED", err, 1, true)
      assert.matches("> GET /traced HTTP/1.1", err, 1, true)
      assert.matches("< HTTP/1.1 200", err, 1, true)
      assert.matches("[body truncated at 4096 bytes]", err, 1, true)
      assert.is_true(#err < 4096 + 8192)
    end)

    it("never traces a token or a client secret", function()
      set_routes { { path = "/secure", auth = true, responses = { { status = 200 } } } }
      local out, err = child("", ([[
        local core = require "cmkflow.core"
        local http = require "cmkflow.http"
        http.session():set_debug(true)
        local cred = core.auth.credential { kind = "client_secret", tenant = "%s", client_id = "%s",
                                            client_secret = "%s", authority = arg[1], ca_file = arg[2] }
        local resp = assert(http.new { ca_file = arg[2] }:get(arg[1] .. "/secure",
                              { credential = cred, scope = "https://management.azure.com/.default" }))
        io.write(resp.status)
      ]]):format(TENANT, APP, SECRET), srv:url(), ca_file)
      assert.equal("200", out)
      assert.matches("POST /" .. TENANT .. "/oauth2/v2.0/token", err, 1, true)
      assert.matches("GET /secure", err, 1, true)
      assert.not_matches(SECRET, err, 1, true)
      assert.not_matches("eyJ", err, 1, true) -- no JWT (the access token) anywhere
      assert.matches("REDACTED", err, 1, true)
    end)

    local proxy_child = [[
      local http = require "cmkflow.http"
      local resp, err = http.new { ca_file = arg[2], retry = { max_attempts = 1 } }:get(arg[1] .. "/p")
      io.write(resp and tostring(resp.status) or err.code)
    ]]

    it("goes through HTTPS_PROXY unless NO_PROXY exempts the host", function()
      set_routes { { path = "/p", responses = { { status = 200 } } } }
      -- a proxy nobody listens on: going through it fails
      local out = child("HTTPS_PROXY=http://127.0.0.1:9", proxy_child, srv:url(), ca_file)
      assert.equal("ConnectionFailed", out)
      assert.equal(0, #journal())
      out = child("HTTPS_PROXY=http://127.0.0.1:9 NO_PROXY=127.0.0.1", proxy_child, srv:url(), ca_file)
      assert.equal("200", out)
      assert.equal(1, #journal())
    end)
  end)
end)
