-- bulk-onboard at scale under Azure's throttling (issue 13 point 2; never part of `make check`):
-- N customers (default 1,000), each in its own tenant of a generated seed, the ISV's storage accounts
-- placed over S subscriptions (default 2) x R regions (default 2) by the policy, against one
-- `cmkflow emulator` with ARM's and the Storage resource provider's published limits on
-- (`--throttle arm --throttle storage`: ARM writes 600 per minute per subscription, i.e. a bucket of
-- 600 refilled at 10/s; reads 1,500, 25/s; Storage 1,200 writes per hour and 250 accounts per region
-- per subscription). Prints the customers done and failed, and for every ISV subscription the ARM
-- writes and reads granted against what the limit allowed over the run (bucket + refill x wall
-- time): the binding limit is the one most used. Also wall time and peak RSS.
-- Usage (from tools/bench/run): lua5.4 tools/bench/bulk_scale.lua [N]
--   BENCH_SCALE_SUBS (S), BENCH_SCALE_REGIONS (R), BENCH_SCALE_CONCURRENCY (default 64),
--   BENCH_SCALE_TENANTS (customer tenants, default N: one per customer),
--   BENCH_SCALE_ARM_WRITES (ARM writes per minute instead of the published 600: a scaled limit for
--   a longer throttled run).
local core = require "cmkflow.core"
local json = core.json

local bin = assert(os.getenv("CMKFLOW_BIN"), "CMKFLOW_BIN is not set (run tools/bench/run)")
local N = math.tointeger(tonumber(arg[1])) or 1000
local S = math.tointeger(tonumber(os.getenv("BENCH_SCALE_SUBS") or "2"))
local R = math.tointeger(tonumber(os.getenv("BENCH_SCALE_REGIONS") or "2"))
local CONC = math.tointeger(tonumber(os.getenv("BENCH_SCALE_CONCURRENCY") or "64"))
local ARM_WRITES = math.tointeger(tonumber(os.getenv("BENCH_SCALE_ARM_WRITES") or "600"))
-- customer tenants (default one per customer; fewer: customer i lives in tenant i mod T, for a machine
-- where the emulator's start, one signing key per tenant, would take too long)
local T = math.tointeger(tonumber(os.getenv("BENCH_SCALE_TENANTS") or tostring(N)))
local REGIONS = { "westeurope", "northeurope", "eastus", "westus2", "uksouth", "francecentral", "swedencentral" }
local session = core.http.session()

package.path = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/?.lua;" .. package.path
local benchutil = require "benchutil"
local q, sh, write = benchutil.q, benchutil.sh, benchutil.write
local function read(path) return benchutil.read(path) or "" end

if select(2, sh("command -v /usr/bin/time >/dev/null 2>&1")) ~= 0 then
  print("bulk_scale: /usr/bin/time is not installed (tools/bootstrap --bench installs the 'time' package)")
  return
end
if S * R * 250 < N then
  print(("bulk_scale: %d customers need %d subscription(s) x region(s) of 250 accounts; raise BENCH_SCALE_SUBS or "
    .. "BENCH_SCALE_REGIONS"):format(N, math.ceil(N / 250)))
  return
end

local work = (sh("mktemp -d /tmp/cmkflow-bench-scale.XXXXXX"):gsub("%s+$", ""))

-- the seed: the ISV (S subscriptions, its deployer Owner of each) and one tenant per customer
local isv_subs, tenants = {}, {}
for s = 1, S do isv_subs[s] = ("1a2b3c4d-0000-4000-8000-%012d"):format(s) end
local roles = {}
for _, sub in ipairs(isv_subs) do roles[#roles + 1] = { role = "Owner", scope = "/subscriptions/" .. sub } end
local isv = { id = "7f0d6a2e-5b1c-4c8e-9a3d-1e2f3a4b5c6d", name = "isv", domain = "isv.example", subscriptions = {},
              principals = { { name = "isv-deployer", appId = "5e6f7a8b-0000-4000-8000-00000000a0d1",
                               secret = "emulator-isv-deployer-secret", roles = roles,
                               graph_roles = { "Application.ReadWrite.All" } } } }
for s, sub in ipairs(isv_subs) do isv.subscriptions[s] = { id = sub, name = "isv-" .. s } end
local seed = { random_seed = 7, tenants = { isv } }
for i = 1, T do
  local sub = ("9d8c7b6a-0000-4000-8000-%012d"):format(i)
  local t = { id = ("3c9e1b7d-2a4f-4e6b-8c0d-%012d"):format(i), name = "c" .. i, domain = ("c%d.example"):format(i),
              subscriptions = { { id = sub, name = "c" .. i } },
              principals = { { name = "admin", appId = ("2b3c4d5e-0000-4000-8000-%012d"):format(i),
                               secret = "emulator-customer-secret-" .. i,
                               roles = { { role = "Owner", scope = "/subscriptions/" .. sub },
                                         { role = "Key Vault Crypto Officer", scope = "/subscriptions/" .. sub } },
                               graph_roles = { "Application.ReadWrite.All" } } } }
  tenants[i] = t
  seed.tenants[#seed.tenants + 1] = t
end
write(work .. "/seed.json", json.encode(seed))
write(work .. "/knobs.json", json.encode { lro_retry_after_s = 0, key_material = "pooled" })

local throttle = { "--throttle", "arm", "--throttle", "storage" }
if ARM_WRITES ~= 600 then throttle[#throttle + 1] = "--throttle" throttle[#throttle + 1] = "arm.writes=" .. ARM_WRITES end
local emu_err = work .. "/emulator.err"
local pipe = assert(io.popen("sh -c " .. q("echo $$; exec timeout -s INT 7200 " .. q(bin) .. " emulator --listen "
  .. "127.0.0.1:0 --ca-cert " .. q(work .. "/ca.pem") .. " --seed " .. q(work .. "/seed.json") .. " --knobs "
  .. q(work .. "/knobs.json") .. " " .. table.concat(throttle, " ")) .. " 2>" .. q(emu_err) .. " </dev/null", "r"))
local emu_pid = tonumber(pipe:read("l"))
local ready = json.decode(pipe:read("l") or "null")
if not (ready and ready.url) then error("the emulator did not start: " .. read(emu_err), 0) end
local function emu_proc() return read(("/proc/%d/task/%d/children"):format(emu_pid, emu_pid)):match("%d+") or emu_pid end
local function emu_rss_mib() return (tonumber(read("/proc/" .. emu_proc() .. "/status"):match("VmHWM:%s+(%d+)")) or 0) / 1024 end

local function ctx(t)
  local p = t.principals[1]
  return ("{ tenant = %q, subscription = %q, credential = { client_id = %q, client_secret = %q } }")
    :format(t.id, t.subscriptions[1].id, p.appId, p.secret)
end
local locs = {}
for r = 1, R do locs[r] = ("%q"):format(REGIONS[r]) end
local subs_lua = {}
for s, sub in ipairs(isv_subs) do subs_lua[s] = ("%q"):format(sub) end
write(work .. "/policy.lua", ("return { placement = { subscriptions = { %s }, locations = { %s } } }\n")
  :format(table.concat(subs_lua, ", "), table.concat(locs, ", ")))
local map, lines = {}, { "customer,customer_tenant" }
for i, t in ipairs(tenants) do map[i] = ("  [%q] = %s,\n"):format(t.id, ctx(t)) end
for i = 1, N do lines[#lines + 1] = ("c%05d,%s"):format(i, tenants[(i - 1) % T + 1].id) end
write(work .. "/config.lua", ("return { cloud = { emulator = %q, ca_cert = %q },\n isv = %s,\n policy = \"policy.lua\",\n"
  .. " customers = {\n%s } }\n"):format(ready.url, ready.ca_cert, ctx(isv), table.concat(map)))
write(work .. "/customers.csv", table.concat(lines, "\n") .. "\n")

local t0 = session:now()
local out, code = sh(("CMKFLOW_STATE_DIR=%s /usr/bin/time -v %s run bulk-onboard --config %s --param file=%s "
  .. "--param kits=%s --param concurrency=%d --output json 2>%s"):format(q(work .. "/state"), q(bin),
  q(work .. "/config.lua"), q(work .. "/customers.csv"), q(work .. "/kits"), CONC, q(work .. "/time.err")))
local wall_s = (session:now() - t0) / 1000
local terr = read(work .. "/time.err")
local doc = json.decode(out) or {}
local rss = (tonumber(terr:match("Maximum resident set size %(kbytes%): (%d+)")) or 0) / 1024
local cpu = (tonumber(terr:match("User time %(seconds%): ([%d.]+)")) or 0)
  + (tonumber(terr:match("System time %(seconds%): ([%d.]+)")) or 0)

print(("bulk_scale: %d customers in %d customer tenants, %d ISV subscription(s) x %d region(s), concurrency %d, "
  .. "ARM writes %d/min (bucket %d, refill %.1f/s), reads 1500/min, Storage 1,200 writes/h, 250 accounts/region")
  :format(N, T, S, R, CONC, ARM_WRITES, ARM_WRITES, ARM_WRITES / 60))
print(("bulk_scale: %s done, %s failed, %s waiting (exit %s); %.1f s wall; cmkflow peak RSS %.1f MiB, %.1f s CPU; "
  .. "emulator peak RSS %.1f MiB"):format(tostring(doc.done), tostring(doc.failed), tostring(doc.waiting),
  tostring(code), wall_s, rss, cpu, emu_rss_mib()))
local LIMITS = { writes = { bucket = ARM_WRITES, rate = ARM_WRITES / 60 }, reads = { bucket = 1500, rate = 25 } }
local per_slot = {}
for _, r in ipairs(doc.runs or {}) do
  if r.subscription then
    local k = r.subscription .. " " .. tostring(r.location)
    per_slot[k] = (per_slot[k] or 0) + 1
  end
end
local binding, total_granted, total_allowed = nil, 0, 0
for _, sub in ipairs(isv_subs) do
  local parts, best = {}, nil
  for _, kind in ipairs { "writes", "reads" } do
    local st = (doc.throttling or {})["subscription:" .. sub .. "|" .. kind] or { sent = 0, throttled = 0 }
    local granted = st.sent - st.throttled
    local allowed = LIMITS[kind].bucket + LIMITS[kind].rate * wall_s
    local use = granted / allowed
    if kind == "writes" then total_granted, total_allowed = total_granted + granted, total_allowed + allowed end
    if not best or use > best.use then best = { kind = kind, use = use } end
    parts[#parts + 1] = ("%s %d granted (%.2f/s) of %d allowed: %.1f %%, %d answered 429 after the client's retries, "
      .. "%.0f task-seconds held back, learnt refill %s/s"):format(kind, granted, granted / wall_s, math.floor(allowed),
      100 * use, st.throttled, (st.waited_ms or 0) / 1000, tostring(st.rate))
  end
  if not binding or best.use > binding.use then binding = { sub = sub, kind = best.kind, use = best.use } end
  print(("bulk_scale: subscription %s: %s"):format(sub, table.concat(parts, "; ")))
end
print(("bulk_scale: binding limit: ARM %s of subscription %s, %.1f %% used over the run; ARM writes of all %d ISV "
  .. "subscriptions: %.1f %% of what they allowed"):format(binding.kind, binding.sub, 100 * binding.use, S,
  100 * total_granted / total_allowed))
local slots = {}
for k, n in pairs(per_slot) do slots[#slots + 1] = ("%s: %d"):format(k, n) end
table.sort(slots)
print("bulk_scale: storage accounts per subscription and region: " .. table.concat(slots, ", "))
print(("bulk_scale: target zero failed and >= 90 %% of the binding limit: %s, %s")
  :format(doc.failed == 0 and "failures met" or "failures NOT met", binding.use >= 0.9 and "rate met" or "rate NOT met"))
if code ~= 0 then
  for _, r in ipairs(doc.runs or {}) do
    if r.outcome ~= "done" then print("bulk_scale: first not done: " .. r.customer .. ": " .. json.encode(r.error)) break end
  end
  if not doc.runs then print("bulk_scale: " .. terr:sub(1, 800)) end
end
os.execute("kill -INT " .. emu_pid .. " 2>/dev/null")
pipe:read("a")
pipe:close()
if not os.getenv("BENCH_KEEP") then os.execute("rm -rf " .. q(work)) else print("bulk_scale: kept " .. work) end
