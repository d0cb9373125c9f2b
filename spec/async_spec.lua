-- cmkflow.async: tasks over the HTTP session (timers on the fake clock, concurrent requests
-- against the local HTTPS test server).
local core = require "cmkflow.core"
local async = require "cmkflow.async"
local http = require "cmkflow.http"
local json = core.json
local server = core.server

local session = http.session()

local ca_pem, ca_key = server.make_ca()
local cert_pem, key_pem = server.make_cert(ca_pem, ca_key, server.default_names())
local ca_file = require("support.files").write(os.tmpname(), ca_pem)

describe("cmkflow.async", function()
  setup(function() session:set_clock("fake") end)
  teardown(function() os.remove(ca_file) end)

  it("runs a function as a task and returns its results", function()
    assert.is_false(async.in_task())
    local a, b, c = async.run(function(x, y)
      assert.is_true(async.in_task())
      return x + y, "two", nil
    end, 1, 2)
    assert.equal(3, a)
    assert.equal("two", b)
    assert.is_nil(c)
    assert.is_false(async.in_task())
  end)

  it("propagates a task's error with a traceback", function()
    local ok, err = pcall(async.run, function()
      local function inner() error("boom in task") end
      inner()
    end)
    assert.is_false(ok)
    assert.matches("boom in task", err)
    assert.matches("stack traceback", err)
    assert.matches("inner", err)
  end)

  it("keeps error tables intact", function()
    local e = core.error.new { code = "Nope", message = "no" }
    local ok, err = pcall(async.run, function() error(e) end)
    assert.is_false(ok)
    assert.equal(e, err)
  end)

  it("wakes sleepers in time order on the session clock", function()
    local before = session:stats()
    local order = {}
    async.run(function()
      local tasks = {}
      for _, ms in ipairs { 3000, 1000, 2000 } do
        tasks[#tasks + 1] = async.spawn(function()
          async.sleep(ms)
          order[#order + 1] = ms
          return ms * 2
        end)
      end
      assert.equal(6000, async.await(tasks[1]))
      assert.equal(2000, async.await(tasks[2]))
    end)
    assert.same({ 1000, 2000, 3000 }, order)
    local after = session:stats()
    assert.equal(6000, after.slept_ms - before.slept_ms)
  end)

  it("sleeps outside a task by driving the session", function()
    local t0 = session:now()
    async.sleep(10000)
    assert.is_true(session:now() - t0 >= 10000)
  end)

  it("async.all returns every result in order", function()
    local results = async.all {
      function() async.sleep(300); return "a" end,
      function() return "b" end,
      function() async.sleep(100); return "c" end,
    }
    assert.same({ "a", "b", "c" }, results)
  end)

  it("async.all raises the first error only after every function has finished", function()
    local finished = 0
    local ok, err = pcall(async.run, function()
      return async.all {
        function() async.sleep(500); finished = finished + 1 end,
        function() async.sleep(100); error("first failure", 0) end,
        function() async.sleep(200); error("second failure", 0) end,
        function() async.sleep(900); finished = finished + 1 end,
      }
    end)
    assert.is_false(ok)
    assert.matches("^first failure\nstack traceback:", err)
    assert.not_matches("stack traceback:.*stack traceback:", err)
    assert.equal(2, finished)
  end)

  it("raises the error of a spawned task nobody awaited", function()
    local ok, err = pcall(async.run, function()
      async.spawn(function() async.sleep(10); error("lost task failed", 0) end)
      return "main done"
    end)
    assert.is_false(ok)
    assert.matches("^lost task failed\nstack traceback:", err)
  end)

  it("detects tasks waiting on each other", function()
    local ok, err = pcall(async.run, function()
      local a
      local b = async.spawn(function()
        async.sleep(1)
        return async.await(a)
      end)
      a = async.spawn(function() return async.await(b) end)
      return async.await(a)
    end)
    assert.is_false(ok)
    assert.matches("deadlock", err)
  end)

  it("refuses spawn and await outside a scheduler", function()
    assert.has_error(function() async.spawn(function() end) end, "async.spawn must be called inside async.run")
  end)

  it("runs 20 requests concurrently", function()
    local srv = assert(server.start {
      listen = "127.0.0.1:0", tls = true, cert_pem = cert_pem, key_pem = key_pem,
      handler = "spec/support/testserver.lua",
      config = json.encode { routes = { { method = "GET", path = "/slow",
                                          responses = { { status = 200, body = { ok = true }, delay_ms = 200 } } } } },
    })
    local client = http.new { ca_file = ca_file }
    local before = session:stats()
    local fns = {}
    for i = 1, 20 do
      fns[i] = function()
        local resp = assert(client:get(srv:url() .. "/slow?i=" .. i))
        return resp.status == 200 and resp.json.ok and i
      end
    end
    local results = async.all(fns)
    local after = session:stats()
    local j = json.decode(assert(client:get(srv:url() .. "/_test/journal")).body)
    srv:stop()
    for i = 1, 20 do assert.equal(i, results[i]) end
    assert.equal(20, after.requests - before.requests)
    assert.equal(20, #j)
    local seen = {}
    for _, e in ipairs(j) do seen[e.query] = true end
    for i = 1, 20 do assert.is_true(seen["i=" .. i]) end
  end)

  it("lets a task's request and a plain blocking request share the session", function()
    local srv = assert(server.start {
      listen = "127.0.0.1:0", tls = true, cert_pem = cert_pem, key_pem = key_pem,
      handler = "spec/support/testserver.lua",
      config = json.encode { routes = { { path = "/a", responses = { { status = 200, body = { n = 1 } } } } } },
    })
    local client = http.new { ca_file = ca_file }
    local got = async.run(function()
      local t = async.spawn(function() return client:get(srv:url() .. "/a").json.n end)
      -- a request made from a non-task coroutine inside the scheduler drives the session itself
      local inner = coroutine.wrap(function() return client:get(srv:url() .. "/a").json.n end)()
      return inner + async.await(t)
    end)
    srv:stop()
    assert.equal(2, got)
  end)
end)
