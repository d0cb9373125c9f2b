-- Issue 12 point 5, through the binary: `cmkflow emulator` on fixed default ports (--listen and
-- --proxy override, a taken address is a clear usage error), its HTTPS proxy (CONNECT to Azure's
-- host names only, 403 for anything else, 405 for plain HTTP, a bound that refuses at once),
-- `cloud = "emulator"` finding a running emulator through its state directory (and a clear error
-- for a stale one), and `cmkflow emulator state|reset|snapshot|restore|journal`.
local core = require "cmkflow.core"
local json = core.json
local cli = require "support.cli"
local files = require "support.files"
local ext = require "support.external_emulator"
local demo_seed = require "cmkflow.emulator.demo_seed"
local q = files.quote

local DEFAULT_PORT, DEFAULT_PROXY_PORT = 10443, 10444

-- `cmkflow emulator ARGS` that must fail fast (bounded: an unexpected start is killed after 15 s).
local function emulator_fails(args, env)
  local quoted = {}
  for _, a in ipairs(args) do quoted[#quoted + 1] = q(a) end
  local dir = files.tmpdir()
  local cmd = ("env CMKFLOW_STATE_DIR=%s %s timeout 15 %s emulator %s >%s/out 2>%s/err </dev/null")
    :format(q(dir), env or "", q(cli.bin), table.concat(quoted, " "), q(dir), q(dir))
  local _, _, code = os.execute(cmd)
  local r = { code = code, stdout = files.read(dir .. "/out", ""), stderr = files.read(dir .. "/err", "") }
  os.execute("rm -rf " .. q(dir))
  return r
end

-- Can this process bind 127.0.0.1:port right now? (python3: a test package, tools/bootstrap --test)
local function port_free(port)
  return os.execute(("python3 -c 'import socket; s = socket.socket(); "
    .. "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((\"127.0.0.1\", %d))' 2>/dev/null"):format(port))
    == true
end

-- A config file for the demo seed's two principals with the given cloud lines.
local function config(dir, cloud_lines)
  local lines = { cloud_lines }
  for role, t in pairs { isv = demo_seed.tenants[1], customer = demo_seed.tenants[2] } do
    local pr = t.principals[1]
    lines[#lines + 1] = ("  %s = { tenant = %q, subscription = %q, credential = { client_id = %q, client_secret = %q } },\n")
      :format(role, t.id, t.subscriptions[1].id, pr.appId, pr.secret)
  end
  return files.write(dir .. "/cmkflow.lua", "return {\n" .. table.concat(lines) .. "}\n")
end

local function storage_accounts(state)
  local n = 0
  for _, t in ipairs(state.tenants) do
    for _, r in ipairs(t.resources) do
      if r.type == "Microsoft.Storage/storageAccounts" then n = n + 1 end
    end
  end
  return n
end

local function locator_of(emu) return json.decode(files.read(emu.dir .. "/emulator.json")) end

describe("cmkflow emulator: ports", function()
  it("listens on 127.0.0.1:10443 with its proxy on :10444 by default, or names --listen when that is taken", function()
    if port_free(DEFAULT_PORT) and port_free(DEFAULT_PROXY_PORT) then
      local emu = ext.start { listen = false, state = false, lifetime = 60 }
      local ok, e = pcall(function()
        assert.equal("https://127.0.0.1:" .. DEFAULT_PORT, emu.ready.url)
        assert.equal("http://127.0.0.1:" .. DEFAULT_PROXY_PORT, emu.ready.proxy)
        assert.equal("ok", select(2, emu:request("GET", "/_emulator/health")).status)
      end)
      emu:stop()
      assert(ok, e)
    else
      -- another emulator (or anything) holds the default: the message says how to choose another
      local r = emulator_fails {}
      assert.equal(2, r.code, r.stderr)
      assert.matches("127%.0%.0%.1:1044[34] is already in use .*%-%-%a+ 127%.0%.0%.1:PORT", r.stderr)
    end
  end)

  it("takes --listen over the default, with the proxy on a free port of its own", function()
    local emu = ext.start { state = false, lifetime = 60 }
    local ok, e = pcall(function()
      local port = tonumber(emu.ready.url:match("^https://127%.0%.0%.1:(%d+)$"))
      local proxy_port = tonumber(emu.ready.proxy:match("^http://127%.0%.0%.1:(%d+)$"))
      assert.is_number(port, emu.line)
      assert.is_number(proxy_port, emu.line)
      assert.are_not.equal(DEFAULT_PORT, port)
      assert.are_not.equal(port, proxy_port)
    end)
    emu:stop()
    assert(ok, e)
  end)

  it("exits 2 naming --listen (or --proxy) when the address is taken", function()
    local emu = ext.start { state = false, lifetime = 60 }
    local ok, e = pcall(function()
      local port = emu.ready.url:match(":(%d+)$")
      local r = emulator_fails { "--listen", "127.0.0.1:" .. port }
      assert.equal(2, r.code)
      assert.matches("127.0.0.1:" .. port .. " is already in use", r.stderr, 1, true)
      assert.matches("choose another address with --listen", r.stderr, 1, true)
      local proxy_port = emu.ready.proxy:match(":(%d+)$")
      r = emulator_fails { "--listen", "127.0.0.1:0", "--proxy", "127.0.0.1:" .. proxy_port }
      assert.equal(2, r.code)
      assert.matches("127.0.0.1:" .. proxy_port .. " is already in use", r.stderr, 1, true)
      assert.matches("with --proxy", r.stderr, 1, true)
      assert.equal("", r.stdout) -- no ready line
    end)
    emu:stop()
    assert(ok, e)
  end)
end)

describe("cmkflow emulator: the HTTPS proxy", function()
  local emu
  setup(function() emu = ext.start { state = false, lifetime = 120, args = { "--proxy-connections", "3" } } end)
  teardown(function() if emu then emu:stop() end end)

  local function via_proxy(url, extra)
    return ext.curl(("-x %s --cacert %s %s -w ' HTTP %%{http_code}' %s"):format(q(emu.ready.proxy), q(emu.ca_cert),
      extra or "", q(url)))
  end

  it("tunnels CONNECT to Azure's host names to the emulator, which answers with its certificate", function()
    local arm = via_proxy("https://management.azure.com/subscriptions?api-version=2022-12-01")
    assert.matches('"code":"AuthenticationFailed"', arm, 1, true)
    assert.matches("HTTP 401$", arm)
    -- MSAL's instance discovery resolves through it too
    local disco = via_proxy("https://login.microsoftonline.com/common/discovery/instance?api-version=1.1"
      .. "&authorization_endpoint=https://login.microsoftonline.com/common/oauth2/v2.0/authorize")
    assert.matches('"tenant_discovery_endpoint":"https://login.microsoftonline.com/common/v2.0/.well-known/openid-configuration"',
      disco, 1, true)
    local vault = via_proxy("https://nosuchvault.vault.usgovcloudapi.net/keys?api-version=7.4")
    assert.matches("HTTP 40[14]$", vault)
    local journal = select(2, emu:request("GET", "/_emulator/journal?since=0")).value
    local hosts = {}
    for _, j in ipairs(journal) do hosts[j.host] = true end
    assert.is_true(hosts["management.azure.com"] and hosts["login.microsoftonline.com"] and true)
  end)

  it("refuses any other host or port with 403 and never connects there; plain HTTP with 405", function()
    for _, target in ipairs { "https://example.com/", "https://management.azure.com:8443/",
                              "https://a.b.vault.azure.net/", "https://127.0.0.1:" .. emu.url:match(":(%d+)$") .. "/" } do
      local out = via_proxy(target, "-v")
      assert.matches("CONNECT tunnel failed, response 403", out, 1, true)
    end
    local raw = ext.curl(("-x %s -w ' HTTP %%{http_code}' http://management.azure.com/"):format(q(emu.ready.proxy)))
    assert.matches("plain HTTP is not proxied", raw, 1, true)
    assert.matches("HTTP 405$", raw)
  end)

  it("answers 503 at once beyond its connection bound, and serves again when connections close", function()
    local port = emu.ready.proxy:match(":(%d+)$")
    -- three silent connections hold the bound (--proxy-connections 3); a fourth CONNECT is refused
    -- at once, not left waiting; with them closed, a CONNECT goes through
    local script = ([[
import socket
def connect():
    s = socket.create_connection(("127.0.0.1", %s), timeout=10)
    return s
import time
held = [connect() for _ in range(3)]
s = connect(); s.sendall(b"CONNECT management.azure.com:443 HTTP/1.1\r\nHost: management.azure.com:443\r\n\r\n")
print(s.recv(200).split(b"\r\n")[0].decode())
for h in held: h.close()
for _ in range(50):  # the proxy frees the slots as it sees the closes
    s = connect(); s.sendall(b"CONNECT management.azure.com:443 HTTP/1.1\r\nHost: management.azure.com:443\r\n\r\n")
    line = s.recv(200).split(b"\r\n")[0].decode()
    s.close()
    if "503" not in line: break
    time.sleep(0.2)
print(line)
]]):format(port)
    local path = files.write(os.tmpname() .. ".py", script)
    local p = assert(io.popen("timeout 30 python3 " .. q(path) .. " 2>&1"))
    local out = p:read("a")
    p:close()
    os.remove(path)
    assert.equal("HTTP/1.1 503 Service Unavailable\nHTTP/1.1 200 Connection established\n", out)
  end)
end)

describe("cmkflow emulator: cloud = \"emulator\" and the control commands", function()
  it("runs onboard against the emulator its state directory names, then snapshots, resets, restores and shows it", function()
    local emu = ext.start { lifetime = 300 }
    local ok, e = pcall(function()
      local dir = files.tmpdir()
      local cfg = config(dir, ("  cloud = \"emulator\", emulator_state = %q,\n"):format(emu.dir))
      local r = cli.run({ "run", "onboard", "--config", cfg, "--param", "customer=proxyco", "--output", "json" },
        { CMKFLOW_STATE_DIR = dir })
      assert.equal(0, r.code, r.stderr)
      assert.equal(1, storage_accounts(emu:state()))
      assert.equal(emu.url, locator_of(emu).url)

      local function ctl(...)
        return cli.run({ "emulator", ... }, { CMKFLOW_STATE_DIR = dir })
      end
      r = ctl("snapshot", "onboarded", "--state", emu.dir)
      assert.equal(0, r.code, r.stderr)
      assert.equal("snapshot: saved as onboarded\n", r.stdout)
      r = ctl("reset", "--state", emu.dir)
      assert.equal(0, r.code, r.stderr)
      assert.matches("reset: the emulator at " .. emu.url .. " is back to its seed", r.stdout, 1, true)
      r = ctl("state", "--state", emu.dir, "--output", "json")
      assert.equal(0, r.code, r.stderr)
      assert.equal(0, storage_accounts(json.decode(r.stdout)))
      r = ctl("restore", "onboarded", "--state", emu.dir)
      assert.equal(0, r.code, r.stderr)
      assert.equal(1, storage_accounts(emu:state()))
      -- --endpoint and --ca-cert instead of the state directory
      r = ctl("journal", "--endpoint", emu.url, "--ca-cert", emu.ca_cert, "--output", "json")
      assert.equal(0, r.code, r.stderr)
      local journal = json.decode(r.stdout)
      local puts = 0
      for _, j in ipairs(journal.value) do
        if j.method == "PUT" and j.path:find("Microsoft.Storage/storageAccounts/", 1, true) then puts = puts + 1 end
      end
      assert.is_true(puts >= 1, r.stdout)
      r = ctl("journal", "--state", emu.dir, "--service", "arm")
      assert.equal(0, r.code, r.stderr)
      assert.matches("PUT%s+20[01]%s+management%.azure%.com/subscriptions/.-/storageAccounts/", r.stdout)
      r = ctl("restore", "no-such-snapshot", "--state", emu.dir)
      assert.equal(2, r.code)
      assert.matches("SnapshotNotFound: no snapshot 'no-such-snapshot'", r.stderr, 1, true)
      r = ctl("snapshot", "--state", emu.dir)
      assert.equal(2, r.code)
      assert.matches("missing argument 'name'", r.stderr, 1, true)
      assert.matches("Usage: cmkflow emulator snapshot ", r.stderr, 1, true)
      os.execute("rm -rf " .. q(dir))
    end)
    emu:stop()
    assert(ok, e)
  end)

  it("finds an emulator started without --state in the per-user state directory", function()
    local home = files.tmpdir()
    local emu = ext.start { state = false, state_home = home, lifetime = 60 }
    local ok, e = pcall(function()
      local r = cli.run({ "emulator", "state", "--output", "json" }, { CMKFLOW_STATE_DIR = home })
      assert.equal(0, r.code, r.stderr)
      assert.equal(#demo_seed.tenants, #json.decode(r.stdout).tenants)
      assert.equal(home .. "/emulator/emulator.json", emu.ready.locator)
    end)
    emu:stop()
    -- a clean stop takes the locator away
    assert.is_false(files.read(home .. "/emulator/emulator.json", false))
    os.execute("rm -rf " .. q(home))
    assert(ok, e)
  end)

  it("says to start `cmkflow emulator` (exit 2, field cloud) when the recorded emulator is gone", function()
    local emu = ext.start { lifetime = 60 }
    local dir = files.tmpdir()
    local ok, e = pcall(function()
      local pid = locator_of(emu).pid
      assert.is_number(pid)
      os.execute("kill -KILL " .. pid)
      emu.rest = emu.pipe:read("a") -- until it is gone
      emu.pipe:close()
      emu.pid = nil
      local cfg = config(dir, ("  cloud = \"emulator\", emulator_state = %q,\n"):format(emu.dir))
      local r = cli.run({ "run", "onboard", "--config", cfg, "--param", "customer=staleco" }, { CMKFLOW_STATE_DIR = dir })
      assert.equal(2, r.code, r.stderr)
      assert.matches('cloud = "emulator": the emulator recorded in ' .. emu.dir .. "/emulator.json (pid " .. pid
        .. ", " .. emu.url .. ") is no longer running: start it again with `cmkflow emulator --state " .. emu.dir .. "`",
        r.stderr, 1, true)
      r = cli.run({ "emulator", "journal", "--state", emu.dir }, { CMKFLOW_STATE_DIR = dir })
      assert.equal(2, r.code)
      assert.matches("is no longer running", r.stderr, 1, true)
      -- and none was ever started there
      r = cli.run({ "emulator", "reset", "--state", dir .. "/none" }, { CMKFLOW_STATE_DIR = dir })
      assert.equal(2, r.code)
      assert.matches("no emulator is running with state directory " .. dir .. "/none", r.stderr, 1, true)
    end)
    os.execute("rm -rf " .. q(dir) .. " " .. q(emu.dir))
    assert(ok, e)
  end)

  it("refuses a second emulator on a state directory another one is running with", function()
    local emu = ext.start { lifetime = 60 }
    local ok, e = pcall(function()
      local r = emulator_fails { "--listen", "127.0.0.1:0", "--state", emu.dir }
      assert.equal(2, r.code)
      assert.matches("another emulator %(pid %d+%) is running with this state directory", r.stderr)
      assert.equal(emu.url, locator_of(emu).url) -- the first one's record stands
    end)
    emu:stop()
    assert(ok, e)
  end)
end)
