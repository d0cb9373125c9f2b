-- Workflow benchmarks (issue 4 point 10; never part of `make check`):
--   onboard  wall time and request count (the emulator's journal) of `cmkflow run onboard` beside
--            the same steps done by az CLI 2.45 (tools/realclients/az.sh), both against one
--            `cmkflow emulator` inside a loopback-only network namespace (as tools/realclients/run)
--            best of BENCH_ONBOARD_RUNS each (issue 13 point 6), and where cmkflow's time goes
--   critical one `cmkflow run onboard` against the emulator's realistic profile: its wall time
--            beside the critical path of its steps computed from that run's draws
--            (tools/bench/onboard_critical.lua), and the az script against the same emulator and
--            profile (issue 13 point 3)
--   startup  `cmkflow version` beside `az version` (hyperfine -N)
--   bulk     `cmkflow run bulk-onboard` of N customers (default 1,000): wall time and peak memory
--            (/usr/bin/time -v "Maximum resident set size")
-- Usage (from tools/bench/run): lua5.4 tools/bench/workflows.lua [N_CUSTOMERS]
--   BENCH_PARTS=onboard,critical,startup,bulk (default all), BENCH_BULK_CONCURRENCY (default 32),
--   BENCH_ONBOARD_RUNS (runs of each client, best reported; default 3), BENCH_RETRY_AFTER (the emulator's
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
for p in (os.getenv("BENCH_PARTS") or "onboard,critical,startup,bulk"):gmatch("[^,]+") do PARTS[p] = true end
local session = core.http.session()

package.path = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/?.lua;" .. package.path
local benchutil = require "benchutil"
local q, sh, write = benchutil.q, benchutil.sh, benchutil.write
local read = benchutil.read
local function tmpdir() return (sh("mktemp -d /tmp/cmkflow-bench.XXXXXX"):gsub("%s+$", "")) end
local function have(cmd) return select(2, sh("command -v " .. cmd .. " >/dev/null 2>&1")) == 0 end
local function median(t)
  table.sort(t)
  return t[(#t + 1) // 2]
end

-- `cmkflow emulator` in the background (extra: more arguments, e.g. "--profile realistic");
-- returns {url, ca, pid, stop()}.
local function start_emulator(work, extra)
  local err = work .. "/emulator.err"
  local p = assert(io.popen("sh -c " .. q("echo $$; exec timeout -s INT 3600 " .. q(bin) .. " emulator --listen 127.0.0.1:0 --ca-cert "
    .. q(work .. "/ca.pem") .. " " .. (extra or "")) .. " 2>" .. q(err) .. " </dev/null", "r"))
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
  -- waits (at most 60 s) until the emulator's CPU stops rising: its key pool generates RSA keys
  -- (4 of 2048, 4 of 3072 and 2 of 4096 bits) on a thread after start and after each key taken,
  -- which is the emulator's work, not the timed client's
  function e.settle()
    local last = e.cpu_s()
    for _ = 1, 120 do
      os.execute("sleep 0.5")
      local now = e.cpu_s()
      if now - last < 0.02 then return end
      last = now
    end
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
  -- the number of requests journaled, by service, and the entries
  function e.journal()
    local j = e.control("GET", "/_emulator/journal")
    local by = {}
    for _, r in ipairs(j.value or {}) do by[r.service or "?"] = (by[r.service or "?"] or 0) + 1 end
    return #(j.value or {}), by, j.value or {}
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

-- The CPU seconds (user + system, children included) of the command a prefix cpu_timed(work)
-- runs, read back by cpu_of(work): less moved by other jobs than wall time.
local function cpu_timed(work)
  return have("/usr/bin/time") and ("/usr/bin/time -f '%U %S' -o " .. q(work .. "/cpu.txt") .. " ") or ""
end
local function cpu_of(work)
  local u, sy = (read(work .. "/cpu.txt") or ""):match("([%d.]+) ([%d.]+)")
  os.remove(work .. "/cpu.txt")
  return u and (tonumber(u) + tonumber(sy)) or nil
end

-- az CLI 2.45 running tools/realclients/az.sh against emulator e (its own profiles, the seed's
-- principals); retry_s: how long the script retries what Azure is still propagating (AZ_RETRY_S).
-- Returns wall ms, exit code, the script's output.
local function az_script(e, work, retry_s)
  local port = e.url:match(":(%d+)$")
  -- the single-origin layout (tools/realclients/run without its proxy): this benchmark runs inside
  -- a loopback-only namespace whose /etc/hosts sends vault names to the emulator
  local env = ("LAYOUT=single-origin BASE=%s PORT=%s CA=%s WORK=%s ARM=%s VAULT_SUFFIX=%s KV_RESOURCE=%s "
    .. "AZ_VAULT=rc-az-kv AZ_RETRY_S=%d REQUESTS_CA_BUNDLE=%s SSL_CERT_FILE=%s CURL_CA_BUNDLE=%s")
    :format(q(e.url), port, q(e.ca), q(work), q(e.url), q("vault.localhost:" .. port),
      q("https://vault.localhost:" .. port), retry_s or 0, q(e.ca), q(e.ca), q(e.ca))
  for i, prefix in ipairs({ "ISV", "CUSTOMER" }) do
    local t = seed.tenants[i]
    env = env .. (" %s_TENANT=%s %s_SUB=%s %s_APP=%s %s_SECRET=%s"):format(prefix, q(t.id), prefix,
      q(t.subscriptions[1].id), prefix, q(t.principals[1].appId), prefix, q(t.principals[1].secret))
  end
  os.execute("rm -rf " .. q(work) .. "/az-isv " .. q(work) .. "/az-customer")
  local t0 = session:now()
  local out, code = sh(cpu_timed(work) .. "env " .. env .. " timeout 900 bash " .. q(root .. "/tools/realclients/az.sh")
    .. " 2>" .. q(work .. "/az.err"))
  local ms = session:now() - t0
  if code ~= 0 then
    print("onboard: az script failed (exit " .. tostring(code) .. "): " .. (out:match("FAIL[^\n]*") or out:sub(-300))
      .. ((read(work .. "/az.err") or ""):sub(-400)))
  end
  return ms, code, out, cpu_of(work)
end

-- One `cmkflow run onboard` for customer with config, its run store in state (default: a fresh
-- one). Returns wall ms, the output.
local function cmkflow_onboard(work, config, customer, state)
  local fresh = not state
  state = state or tmpdir()
  local t0 = session:now()
  local out, code = sh(("CMKFLOW_STATE_DIR=%s CMKFLOW_CONFIG=%s %s%s run onboard --param customer=%s --param key_size=2048 --output json 2>%s")
    :format(q(state), q(config), cpu_timed(work), q(bin), customer, q(work .. "/cmkflow.err")))
  local ms = session:now() - t0
  if fresh then os.execute("rm -rf " .. q(state)) end
  if code ~= 0 then error("cmkflow run onboard failed (exit " .. tostring(code) .. "): " .. out .. (read(work .. "/cmkflow.err") or ""), 0) end
  return ms, out, cpu_of(work)
end

local function best(t)
  local b = math.huge
  for _, v in ipairs(t) do b = math.min(b, v) end
  return b
end

-- Where one instant onboard's time goes: process start (`cmkflow version`), loading the workflow,
-- config and policy (`cmkflow plan onboard`), TLS handshakes and token fetches (curl's trace
-- with --debug, the journal), the run store's fsyncs (strace -c), the emulator's CPU.
local function breakdown(e, work, config)
  local function best_of(n, cmd)
    local t = {}
    for i = 1, n do
      local t0 = session:now()
      sh(cmd:gsub("{i}", tostring(i)) .. " >/dev/null 2>&1")
      t[i] = session:now() - t0
    end
    return best(t)
  end
  local v = best_of(20, q(bin) .. " version")
  local state = tmpdir()
  local p = best_of(10, ("CMKFLOW_STATE_DIR=%s CMKFLOW_CONFIG=%s %s plan onboard --param customer=plan{i}")
    :format(q(state), q(config), q(bin)))
  e.control("DELETE", "/_emulator/journal")
  e.settle()
  local cpu0 = e.cpu_s()
  local wall = cmkflow_onboard(work, config, "split1", state)
  local emu_cpu = e.cpu_s() - cpu0
  local _, by = e.journal()
  local handshakes = "?"
  sh(("CMKFLOW_STATE_DIR=%s CMKFLOW_CONFIG=%s %s run onboard --param customer=split2 --param key_size=2048 --debug >/dev/null 2>%s")
    :format(q(state), q(config), q(bin), q(work .. "/debug.err")))
  local trace = read(work .. "/debug.err") or ""
  local n = 0
  for _ in trace:gmatch("SSL connection using") do n = n + 1 end
  handshakes = n
  local fsyncs = "strace is not installed"
  if have("strace") then
    local out = sh(("CMKFLOW_STATE_DIR=%s CMKFLOW_CONFIG=%s strace -f -c -e trace=fsync,fdatasync %s run onboard --param customer=split3 --param key_size=2048 2>&1 >/dev/null")
      :format(q(state), q(config), q(bin)))
    local calls, secs = 0, 0
    for sec, c in out:gmatch("%s([%d.]+)%s+%d+%s+(%d+)%s+%d*%s*f[%a]*sync") do calls, secs = calls + tonumber(c), secs + tonumber(sec) end
    fsyncs = ("%d fsyncs of the run store, %.1f ms in them under strace"):format(calls, secs * 1000)
  end
  os.execute("rm -rf " .. q(state))
  print(("onboard: cmkflow's time: %.0f ms wall; process start (cmkflow version, best of 20) %.1f ms; + workflow, config and "
    .. "policy (cmkflow plan onboard, best of 10) %.1f ms; %d requests (%s), of them %d token fetches; %s TLS handshakes "
    .. "(curl's trace); %s; the emulator used %.0f ms of CPU for the run (its key pool refills in the background)")
    :format(wall, v, p, (by.arm or 0) + (by.graph or 0) + (by.entra or 0) + (by.keyvault or 0), by_text(by), by.entra or 0,
      tostring(handshakes), fsyncs, emu_cpu * 1000))
end

local function inside()
  assert(os.execute("ip link set lo up"))
  local work = tmpdir()
  -- the az script's vault name must resolve (docs/realclients.md, "The namespace"): a private /etc/hosts
  write(work .. "/hosts", "127.0.0.1 localhost\n::1 localhost\n127.0.0.1 vault.localhost rc-az-kv.vault.localhost\n")
  assert(os.execute("mount --bind " .. q(work .. "/hosts") .. " /etc/hosts"))
  local e = start_emulator(work)
  local ok, err = pcall(function()
    if PARTS.onboard then
      -- both clients pay no storage-create Retry-After (the knob is 1 s by default; Azure says 17);
      -- cmkflow: its own customers, RSA 2048 like the az script; az: a reset world each run (its
      -- names are fixed)
      local config = config_for(e, work)
      local runs = tonumber(os.getenv("BENCH_ONBOARD_RUNS")) or 3
      local times, reqs, by1, az_times, r_az, by_az, cpu_cmk, cpu_az = {}, {}, nil, {}, nil, nil, {}, {}
      local state = tmpdir() -- one ISV's run store for its customers
      for i = 1, runs do
        e.knobs { lro_retry_after_s = RETRY_AFTER }
        e.control("DELETE", "/_emulator/journal")
        e.settle()
        local _
        times[i], _, cpu_cmk[i] = cmkflow_onboard(work, config, "bench" .. i, state)
        local n, by = e.journal()
        reqs[i], by1 = n, by1 or by
      end
      for i = 1, runs do
        e.control("POST", "/_emulator/reset")
        e.knobs { lro_retry_after_s = RETRY_AFTER }
        e.control("DELETE", "/_emulator/journal")
        e.settle()
        local _
        az_times[i], _, _, cpu_az[i] = az_script(e, work, 0)
        r_az, by_az = e.journal()
      end
      local t_cmk, t_az = best(times), best(az_times)
      print(("onboard: storage create Retry-After %d s for both clients (knob lro_retry_after_s)"):format(RETRY_AFTER))
      print(("onboard: cmkflow best %.3f s of %d runs (%s s), %d requests (%s)"):format(t_cmk / 1000, runs,
        table.concat((function() local o = {} for i, t in ipairs(times) do o[i] = ("%.3f"):format(t / 1000) end return o end)(), ", "),
        median(reqs), by_text(by1)))
      print(("onboard: az CLI 2.45 script best %.2f s of %d runs (%s s), %d requests (%s)"):format(t_az / 1000, runs,
        table.concat((function() local o = {} for i, t in ipairs(az_times) do o[i] = ("%.2f"):format(t / 1000) end return o end)(), ", "),
        r_az, by_text(by_az)))
      print(("onboard: cmkflow is %.0fx faster, best against best (target >= 100x)"):format(t_az / t_cmk))
      if cpu_cmk[1] and cpu_az[1] then
        print(("onboard: CPU (user + system, best of %d): cmkflow %.3f s, az script %.2f s: %.0fx less")
          :format(runs, best(cpu_cmk), best(cpu_az), best(cpu_az) / math.max(best(cpu_cmk), 0.001)))
      end
      e.knobs { lro_retry_after_s = RETRY_AFTER }
      breakdown(e, work, config)
    end
    if PARTS.critical then
      -- the realistic profile (seeded latency and visibility delays, Retry-After 17): one run of each
      local work2 = tmpdir()
      local r = start_emulator(work2, "--profile realistic")
      local cok, cerr = pcall(function()
        local critical = require "onboard_critical"
        local config = config_for(r, work2)
        local wall = cmkflow_onboard(work2, config, "crit1")
        local n, by, journal = r.journal()
        local knobs = r.control("GET", "/_emulator/knobs")
        local cp = critical.path(journal, { root = root, customer = "crit1", retry_after_s = knobs.lro_retry_after_s,
          isv = { tenant = seed.tenants[1].id, subscription = seed.tenants[1].subscriptions[1].id },
          customer_ctx = { tenant = seed.tenants[2].id, subscription = seed.tenants[2].subscriptions[1].id } })
        print(("critical: realistic profile, Retry-After %d s; cmkflow onboard %.1f s wall, %d requests (%s)")
          :format(knobs.lro_retry_after_s, wall / 1000, n, by_text(by)))
        local spans = {}
        for _, name in ipairs(cp.chain) do
          local st = cp.steps[name]
          spans[#spans + 1] = ("%s %.1f-%.1f"):format(name, st.start / 1000, st.finish / 1000)
        end
        print(("critical: the steps' critical path from this run's draws %.1f s: %s"):format(cp.total_ms / 1000,
          table.concat(spans, " -> ")))
        print(("critical: cmkflow / critical path = %.3f (target <= 1.10)"):format(wall / cp.total_ms))
        -- the waits on that path, probed by each schedule (20,000 draws of the profile)
        local P = require("cmkflow.emulator.profiles").REALISTIC
        for _, w in ipairs { { "role assignment, probed by the storage PUT", P.delays.role_assignment, P.latency["arm.storage.put"] },
                             { "vault DNS, probed by an ARM GET", P.delays.vault_dns, P.latency["arm.read"] } } do
          for _, row in ipairs(critical.compare_schedules(w[2], w[3], 20000, 1)) do
            print(("critical: wait for the %s: %s: lag mean %.1f s, p90 %.1f s; %.1f probes")
              :format(w[1], row.name, row.mean_lag, row.p90_lag, row.mean_probes))
          end
        end
        r.control("DELETE", "/_emulator/journal")
        local az_ms, code = az_script(r, work2, 600)
        local n_az, by_az = r.journal()
        print(("critical: az CLI 2.45 script on the same emulator and profile %.1f s%s, %d requests (%s); az / cmkflow = %.2f, "
          .. "az / critical path = %.2f"):format(az_ms / 1000, code == 0 and "" or " (FAILED)", n_az, by_text(by_az),
          az_ms / wall, az_ms / cp.total_ms))
      end)
      r.stop()
      os.execute("rm -rf " .. q(work2))
      if not cok then error(cerr, 0) end
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
if PARTS.onboard or PARTS.critical or PARTS.startup then
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
