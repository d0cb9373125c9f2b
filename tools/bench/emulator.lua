-- The emulator's speed (issue 3 point 11), side by side with nginx serving a static file over
-- HTTPS on 127.0.0.1. One load generator for both: our own http layer (one libcurl multi handle,
-- keep-alive, CONC concurrent tasks via async.all). Reports requests per second and p99 latency
-- for token issues, ARM GETs, ARM PUTs and a token + GET + PUT mix, the GET/nginx ratio, and the
-- process's VmRSS before, during and after a long run (the emulator runs in-process, on its server
-- thread; the load generator shares the process and its 2 cores: p99 has 1 ms resolution).
--   lua5.4 tools/bench/emulator.lua [REQUESTS_PER_PHASE=2000] [LONG_RUN=100000]
local core = require "cmkflow.core"
local http = require "cmkflow.http"
local async = require "cmkflow.async"
local json = core.json

local N = tonumber(arg[1]) or 2000
local LONG = tonumber(arg[2]) or 100000
local CONC = 8
local session = core.http.session()

local function write_file(path, s) local f = assert(io.open(path, "wb")) f:write(s) f:close() end
local function rss_kb()
  for line in io.lines("/proc/self/status") do
    local kb = line:match("^VmRSS:%s+(%d+)")
    if kb then return tonumber(kb) end
  end
end

local ca, cakey = core.server.make_ca("bench CA")
local cert, key = core.server.make_cert(ca, cakey, core.server.default_names())
local ca_file = os.tmpname()
write_file(ca_file, ca)

local seed = require "cmkflow.emulator.demo_seed"
local emu <close> = core.server.start { listen = "127.0.0.1:0", tls = true, cert_pem = cert, key_pem = key,
  handler_module = "cmkflow.emulator", config = json.encode({ seed = seed }) }
local port = emu:port()
local connect_to = { "management.azure.com:443:127.0.0.1:" .. port, "login.microsoftonline.com:443:127.0.0.1:" .. port }
local client = http.new { ca_file = ca_file, connect_to = connect_to, retry = { max_attempts = 1 } }

local t = seed.tenants[1]
local pr, sub = t.principals[1], t.subscriptions[1].id
local token_req = { method = "POST", url = "https://login.microsoftonline.com/" .. t.id .. "/oauth2/v2.0/token",
  headers = { ["content-type"] = "application/x-www-form-urlencoded" },
  body = "grant_type=client_credentials&client_id=" .. pr.appId .. "&client_secret=" .. pr.secret
    .. "&scope=https%3A%2F%2Fmanagement.azure.com%2F.default" }
local first = assert(client:request(token_req))
assert(first.status == 200, "token: " .. first.status)
local bearer = { authorization = "Bearer " .. json.decode(first.body).access_token }
local rg_url = "https://management.azure.com/subscriptions/" .. sub .. "/resourcegroups/bench-rg?api-version=2021-04-01"
local put_req = { method = "PUT", url = rg_url, headers = bearer, body = '{"location":"westeurope"}' }
put_req.headers = { authorization = bearer.authorization, ["content-type"] = "application/json" }
local get_req = { method = "GET", url = rg_url, headers = bearer }
assert(client:request(put_req).status // 100 == 2, "PUT resource group")

-- Runs n requests (make(i) -> req) on CONC tasks; returns requests/s, p99 ms.
local function run(n, make)
  local lat, failures = {}, 0
  local t0 = session:now()
  local tasks = {}
  for c = 1, CONC do
    tasks[c] = function()
      for i = c, n, CONC do
        local s = session:now()
        local resp = client:request(make(i))
        lat[#lat + 1] = session:now() - s
        if not resp or resp.status >= 400 then failures = failures + 1 end
      end
    end
  end
  async.all(tasks)
  local elapsed = (session:now() - t0) / 1000
  table.sort(lat)
  assert(failures == 0, failures .. " requests failed")
  return n / elapsed, lat[math.max(1, math.ceil(#lat * 0.99))]
end

local results = {}
local function phase(name, n, make)
  local rps, p99 = run(n, make)
  results[#results + 1] = ("%-26s %9.0f req/s   p99 %7.2f ms"):format(name, rps, p99)
  return rps
end

local tok_rps = phase("emulator token issue", N, function() return token_req end)
local get_rps = phase("emulator ARM GET", N, function() return get_req end)
phase("emulator ARM PUT", N, function() return put_req end)
phase("emulator token+8 GET+PUT", N, function(i)
  local m = i % 10
  return m == 0 and token_req or m == 1 and put_req or get_req
end)

-- nginx: a static file over HTTPS with keep-alive, on a free port, as a child process.
local nginx_rps
local dir = os.tmpname()
os.remove(dir)
os.execute("mkdir -p " .. dir .. "/html")
write_file(dir .. "/cert.pem", cert)
write_file(dir .. "/key.pem", key)
write_file(dir .. "/html/static.json", json.encode({ id = rg_url, name = "bench-rg", location = "westeurope",
  properties = { provisioningState = "Succeeded" } }))
local probe = core.server.start { listen = "127.0.0.1:0", handler_source = "return function() return 200, {}, '' end" }
local nport = probe:port()
probe:stop()
write_file(dir .. "/nginx.conf", ([[
worker_processes 1;
error_log %s/error.log;
pid %s/nginx.pid;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path %s; proxy_temp_path %s; fastcgi_temp_path %s; uwsgi_temp_path %s; scgi_temp_path %s;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:%d ssl;
    ssl_certificate %s/cert.pem;
    ssl_certificate_key %s/key.pem;
    root %s/html;
  }
}
]]):format(dir, dir, dir, dir, dir, dir, dir, nport, dir, dir, dir))
local nginx = os.getenv("NGINX") or "/usr/sbin/nginx"
if os.execute("test -x " .. nginx) then
  os.execute(nginx .. " -c " .. dir .. "/nginx.conf -g 'daemon off;' >/dev/null 2>&1 &")
  local nclient = http.new { ca_file = ca_file, connect_to = { "static.localhost:443:127.0.0.1:" .. nport },
                             retry = { max_attempts = 1 } }
  local static = { method = "GET", url = "https://127.0.0.1:" .. nport .. "/static.json" }
  local up = false
  for _ = 1, 100 do
    local r = nclient:request(static)
    if r and r.status == 200 then up = true break end
    local tm = session:timer(50)
    repeat session:run(10) until tm:done()
  end
  if up then
    local saved = client
    client = nclient
    nginx_rps = phase("nginx static GET", N, function() return static end)
    client = saved
  else
    results[#results + 1] = "nginx did not start (see " .. dir .. "/error.log)"
  end
  local f = io.open(dir .. "/nginx.pid")
  if f then
    local pid = f:read("n")
    f:close()
    if pid then os.execute("kill " .. math.tointeger(pid)) end
  end
else
  results[#results + 1] = "nginx not installed (tools/bootstrap --bench installs nginx-light)"
end

-- memory over a long GET + PUT + token run, in five chunks: the first is the warm-up (the
-- emulator's 10,000-entry journal ring fills, caches and allocator arenas settle); growth is
-- measured from the end of the warm-up to the end of the run
local function mix(i)
  local m = i % 10
  return m == 0 and token_req or m == 1 and put_req or get_req
end
collectgarbage("collect")
local rss0 = rss_kb()
local CHUNK = LONG // 5
local marks = {}
for c = 1, 5 do
  run(CHUNK, mix)
  collectgarbage("collect")
  marks[c] = rss_kb()
end
local rss1 = marks[5]

for _, line in ipairs(results) do print(line) end
if nginx_rps then
  print(("ratio GET emulator/nginx   %.2f   (target >= 0.25)"):format(get_rps / nginx_rps))
end
print(("token issues               %.0f/s  (target >= 1000)"):format(tok_rps))
print(("VmRSS before/after %d requests: %d kB / %d kB (%+d kB)"):format(CHUNK * 5, rss0, rss1, rss1 - rss0))
print(("VmRSS after each %d requests: %s kB; after the warm-up chunk: %+d kB (flat: under a few MiB)")
  :format(CHUNK, table.concat(marks, " / "), rss1 - marks[1]))
os.execute("rm -rf " .. dir)
os.remove(ca_file)
