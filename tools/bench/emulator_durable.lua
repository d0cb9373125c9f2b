-- What durability costs (issue 8 point 4): N resource-group PUTs over one keep-alive connection to
-- an in-process emulator with a state directory (every acknowledged mutation is on disk before its
-- answer) and without one; the same group again and again (the state stays small) and a new group
-- each time (the state grows); and new groups from 8 clients at once (group commit: one durable
-- write for the requests of one turn of the server loop). Reports requests/s (docs/performance.md).
--   lua5.4 tools/bench/emulator_durable.lua [N=1000]
local core = require "cmkflow.core"
local http = require "cmkflow.http"
local async = require "cmkflow.async"
local json = core.json

local N = tonumber(arg[1]) or 1000
local session = core.http.session()

local function write_file(path, s) local f = assert(io.open(path, "wb")) f:write(s) f:close() end

local ca, cakey = core.server.make_ca("bench CA")
local cert, key = core.server.make_cert(ca, cakey, core.server.default_names())
local ca_file = os.tmpname()
write_file(ca_file, ca)
local seed = require "cmkflow.emulator.demo_seed"

-- requests/s of N PUTs against an emulator with config cfg: each a new group (the state grows to N
-- groups) or, with same, one group again and again (the state stays the size of a small run's);
-- from `clients` tasks at once (default 1), each on its own connection
local function measure(cfg, same, clients)
  cfg.seed = seed
  local emu <close> = core.server.start { listen = "127.0.0.1:0", tls = true, cert_pem = cert, key_pem = key,
    handler_module = "cmkflow.emulator", config = json.encode(cfg) }
  local port = emu:port()
  local client = http.new { ca_file = ca_file, retry = { max_attempts = 1 },
    connect_to = { "management.azure.com:443:127.0.0.1:" .. port, "login.microsoftonline.com:443:127.0.0.1:" .. port } }
  local t = seed.tenants[1]
  local pr, sub = t.principals[1], t.subscriptions[1].id
  local tok = assert(client:request { method = "POST", url = "https://login.microsoftonline.com/" .. t.id .. "/oauth2/v2.0/token",
    headers = { ["content-type"] = "application/x-www-form-urlencoded" },
    body = "grant_type=client_credentials&client_id=" .. pr.appId .. "&client_secret=" .. pr.secret
      .. "&scope=https%3A%2F%2Fmanagement.azure.com%2F.default" })
  local headers = { authorization = "Bearer " .. json.decode(tok.body).access_token, ["content-type"] = "application/json" }
  local t0 = session:now()
  local function put(i)
    local resp = assert(client:request { method = "PUT", headers = headers, body = '{"location":"westeurope"}',
      url = ("https://management.azure.com/subscriptions/%s/resourcegroups/bench-rg-%d?api-version=2021-04-01")
        :format(sub, same and 0 or i) })
    assert(resp.status // 100 == 2, "PUT " .. i .. ": " .. resp.status)
  end
  clients = clients or 1
  async.run(function()
    local tasks = {}
    for c = 1, clients do
      tasks[c] = async.spawn(function()
        for i = c, N, clients do put(i) end
      end)
    end
    for _, t in ipairs(tasks) do async.await(t) end
  end)
  return N / ((session:now() - t0) / 1000)
end

local dir = os.tmpname()
os.remove(dir)
assert(os.execute("mkdir -m 700 " .. dir))
local function dir_of(name)
  local d = dir .. "/" .. name
  assert(os.execute("mkdir -m 700 " .. d))
  return d
end
local rows = {
  { "one group, with --state", measure({ state_dir = dir_of("same") }, true) },
  { "one group, in memory", measure({}, true) },
  { "new groups, with --state", measure({ state_dir = dir_of("new") }) },
  { "new groups, in memory", measure({}) },
  { "new groups, 8 clients, with --state", measure({ state_dir = dir_of("new8") }, false, 8) },
  { "new groups, 8 clients, in memory", measure({}, false, 8) },
}
print(("%d resource-group PUTs over one connection (or 8)"):format(N))
for _, r in ipairs(rows) do print(("  %-36s %8.0f req/s"):format(r[1], r[2])) end
os.execute("rm -rf " .. dir)
os.remove(ca_file)
