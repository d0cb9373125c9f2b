-- 1,000 authenticated GETs through the core (token fetch + bearer GETs, one session) against a
-- local HTTPS server, side by side with the curl command-line tool doing the same GETs in one
-- process with keep-alive. Reports wall times, the ratio, TLS handshakes and token fetches.
local core = require "cmkflow.core"
local http = require "cmkflow.http"
local json = core.json

local n = tonumber(arg[1]) or 1000

local function wall_ms(fn)
  -- wall clock with sub-ms resolution via date +%s%N would fork; use the session's real clock
  local t0 = core.http.session():now()
  fn()
  return core.http.session():now() - t0
end
local function write_file(path, s) local f = assert(io.open(path, "wb")) f:write(s) f:close() end

local ca, cakey = core.server.make_ca("bench CA")
local cert, key = core.server.make_cert(ca, cakey, core.server.default_names())
local ca_file = os.tmpname()
write_file(ca_file, ca)
local srv <close> = core.server.start { listen = "127.0.0.1:0", tls = true, cert_pem = cert, key_pem = key,
                                        handler = "tools/bench/bench_server.lua" }
local port = srv:port()
local connect_to = { ("management.azure.com:443:127.0.0.1:%d"):format(port),
                     ("login.microsoftonline.com:443:127.0.0.1:%d"):format(port) }
local tenant, client_id = core.crypto.uuid4(), core.crypto.uuid4()
local url = "https://management.azure.com/subscriptions/00000000-0000-0000-0000-000000000001/resourcegroups/bench-rg?api-version=2021-04-01"

local cred = core.auth.credential { kind = "client_secret", tenant = tenant, client_id = client_id,
                                    client_secret = "bench-secret", ca_file = ca_file, connect_to = connect_to }
local client = http.new { ca_file = ca_file, connect_to = connect_to }

local ok_count = 0
local core_ms = wall_ms(function()
  for _ = 1, n do
    local resp = assert(client:request { method = "GET", url = url, credential = cred,
                                         scope = "https://management.azure.com/.default" })
    if resp.status == 200 then ok_count = ok_count + 1 end
  end
end)
assert(ok_count == n, ("only %d of %d requests succeeded"):format(ok_count, n))
local stats = core.http.session():stats()

-- the same GETs with curl(1): one process, keep-alive, the token fetched beforehand (not timed)
local p = io.popen(("curl -sS --cacert %s --connect-to login.microsoftonline.com:443:127.0.0.1:%d "
  .. "-d 'grant_type=client_credentials&client_id=x&client_secret=y&scope=s' "
  .. "https://login.microsoftonline.com/%s/oauth2/v2.0/token"):format(ca_file, port, tenant))
local token = json.decode(p:read("a")).access_token
p:close()
local cfg = os.tmpname()
local lines = { ('header = "Authorization: Bearer %s"'):format(token), "silent", "output = /dev/null" }
for _ = 1, n do lines[#lines + 1] = ('url = "%s"\noutput = "/dev/null"'):format(url) end
write_file(cfg, table.concat(lines, "\n") .. "\n")
local curl_cmd = ("curl --cacert %s --connect-to management.azure.com:443:127.0.0.1:%d -K %s -w '%%{http_code}\\n'")
  :format(ca_file, port, cfg)
local curl_ok = 0
local curl_ms = wall_ms(function()
  local cp = io.popen(curl_cmd)
  for line in cp:lines() do if line == "200" then curl_ok = curl_ok + 1 end end
  cp:close()
end)
os.remove(cfg)
os.remove(ca_file)
assert(curl_ok == n, ("curl: only %d of %d requests succeeded"):format(curl_ok, n))

print(("http_get: %d authenticated GETs over HTTPS on loopback"):format(n))
print(("  cmkflow core : %8.1f ms  (%.0f req/s)  TLS handshakes %d, connects %d, token fetches %d")
  :format(core_ms, n / core_ms * 1000, stats.tls_handshakes or -1, stats.connects or -1, stats.token_fetches or -1))
print(("  curl(1)      : %8.1f ms  (%.0f req/s)"):format(curl_ms, n / curl_ms * 1000))
print(("  ratio core/curl = %.2f (target <= 1.50)"):format(core_ms / curl_ms))
