-- Workflow benchmarks (issue 4 point 10; never part of `make check`):
--   onboard  wall time and request count (the emulator's journal) of `cmkflow run onboard` beside
--            the same steps done by az CLI 2.45 (tools/realclients/az.sh), both against one
--            `cmkflow emulator` inside a loopback-only network namespace (as tools/realclients/run)
--   startup  `cmkflow version` beside `az version` (hyperfine -N)
--   bulk     `cmkflow run bulk-onboard` of N customers (default 1,000): wall time and peak memory
--            (/usr/bin/time -v "Maximum resident set size")
-- Usage (from tools/bench/run): lua5.4 tools/bench/workflows.lua [N_CUSTOMERS]
--   BENCH_PARTS=onboard,startup,bulk (default all), BENCH_BULK_CONCURRENCY (default 32),
--   BENCH_ONBOARD_RUNS (cmkflow runs, median reported; default 3), BENCH_RETRY_AFTER (the emulator's
--   lro_retry_after_s for every client; default 0), BENCH_KEY_MATERIAL (bulk: pooled | unique;
--   default pooled, a benchmark-only emulator knob: key versions reuse 4 RSA keys per size).
--
-- Bulk uses an external `cmkflow emulator` (its knobs are set over the control API, and its peak
-- memory is reported beside the CLI's). It runs the default policy first; if that gives every
-- customer its own identity and so its own federated credential (Entra allows 20 per application),
-- bulk-onboard refuses the list up front and the benchmark reruns with a policy file sharing one.
local core = require "cmkflow.core"
local json = core.json

local bin = assert(os.getenv("CMKFLOW_BIN"), "CMKFLOW_BIN is not set (run tools/bench/run)")
local root = (arg[0]:match("^(.*)/tools/bench/[^/]*$")) or "."
if not root:match("^/") then root = os.getenv("PWD") .. "/" .. root end
local N = tonumber(arg[1]) or 1000
local RETRY_AFTER = math.tointeger(tonumber(os.getenv("BENCH_RETRY_AFTER") or "0"))
local PARTS = {}
for p in (os.getenv("BENCH_PARTS") or "onboard,startup,bulk"):gmatch("[^,]+") do PARTS[p] = true end
local session = core.http.session()

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
local function sh(cmd)
  local p = assert(io.popen(cmd, "r"))
  local out = p:read("a")
  local ok, _, code = p:close()
  return out, ok and 0 or code
end
local function write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  return path
end
local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end
local function tmpdir() return (sh("mktemp -d /tmp/cmkflow-bench.XXXXXX"):gsub("%s+$", "")) end
local function have(cmd) return select(2, sh("command -v " .. cmd .. " >/dev/null 2>&1")) == 0 end
local function median(t)
  table.sort(t)
  return t[(#t + 1) // 2]
end

-- `cmkflow emulator` in the background; returns {url, ca, pid, stop()}.
local function start_emulator(work)
  local err = work .. "/emulator.err"
  local p = assert(io.popen("sh -c " .. q("echo $$; exec timeout -s INT 3600 " .. q(bin) .. " emulator --listen 127.0.0.1:0 --ca-cert "
    .. q(work .. "/ca.pem")) .. " 2>" .. q(err) .. " </dev/null", "r"))
  local e = { pid = tonumber(p:read("l")) }
  local ready = json.decode(p:read("l") or "null")
  if not ready or not ready.url then error("the emulator did not start: " .. tostring(read(err)), 0) end
  e.url, e.ca = ready.url:gsub("/$", ""), ready.ca_cert
  -- the emulator is the child of `timeout`
  local function proc() return (read(("/proc/%d/task/%d/children"):format(e.pid, e.pid)) or ""):match("%d+") or e.pid end
  function e.hwm_kb()
    local s = read("/proc/" .. proc() .. "/status") or ""
    return tonumber(s:match("VmHWM:%s+(%d+)"))
  end
  -- user + system CPU seconds so far
  function e.cpu_s()
    local stat = (read("/proc/" .. proc() .. "/stat") or ""):gsub("^.-%) ", "")
    local f = {}
    for x in stat:gmatch("%S+") do f[#f + 1] = x end
    local hz = tonumber((sh("getconf CLK_TCK"))) or 100
    return ((tonumber(f[12]) or 0) + (tonumber(f[13]) or 0)) / hz
  end
  function e.control(method, path, body)
    local data = body and (" -H 'content-type: application/json' --data-binary " .. q(json.encode(body))) or ""
    return json.decode((sh("curl -sS --max-time 30 -X " .. method .. data .. " --cacert " .. q(e.ca) .. " " .. q(e.url .. path))))
  end
  -- sets the scalar knobs and checks that the emulator took them
  function e.knobs(k)
    local got = e.control("PUT", "/_emulator/knobs", k) or {}
    for name, v in pairs(k) do
      if got[name] ~= v then error("the emulator did not take knob " .. name .. ": " .. json.encode(got), 0) end
    end
  end
  function e.journal()
    local j = e.control("GET", "/_emulator/journal")
    local by = {}
    for _, r in ipairs(j.value or {}) do by[r.service or "?"] = (by[r.service or "?"] or 0) + 1 end
    return #(j.value or {}), by
  end
  function e.stop()
    if e.pid then
      os.execute("kill -INT " .. e.pid .. " 2>/dev/null")
      p:read("a")
      p:close()
      e.pid = nil
    end
  end
  return e
end

local seed = dofile(root .. "/lua/cmkflow/emulator/demo_seed.lua")
local function config_for(e, work, policy)
  local function ctx(t)
    return ("{ tenant = %q, subscription = %q, credential = { client_id = %q, client_secret = %q } }")
      :format(t.id, t.subscriptions[1].id, t.principals[1].appId, t.principals[1].secret)
  end
  if policy then write(work .. "/policy.lua", policy) end
  return write(work .. "/config.lua", ("return { cloud = { emulator = %q, ca_cert = %q },\n isv = %s,\n customer = %s%s }\n")
    :format(e.url, e.ca, ctx(seed.tenants[1]), ctx(seed.tenants[2]), policy and ',\n policy = "policy.lua"' or ""))
end

local function by_text(by)
  local keys = {}
  for k in pairs(by) do keys[#keys + 1] = k end
  table.sort(keys)
  local out = {}
  for _, k in ipairs(keys) do out[#out + 1] = k .. " " .. by[k] end
  return table.concat(out, ", ")
end

-- ---- inside the namespace: onboard and startup ----------------------------------------------------

local function inside()
  assert(os.execute("ip link set lo up"))
  local work = tmpdir()
  -- the az script's vault name must resolve (docs/realclients.md, "The namespace"): a private /etc/hosts
  write(work .. "/hosts", "127.0.0.1 localhost\n::1 localhost\n127.0.0.1 vault.localhost rc-az-kv.vault.localhost\n")
  assert(os.execute("mount --bind " .. q(work .. "/hosts") .. " /etc/hosts"))
  local e = start_emulator(work)
  local ok, err = pcall(function()
    if PARTS.onboard then
      -- cmkflow: the same emulator, its own customers, RSA 2048 like the az script
      local config = config_for(e, work)
      local times, reqs, by1 = {}, {}, nil
      local runs = tonumber(os.getenv("BENCH_ONBOARD_RUNS")) or 3
      for i = 1, runs do
        -- both clients pay no storage-create Retry-After (the knob is 1 s by default; Azure says 17)
        e.knobs { lro_retry_after_s = RETRY_AFTER }
        e.control("DELETE", "/_emulator/journal")
        local state = tmpdir()
        local t0 = session:now()
        local out, code = sh(("CMKFLOW_STATE_DIR=%s CMKFLOW_CONFIG=%s %s run onboard --param customer=bench%d --param key_size=2048 --output json 2>%s")
          :format(q(state), q(config), q(bin), i, q(work .. "/cmkflow.err")))
        times[i] = session:now() - t0
        if code ~= 0 then error("cmkflow run onboard failed (exit " .. tostring(code) .. "): " .. out .. (read(work .. "/cmkflow.err") or ""), 0) end
        local n, by = e.journal()
        reqs[i] = n
        by1 = by1 or by
        os.execute("rm -rf " .. q(state))
      end
      local t_cmk, r_cmk = median(times), median(reqs)
      -- az CLI 2.45: tools/realclients/az.sh, its own profiles, one run
      e.knobs { lro_retry_after_s = RETRY_AFTER }
      e.control("DELETE", "/_emulator/journal")
      local port = e.url:match(":(%d+)$")
      local env = ("BASE=%s PORT=%s CA=%s WORK=%s AZ_VAULT=rc-az-kv REQUESTS_CA_BUNDLE=%s SSL_CERT_FILE=%s CURL_CA_BUNDLE=%s")
        :format(q(e.url), port, q(e.ca), q(work), q(e.ca), q(e.ca), q(e.ca))
      for i, prefix in ipairs({ "ISV", "CUSTOMER" }) do
        local t = seed.tenants[i]
        env = env .. (" %s_TENANT=%s %s_SUB=%s %s_APP=%s %s_SECRET=%s"):format(prefix, q(t.id), prefix,
          q(t.subscriptions[1].id), prefix, q(t.principals[1].appId), prefix, q(t.principals[1].secret))
      end
      local t0 = session:now()
      local out, code = sh("env " .. env .. " timeout 600 bash " .. q(root .. "/tools/realclients/az.sh") .. " 2>" .. q(work .. "/az.err"))
      local t_az = session:now() - t0
      local r_az, by_az = e.journal()
      if code ~= 0 then
        print("onboard: az script failed (exit " .. tostring(code) .. "): " .. (out:match("FAIL[^\n]*") or out:sub(-300)))
      end
      print(("onboard: storage create Retry-After %d s for both clients (knob lro_retry_after_s)"):format(RETRY_AFTER))
      print(("onboard: cmkflow %.2f s, %d requests (median of %d runs; %s)"):format(t_cmk / 1000, r_cmk, runs, by_text(by1)))
      print(("onboard: az CLI 2.45 script %.2f s, %d requests (%s)"):format(t_az / 1000, r_az, by_text(by_az)))
      print(("onboard: cmkflow is %.1fx faster with %.2fx the requests (target >= 100x faster, fewer requests)")
        :format(t_az / t_cmk, r_cmk / r_az))
    end
    if PARTS.startup then
      if not have("hyperfine") then
        print("startup: hyperfine is not installed (tools/bootstrap --bench)")
      else
        -- az with a fresh profile that skips the update probe, as tools/realclients/az.sh does
        local azdir = work .. "/az-version"
        os.execute("mkdir -p " .. q(azdir))
        write(azdir .. "/versionCheck.json", ('{"versions": {"azure-cli": {"local": "2.45.0"}, "core": {"local": "2.45.0"}, '
          .. '"telemetry": {"local": "1.0.8"}}, "update_time": "%s"}'):format(os.date("%Y-%m-%d %H:%M:%S.000000")))
        local function hf(cmd, runs, warm)
          local out = work .. "/hf.json"
          local _, code = sh(("AZURE_CONFIG_DIR=%s AZURE_CORE_COLLECT_TELEMETRY=false hyperfine -N --warmup %d --runs %d --export-json %s %s >/dev/null 2>&1")
            :format(q(azdir), warm, runs, q(out), q(cmd)))
          if code ~= 0 then return nil end
          local r = json.decode(read(out))
          return r.results[1].mean * 1000, r.results[1].stddev * 1000
        end
        local c, cs = hf(bin .. " version", tonumber(os.getenv("BENCH_STARTS")) or 100, 5)
        local a, as = hf("az version", tonumber(os.getenv("BENCH_AZ_STARTS")) or 10, 1)
        if c and a then
          print(("startup: cmkflow version %.2f ms (sd %.2f), az version %.0f ms (sd %.0f) (hyperfine -N); cmkflow is %.0fx faster (target >= 50x)")
            :format(c, cs, a, as, a / c))
        else
          print("startup: hyperfine failed for " .. (c and "az version" or "cmkflow version"))
        end
      end
    end
  end)
  e.stop()
  os.execute("rm -rf " .. q(work))
  if not ok then error(err, 0) end
end

-- ---- bulk ------------------------------------------------------------------------------------------

local SHARED_IDENTITY_POLICY = [[
-- one user-assigned identity and one federated credential for every customer (Entra allows 20
-- federated credentials per application)
return { names = {
  identity = function(c) return "uami-cmk-shared" end,
  federated_credential = function(c) return "cmk-shared" end,
},
-- the emulator without storage throttling holds any number of accounts in one region (Azure: 250;
-- bulk-onboard refuses more up front, tools/bench/bulk_scale.lua spreads them)
placement = { accounts_per_region = 1000000 } }
]]

local function bulk()
  if not have("/usr/bin/time") then
    print("bulk: /usr/bin/time is not installed (tools/bootstrap --bench installs the 'time' package)")
    return
  end
  local work = tmpdir()
  local e = start_emulator(work)
  local ok, err = pcall(function()
    -- key material from a small pool (benchmark-only knob: no RSA generation per customer), and no
    -- storage-create Retry-After
    local material = os.getenv("BENCH_KEY_MATERIAL") or "pooled"
    e.knobs { lro_retry_after_s = RETRY_AFTER, key_material = material }
    local lines = { "customer,key_size" }
    for i = 1, N do lines[#lines + 1] = ("c%05d,2048"):format(i) end
    local csv = write(work .. "/customers.csv", table.concat(lines, "\n") .. "\n")
    local conc = tonumber(os.getenv("BENCH_BULK_CONCURRENCY")) or 32
    local state = tmpdir()
    local function run(config)
      e.control("DELETE", "/_emulator/journal")
      local out, code = sh(("CMKFLOW_STATE_DIR=%s CMKFLOW_CONFIG=%s /usr/bin/time -v %s run bulk-onboard --param file=%s --param concurrency=%d --output json 2>%s")
        :format(q(state), q(config), q(bin), q(csv), conc, q(work .. "/time.err")))
      return out, code
    end
    -- the default policy first (one shared identity once the binary has it); when bulk-onboard
    -- refuses the list up front (exit 2: more than 20 federated credentials), a policy file that
    -- shares the identity
    local policy_used = "default policy"
    local cpu0 = e.cpu_s()
    local t0 = session:now()
    local out, code = run(config_for(e, work))
    if code == 2 and N > 20 then
      policy_used = "policy file sharing one identity, accounts_per_region raised (the default policy refused: "
        .. ((read(work .. "/time.err") or ""):match("[^\n]*federated[^\n]*")
            or (read(work .. "/time.err") or ""):match("[^\n]*do not fit[^\n]*") or "exit 2") .. ")"
      cpu0 = e.cpu_s()
      t0 = session:now()
      out, code = run(config_for(e, work, SHARED_IDENTITY_POLICY))
    end
    local wall = session:now() - t0
    print(("bulk: %s; key_material=%s, lro_retry_after_s=%d"):format(policy_used, material, RETRY_AFTER))
    local terr = read(work .. "/time.err") or ""
    local rss = tonumber(terr:match("Maximum resident set size %(kbytes%): (%d+)"))
    local user = tonumber(terr:match("User time %(seconds%): ([%d.]+)"))
    local doc = json.decode(out) or {}
    local reqs = e.journal()
    local sys = tonumber(terr:match("System time %(seconds%): ([%d.]+)"))
    print(("bulk: %d customers, concurrency %d: %.1f s wall, %s succeeded, %s failed (exit %s); cmkflow peak RSS %.1f MiB, %.1f s CPU; emulator process peak RSS %.1f MiB, %.1f s CPU; %d requests in the journal's last 10,000%s")
      :format(N, conc, wall / 1000, tostring(doc.succeeded), tostring(doc.failed), tostring(code), (rss or 0) / 1024,
              (user or 0) + (sys or 0), (e.hwm_kb() or 0) / 1024, e.cpu_s() - cpu0, reqs, reqs >= 10000 and " (ring full)" or ""))
    print(("bulk: targets < 60 s and < 64 MiB: %s, %s"):format(wall < 60000 and "time met" or "time NOT met",
      (rss or math.huge) < 65536 and "memory met" or "memory NOT met"))
    if code ~= 0 then
      for _, r in ipairs(doc.runs or {}) do
        if r.status ~= "succeeded" then print("bulk: first failure: " .. r.customer .. ": " .. tostring(r.error):gsub("\n.*", "")) break end
      end
      if not doc.runs then print("bulk: " .. terr:sub(1, 600)) end
    end
    os.execute("rm -rf " .. q(state))
  end)
  e.stop()
  os.execute("rm -rf " .. q(work))
  if not ok then error(err, 0) end
end

-- ---- main ------------------------------------------------------------------------------------------

if arg[1] == "--inside" then
  N = 0
  inside()
  return
end
if PARTS.onboard or PARTS.startup then
  if not have("az") or not have("unshare") or not have("ip") then
    print("onboard/startup: az, unshare or ip is missing (tools/bootstrap installs azure-cli, util-linux, iproute2)")
  else
    local ns = sh("id -u"):match("^0") and "unshare --net --mount --propagation private"
      or "unshare --map-root-user --net --mount --propagation private"
    local _, code = sh("env -u LD_PRELOAD " .. ns .. " -- lua5.4 " .. q(arg[0]) .. " --inside >&2")
    if code ~= 0 then print("onboard/startup: failed (exit " .. tostring(code) .. ")") end
  end
end
if PARTS.bulk then bulk() end
