-- The emulator's cost as the world grows (issue 13 point 4; `make bench`, never `make check`):
-- N customers (default 10,000), each in its own tenant with its own customer principal (a
-- generated seed), onboarded end to end against one emulator on the instant profile, at most C
-- at a time (default 32). Prints the time per onboard of customers 1-100 and of the last 100 and
-- their ratio (target <= 1.2), the total wall time, the failures, and both processes' peak RSS.
--   lua5.4 tools/bench/emulator_scale.lua [N=10000] [C=32]   (BENCH_TRACE=1: each step's times)
--   (BENCH_HTTP_TRACE=path: the driver's libcurl trace, connection reuse included, in that file)
--
-- Two processes, so that each one's memory is its own:
--   this one   generates the seed, runs the emulator (core.server, its own thread and Lua state:
--              what `cmkflow emulator` runs) and reports; its VmHWM and CPU are the emulator's
--   the driver this file again with --drive: the CLI's own code (cmkflow.app.pipeline,
--              cmkflow.workflow.engine, the SQLite run store, one HTTP session) running the stock
--              `onboard` workflow once per customer on one async scheduler, as `bulk-onboard`
--              does, but with each customer's own credential as its "customer" context (today's
--              bulk-onboard has one customer context for every row)
-- Emulator knobs: lro_retry_after_s = 0 and key_material = "pooled" (vault keys and, since the seed
-- says so, the tenants' signing keys come from a small pool: the figure is the emulator's and the
-- workflow's cost, not 10,000 RSA generations; docs/emulator.md).
local core = require "cmkflow.core"
local json = core.json

local function customer(i)
  return { name = ("c%05d"):format(i), tenant = ("c0000000-0000-4000-8000-%012x"):format(i),
           subscription = ("5b000000-0000-4000-8000-%012x"):format(i),
           app_id = ("a0000000-0000-4000-8000-%012x"):format(i), secret = "bench-customer-secret-" .. i }
end

local read = require("cmkflow.util.file").read

local function status_kb(pid, field)
  return tonumber((read("/proc/" .. pid .. "/status") or ""):match(field .. ":%s+(%d+)")) or 0
end

-- user + system CPU seconds of this process so far
local function cpu_s()
  local stat = (read("/proc/self/stat") or ""):gsub("^.-%) ", "")
  local fields = {}
  for x in stat:gmatch("%S+") do fields[#fields + 1] = x end
  return ((tonumber(fields[12]) or 0) + (tonumber(fields[13]) or 0)) / 100 -- USER_HZ
end

-- ---- the driver (the CLI's side) ---------------------------------------------------------------

local function drive(url, ca, n, concurrency)
  local host = require "cmkflow.host"
  local pipeline = require "cmkflow.app.pipeline"
  local engine = require "cmkflow.workflow.engine"
  local async = require "cmkflow.async"
  local state = require "cmkflow.app.state"
  local isv = require("cmkflow.emulator.demo_seed").tenants[1]
  host.set_cloud("emulator", url, ca)
  local cloud = host.current_cloud()
  local function credential(tenant, app_id, secret)
    return core.auth.credential { kind = "client_secret", tenant = tenant, client_id = app_id, client_secret = secret,
      authority = cloud.authority, ca_file = cloud.ca_file, connect_to = cloud.connect_to }
  end
  host.contexts.isv = { credential = credential(isv.id, isv.principals[1].appId, isv.principals[1].secret),
                        tenant = isv.id, subscription = isv.subscriptions[1].id }
  local kind, what = pipeline.resolve_workflow("onboard")
  local def = assert(pipeline.load(kind, what))
  local policy = pipeline.load_policy(nil)
  local db = state.open_store()
  if os.getenv("BENCH_HTTP_TRACE") then core.http.session():set_debug(os.getenv("BENCH_HTTP_TRACE")) end
  local config = json.encode({ cloud = "emulator", emulator = url })
  local now = core.monotonic_ms
  local started, durations, finished = now(), {}, {}
  local failures, first_error, done = 0, nil, 0
  local trace = os.getenv("BENCH_TRACE") -- every step's start and end on the driver's stderr

  local function onboard(i)
    local c = customer(i)
    local name = "customer#" .. i -- this run's "customer" context
    host.contexts[name] = { credential = credential(c.tenant, c.app_id, c.secret), tenant = c.tenant,
                            subscription = c.subscription }
    local params = assert(engine.check_params(def, { customer = c.name, key_size = 2048 }))
    local ctx = pipeline.make_ctx(def, params, policy)
    local context, info, has = ctx.context, ctx.context_info, ctx.has_context
    local function mine(n) return n == "customer" and name or n end
    ctx.context = function(n) return context(mine(n)) end
    ctx.context_info = function(n) return info(mine(n)) end
    ctx.has_context = function(n) return has(mine(n)) end
    local t0 = now()
    local run_id = db:create_run { workflow = def.name, params = json.encode(params), config = config }
    local result = engine.execute { def = def, ctx = ctx, store = db, run_id = run_id, progress = trace and function(e)
      io.stderr:write(("%d ms %s %s %s\n"):format(now() - t0, c.name, e.kind, tostring(e.step)))
    end }
    durations[i], finished[i] = now() - t0, now() - started
    done = done + 1
    if done % 100 == 0 then -- the parent reads its own (the emulator's) CPU time at each of these
      io.stdout:write("done ", done, "\n")
      io.stdout:flush()
    end
    if result.status ~= "succeeded" then
      failures = failures + 1
      first_error = first_error or (c.name .. ": " .. result.status .. ": " .. tostring(result.error))
    end
    host.contexts[name] = nil
  end

  local next_index = 0
  local function worker()
    while next_index < n do
      next_index = next_index + 1
      onboard(next_index)
      if next_index % 1000 == 0 then
        io.stderr:write(("  %d customers, %.1f s\n"):format(next_index, (now() - started) / 1000))
      end
    end
  end
  async.run(function()
    local workers = {}
    for w = 1, math.min(concurrency, n) do workers[w] = async.spawn(worker) end
    for _, w in ipairs(workers) do async.await(w) end
  end)
  io.stdout:write(json.encode({ durations = durations, finished = finished, failures = failures,
    first_error = first_error or json.null, wall_ms = now() - started,
    hwm_kb = status_kb("self", "VmHWM"), cpu_s = cpu_s(), http = core.http.session():stats(),
    heap_kb = collectgarbage("count") }), "\n")
end

if arg[1] == "--drive" then
  drive(arg[2], arg[3], tonumber(arg[4]), tonumber(arg[5]))
  return
end

-- ---- the seed, the emulator, the report --------------------------------------------------------

local N = tonumber(arg[1]) or 10000
local C = tonumber(arg[2]) or 32
local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
local work = io.popen("mktemp -d /tmp/cmkflow-scale.XXXXXX"):read("l")

-- the demo seed's ISV tenant, then one tenant per customer with a principal that may do what the
-- customer's side of onboarding needs (as the demo's customer-admin), written as text piece by
-- piece so this process never holds 10,000 tenants as Lua tables
local parts = {}
local demo = require "cmkflow.emulator.demo_seed"
parts[1] = '{"random_seed":7,"knobs":{"lro_retry_after_s":0,"key_material":"pooled"},"tenants":['
  .. assert(json.encode(demo.tenants[1]))
for i = 1, N do
  local c = customer(i)
  local scope = "/subscriptions/" .. c.subscription
  parts[#parts + 1] = ((',{"id":%q,"name":%q,"domain":"%s.example","subscriptions":[{"id":%q}],"principals":[{'
    .. '"name":"admin","appId":%q,"secret":%q,"graph_roles":["Application.ReadWrite.All"],"roles":['
    .. '{"role":"Owner","scope":%q},{"role":"Key Vault Crypto Officer","scope":%q}]}]}')
    :format(c.tenant, c.name, c.name, c.subscription, c.app_id, c.secret, scope, scope))
end
parts[#parts + 1] = "]}"
local seed_file = work .. "/seed.json"
local f = assert(io.open(seed_file, "wb"))
f:write(table.concat(parts))
f:close()
parts = nil
collectgarbage()

local ca, cakey = core.server.make_ca("bench CA")
local cert, key = core.server.make_cert(ca, cakey, core.server.default_names())
local ca_file = work .. "/ca.pem"
f = assert(io.open(ca_file, "wb"))
f:write(ca)
f:close()
local session = core.http.session()
local t_start = session:now()
local emu <close> = core.server.start { listen = "127.0.0.1:0", tls = true, cert_pem = cert, key_pem = key,
  handler_module = "cmkflow.emulator", config = json.encode({ seed_file = seed_file }) }
local seed_s = (session:now() - t_start) / 1000
collectgarbage()

local cpu0 = cpu_s()
local self_path = arg[0]
local p = assert(io.popen(("CMKFLOW_STATE_DIR=%s lua5.4 %s --drive %s %s %d %d 2>%s"):format(q(work .. "/runs"),
  q(self_path), q(emu:url()), q(ca_file), N, C, q(work .. "/driver.err"))))
-- the emulator's CPU time (this process's) after every 100 finished onboards
local emu_cpu, out = { [0] = 0 }, ""
for line in p:lines() do
  local done = tonumber(line:match("^done (%d+)$"))
  if done then emu_cpu[done] = cpu_s() - cpu0 else out = line end
end
p:close()
local r = json.decode(out)
if type(r) ~= "table" or not r.durations then
  error("the driver failed: " .. tostring(read(work .. "/driver.err")):sub(-2000), 0)
end

-- time per onboard: each one's own wall time (concurrent ones overlap), averaged; and the rate at
-- which they finish (the wall time spent finishing 100 of them, / 100)
local function mean(from, to)
  local s = 0
  for i = from, to do s = s + r.durations[i] end
  return s / (to - from + 1)
end
local finish = {}
for i = 1, N do finish[i] = r.finished[i] end
table.sort(finish)
local k = math.min(100, N)
local first, last = mean(1, k), mean(N - k + 1, N)
local first_rate = finish[k] / k
local last_rate = (finish[N] - (finish[N - k] or 0)) / k
print(("emulator_scale: %d customers in their own tenants, concurrency %d, instant profile (lro_retry_after_s=0, "
  .. "key_material=pooled); seed load %.1f s"):format(N, C, seed_s))
print(("emulator_scale: time per onboard, customers 1-%d: %.1f ms; customers %d-%d: %.1f ms; ratio %.2f (target <= 1.2)")
  :format(k, first, N - k + 1, N, last, last / first))
-- (the first 100 carry the key pool's one-time background RSA generation: 101-200 is printed too)
local function emu_ms(from, to) return emu_cpu[from] and emu_cpu[to] and (emu_cpu[to] - emu_cpu[from]) * 1000 / (to - from) end
local first_cpu, second_cpu, last_cpu = emu_ms(0, 100), emu_ms(100, 200), emu_ms(N - 100, N)
if first_cpu and last_cpu then
  print(("emulator_scale: emulator CPU per onboard, finished 1-100: %.1f ms; 101-200: %s; last 100: %.1f ms; "
    .. "ratio last / 101-200: %s"):format(first_cpu, second_cpu and ("%.1f ms"):format(second_cpu) or "-", last_cpu,
    second_cpu and ("%.2f"):format(last_cpu / second_cpu) or "-"))
end
print(("emulator_scale: wall time per finished onboard, first %d: %.2f ms; last %d: %.2f ms; ratio %.2f")
  :format(k, first_rate, k, last_rate, last_rate / first_rate))
print(("emulator_scale: total %.1f s wall, %d failed%s; driver (CLI) peak RSS %.1f MiB, %.1f s CPU; emulator peak RSS %.1f MiB, "
  .. "%.1f s CPU"):format(r.wall_ms / 1000, r.failures, r.failures > 0 and (" (first: " .. r.first_error .. ")") or "",
  r.hwm_kb / 1024, r.cpu_s, status_kb("self", "VmHWM") / 1024, cpu_s() - cpu0))
print(("emulator_scale: the driver's Lua heap at the end: %.1f MiB"):format(r.heap_kb / 1024))
print(("emulator_scale: the driver's HTTP: %d requests (%.1f per onboard), %d connections, %d TLS handshakes, %d token "
  .. "fetches"):format(r.http.requests, r.http.requests / N, r.http.connects, r.http.tls_handshakes, r.http.token_fetches))
if os.getenv("BENCH_TRACE") then io.stderr:write(read(work .. "/driver.err") or "") end -- the steps' times
os.execute("rm -rf " .. q(work))
