-- Issue 8 point 5: one client cannot break or stall the emulator for the others. Each hostile
-- input of the issue is thrown at a running `cmkflow emulator` (spec/support/abuse.py holds the
-- connections, from 127.0.0.2), and while it is in place a normal client (127.0.0.1) sends
-- requests: every one is answered 200 (one attempt each, a bounded number of them). The worst
-- normal-client latency is printed (the issue asks for 1 s; asserted only as a generous 5 s
-- bound, this machine is shared). Afterwards the emulator's VmRSS is back near where it started.
local core = require "cmkflow.core"
local json = core.json
local http = require "cmkflow.http"
local files = require "support.files"
local ext = require "support.external_emulator"
local durability = require "support.durability"
local form = require "cmkflow.form"
local demo_seed = require "cmkflow.emulator.demo_seed"

local PYTHON = os.execute("test -x /usr/bin/python3") and "/usr/bin/python3" or "python3"
local SCRIPT = (os.getenv("CMKFLOW_SOURCE_DIR") or ".") .. "/spec/support/abuse.py"
local NORMAL_REQUESTS = 5
local GENEROUS_MS = 5000

describe("the emulator under hostile input", function()
  local emu, client, port, worst = nil, nil, nil, { ms = 0 }

  local function rss_kb()
    for line in io.lines(("/proc/%d/status"):format(durability.emulator_pid(emu))) do
      local kb = line:match("^VmRSS:%s+(%d+)")
      if kb then return tonumber(kb) end
    end
  end

  -- NORMAL_REQUESTS health checks, one attempt each: the statuses; the worst latency is kept.
  local function normal_client(what)
    local statuses = {}
    for i = 1, NORMAL_REQUESTS do
      local t0 = core.monotonic_ms()
      local resp = client:request { method = "GET", url = emu.url .. "/_emulator/health" }
      local ms = core.monotonic_ms() - t0
      if ms > worst.ms then worst.ms, worst.what = ms, what end
      statuses[i] = resp and resp.status or "no answer"
    end
    return statuses
  end

  local function all_200()
    local t = {}
    for i = 1, NORMAL_REQUESTS do t[i] = 200 end
    return t
  end

  -- Runs the attack; while it holds its connections, the normal client works.
  -- Returns the attacker's ready line, its done line and the normal client's statuses.
  local function attack(name, hold)
    local p = assert(io.popen(("%s -W ignore %s %s %d %s %s 2>&1"):format(PYTHON, files.quote(SCRIPT), name, port,
      files.quote(emu.ca_cert), tostring(hold or 3))))
    local ready = json.decode(p:read("l") or "null")
    local statuses = normal_client(name)
    local rest = p:read("a")
    p:close()
    local done = json.decode(rest:match("[^\n]*\"done\"[^\n]*") or "null")
    assert.is_table(ready, name .. ": the attacker said " .. tostring(rest))
    return ready, done, statuses
  end

  local function token(tenant)
    local pr = tenant.principals[1]
    local resp = assert(client:request { method = "POST", url = emu.url .. "/" .. tenant.id .. "/oauth2/v2.0/token",
      headers = { ["content-type"] = "application/x-www-form-urlencoded" },
      body = form.encode { grant_type = "client_credentials", client_id = pr.appId, client_secret = pr.secret,
                           scope = "https://management.azure.com/.default" } })
    assert.equal(200, resp.status, resp.body)
    return json.decode(resp.body).access_token
  end

  local rss_before

  setup(function()
    emu = ext.start()
    port = tonumber(emu.url:match(":(%d+)$"))
    client = http.new { ca_file = emu.ca_cert, retry = { max_attempts = 1 } }
    normal_client("warm-up")
    worst.ms = 0
    collectgarbage()
    rss_before = rss_kb()
  end)

  teardown(function()
    if emu then emu:stop() end
    io.stderr:write(("emulator_abuse_spec: worst normal-client latency %d ms (during %s)\n")
      :format(worst.ms, tostring(worst.what)))
  end)

  it("refuses a 60 MB body at once (Content-Length or chunked) and keeps serving", function()
    local ready, _, statuses = attack("big_body")
    assert.equal("413", ready.status)
    assert.equal(1, ready.status_lines)
    assert.equal("RequestEntityTooLarge", json.decode(ready.body).error.code)
    assert.same(all_200(), statuses)
    -- chunked: the connection ends long before 60 MB went through (the answer may be lost to a
    -- client that is still sending: the server closes once 4 MiB are exceeded)
    ready, _, statuses = attack("big_chunked_body")
    assert.is_true(ready.seconds < 30, "seconds: " .. ready.seconds)
    assert.same(all_200(), statuses)
  end)

  it("bounds the bodies in flight across connections, keeping a reserve for small requests", function()
    local ready, _, statuses = attack("many_bodies")
    local busy = 0
    for _, s in ipairs(ready.statuses) do if s == "503" then busy = busy + 1 end end
    assert.is_true(busy >= 1, "12 bodies of 4 MB: " .. json.encode(ready.statuses))
    assert.same(all_200(), statuses)
    -- a small PUT with a body still goes through while the large ones hold the rest
    local resp = client:request { method = "PUT", url = emu.url .. "/_emulator/knobs", json = { lro_retry_after_s = 1 } }
    assert.equal(200, resp.status)
  end)

  it("refuses connections beyond the limits at once instead of leaving them hanging", function()
    local ready, done, statuses = attack("idle", 3)
    assert.is_true(ready.refused > 0, json.encode(ready))
    assert.is_true(ready.held <= 256, json.encode(ready))
    assert.is_true(ready.seconds < 30, json.encode(ready))
    assert.is_table(done)
    assert.same(all_200(), statuses)
  end)

  it("serves others while slow clients trickle their headers", function()
    local ready, _, statuses = attack("slow", 3)
    assert.equal(50, ready.held)
    assert.same(all_200(), statuses)
  end)

  it("answers a bad Content-Length, an unknown Transfer-Encoding and a NUL in the path at once", function()
    local ready = attack("bad_content_length")
    assert.equal("400", ready.status)
    assert.is_true(ready.seconds < 5)
    ready = attack("gzip")
    assert.equal("501", ready.status)
    assert.equal(1, ready.status_lines)
    assert.equal("NotImplemented", json.decode(ready.body).error.code)
    assert.is_true(ready.seconds < 5, "seconds: " .. ready.seconds)
    local statuses
    ready, _, statuses = attack("nul_path")
    assert.equal("400", ready.status)
    assert.equal("InvalidUri", json.decode(ready.body).error.code)
    assert.same(all_200(), statuses)
  end)

  it("speaks TLS 1.2 and 1.3 only", function()
    assert.equal("refused", (attack("tls1_0", 0)).handshake)
    assert.equal("refused", (attack("tls1_1", 0)).handshake)
    assert.equal("ok", (attack("tls1_2", 0)).handshake)
  end)

  it("refuses JSON nested deeper than 64 levels with 400 before anything is stored", function()
    local t = demo_seed.tenants[1]
    local sub = t.subscriptions[1].id
    local auth = { authorization = "Bearer " .. token(t) }
    local url = emu.url .. "/subscriptions/" .. sub .. "/resourcegroups/%s?api-version=2021-04-01"
    local nested = '"x"'
    for _ = 1, 100 do nested = '{"a":' .. nested .. "}" end
    local resp = client:request { method = "PUT", url = url:format("deep-rg"), headers = auth,
      body = '{"location":"westeurope","tags":' .. nested .. "}" }
    assert.equal(400, resp.status)
    assert.equal("InvalidRequestContent", json.decode(resp.body).error.code)
    assert.equal(404, client:request { method = "GET", url = url:format("deep-rg"), headers = auth }.status)
    -- the next mutation of anyone is served and saved
    resp = client:request { method = "PUT", url = url:format("plain-rg"), headers = auth, body = '{"location":"westeurope"}' }
    assert.equal(201, resp.status)
    assert.equal(200, client:request { method = "POST", url = emu.url .. "/_emulator/snapshot" }.status)
  end)

  it("matches a fault rule's backtracking pattern in linear time", function()
    local path = ("a?"):rep(30) .. ("a"):rep(30)
    local resp = client:request { method = "POST", url = emu.url .. "/_emulator/faults",
      json = { match = { path = path }, status = 418 } }
    assert.equal(201, resp.status)
    -- a path that makes string.find backtrack for minutes
    resp = client:request { method = "GET", url = emu.url .. "/" .. ("a"):rep(30) }
    assert.is_not_nil(resp)
    assert.same(all_200(), normal_client("the pattern"))
    assert.equal(204, client:request { method = "DELETE", url = emu.url .. "/_emulator/faults" }.status)
    -- patterns that are not regular are refused on creation, naming the field
    resp = client:request { method = "POST", url = emu.url .. "/_emulator/faults",
      json = { match = { path = "(a)%1" }, status = 418 } }
    assert.equal(400, resp.status)
    assert.matches("match.path uses a back%-reference", json.decode(resp.body).error.message)
  end)

  it("answers every normal request within a generous bound, and its memory comes back", function()
    assert.is_true(worst.ms < GENEROUS_MS, ("worst %d ms during %s"):format(worst.ms, tostring(worst.what)))
    collectgarbage()
    ext.sleep(1)
    local after = rss_kb()
    assert.is_true(after - rss_before < 64 * 1024, ("VmRSS %d kB before, %d kB after"):format(rss_before, after))
  end)
end)
