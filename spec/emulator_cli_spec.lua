-- `cmkflow emulator` as a user runs it: one ready line, a CA that curl trusts (single origin and
-- real hostnames through --connect-to), usage errors for a bad seed, a non-loopback --listen and bad
-- knob flags, the same CA across starts with --state, and knob flags that reach the emulator.
local core = require "cmkflow.core"
local json = core.json
local cli = require "support.cli"
local files = require "support.files"
local ext = require "support.external_emulator"
local q = files.quote

local curl = ext.curl

-- `cmkflow emulator --listen 127.0.0.1:0 ARGS` in the background (no --state unless given).
local function start(args) return ext.start { state = false, lifetime = 120, args = args } end

describe("cmkflow emulator", function()
  it("prints exactly one ready line and serves HTTPS that its CA verifies, on the single origin and real hostnames", function()
    local h = start {}
    local ok, e = pcall(function()
      assert.is_table(h.ready, "ready line: " .. tostring(h.line))
      assert.is_true(h.ready.ready)
      local port = h.ready.url:match("^https://127%.0%.0%.1:(%d+)$")
      assert.is_string(port, h.ready.url)
      assert.is_string(files.read(h.ready.ca_cert))
      local health = json.decode(curl("--cacert " .. q(h.ready.ca_cert) .. " " .. q(h.ready.url .. "/_emulator/health")))
      assert.equal("ok", health.status)
      local via = curl("--cacert " .. q(h.ready.ca_cert) .. " --connect-to management.azure.com:443:127.0.0.1:" .. port
        .. " https://management.azure.com/subscriptions?api-version=2022-12-01")
      assert.equal("AuthenticationFailed", json.decode(via).error.code) -- ARM answered (TLS verified for its name)
      -- without the CA, verification fails
      assert.matches("certificate", curl(q(h.ready.url .. "/_emulator/health")))
    end)
    h:stop()
    assert(ok, e)
    assert.equal("", h.rest) -- nothing more on stdout than the ready line
  end)

  it("refuses an invalid seed naming the field, and a non-loopback --listen", function()
    local seed = cli.write_temp(json.encode({ tenants = { { id = "not-a-guid", name = "x" } } }), ".json")
    local r = cli.run { "emulator", "--listen", "127.0.0.1:0", "--seed", seed }
    os.remove(seed)
    assert.equal(2, r.code)
    assert.matches("tenants%[1%]%.id must be a GUID", r.stderr)
    assert.equal("", r.stdout)
    r = cli.run { "emulator", "--listen", "0.0.0.0:0" }
    assert.equal(2, r.code)
    assert.matches("loopback", r.stderr)
    r = cli.run { "emulator", "--listen", "192.168.1.1:8443" }
    assert.equal(2, r.code)
  end)

  it("keeps the same CA across two starts with --state", function()
    local dir = files.tmpdir()
    local h1 = ext.start { dir = dir, lifetime = 120 }
    h1:stop()
    assert.is_table(h1.ready)
    local ca1 = files.read(h1.ready.ca_cert)
    local h2 = ext.start { dir = dir, lifetime = 120 }
    local ok, e = pcall(function()
      assert.is_table(h2.ready)
      assert.equal(ca1, files.read(h2.ready.ca_cert))
      local health = json.decode(curl("--cacert " .. q(dir .. "/ca.pem") .. " " .. q(h2.ready.url .. "/_emulator/health")))
      assert.equal("ok", health.status)
    end)
    h2:stop()
    os.execute("rm -rf " .. q(dir))
    assert(ok, e)
  end)

  describe("knob flags", function()
    local ecli = require "cmkflow.emulator.cli"

    it("parse --delay, --fault, --throttle and --knobs into seed-style knobs", function()
      local kfile = cli.write_temp(json.encode({ delays = { role_assignment = 5 },
        faults = { { match = { operation = "graph" }, status = 500 } } }), ".json")
      local k, err = ecli.parse_knobs { knobs = kfile, delay = { "service_principal=30" },
        fault = { "arm:PUT:503:count=2", "*:*:drop:probability=0.5:path=/subscriptions", "keyvault:GET:delay:latency_ms=200" },
        throttle = { "arm.writes=10", "arm.reads=100" } }
      os.remove(kfile)
      assert.is_nil(err)
      assert.same({ role_assignment = 5, service_principal = 30 }, k.delays)
      assert.equal(4, #k.faults)
      assert.same({ match = { operation = "arm", method = "PUT" }, status = 503, count = 2 }, k.faults[2])
      assert.same({ match = { path = "/subscriptions" }, drop = true, probability = 0.5 }, k.faults[3])
      assert.same({ match = { operation = "keyvault", method = "GET" }, latency_ms = 200 }, k.faults[4])
      assert.same({ arm = { writes_per_minute = 10, reads_per_minute = 100 } }, k.throttling)
      assert.is_nil((ecli.parse_knobs {}))
    end)

    it("give clear usage errors", function()
      local cases = {
        { { delay = { "service_principal" } }, "--delay needs KIND=SECONDS" },
        { { delay = { "replication=3" } }, "knobs.delays has an unknown field 'replication'" },
        { { fault = { "arm:PUT" } }, "--fault needs SERVICE:METHOD:STATUS" },
        { { fault = { "arm:PUT:fast" } }, "STATUS must be an HTTP status" },
        { { fault = { "arm:PUT:503:times=2" } }, "'times=2' is not one of" },
        { { fault = { "storage:PUT:503" } }, "knobs.faults%[1%]%.match%.operation must be one of" },
        { { throttle = { "arm.deletes=3" } }, "--throttle needs arm.reads=N or arm.writes=N" },
        { { knobs = "/nonexistent/knobs.json" }, "--knobs: cannot read" },
      }
      for _, c in ipairs(cases) do
        local k, err = ecli.parse_knobs(c[1])
        assert.is_nil(k)
        assert.matches(c[2], err)
      end
    end)

    it("reach the emulator from the command line", function()
      local probe = cli.run { "emulator", "--throttle", "arm.reads=1", "--listen", "0.0.0.0:1" }
      assert.is_nil(probe.stderr:match("unknown option"), probe.stderr)
      assert.equals(2, probe.code) -- the non-loopback --listen, not the knob, is refused
      local h = start { "--delay", "service_principal=30", "--fault", "arm:PUT:503:count=2",
                        "--throttle", "arm.writes=10" }
      local ok, e = pcall(function()
        assert.is_table(h.ready)
        local function get(path)
          return json.decode(curl("--cacert " .. q(h.ready.ca_cert) .. " " .. q(h.ready.url .. path)))
        end
        assert.equal(30, get("/_emulator/delays").service_principal)
        local f = get("/_emulator/faults").value[1]
        assert.same({ "arm", "PUT", 503, 2 }, { f.match.operation, f.match.method, f.status, f.count })
        assert.equal(10, get("/_emulator/throttling").arm.writes_per_minute)
      end)
      h:stop()
      assert(ok, e)
      local r = cli.run { "emulator", "--listen", "127.0.0.1:0", "--fault", "arm:PUT:fast" }
      assert.equal(2, r.code)
      assert.matches("STATUS must be an HTTP status", r.stderr)
    end)
  end)
end)
