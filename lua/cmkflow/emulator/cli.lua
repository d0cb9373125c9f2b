-- `cmkflow emulator`: the emulator in the foreground on a loopback address, with a CA of its own
-- (kept in --state DIR when given) and one JSON "ready" line on stdout.
local core = require "cmkflow.core"
local json = core.json
local file = require "cmkflow.util.file"
local knob_rules = require "cmkflow.emulator.knobs"
local state = require "cmkflow.emulator.state"
local locator = require "cmkflow.emulator.locator"

local M = {}

local read_file, write_file = file.read, file.write

-- The emulator's CA: loaded from state_dir when present there, else generated (and kept there).
function M.certificate_authority(state_dir)
  if state_dir then
    local cert, key = read_file(state_dir .. "/ca.pem"), read_file(state_dir .. "/ca.key")
    if cert and key then return cert, key end
  end
  local cert, key = core.server.make_ca("cmkflow emulator CA")
  if state_dir then
    assert(write_file(state_dir .. "/ca.pem", cert))
    assert(write_file(state_dir .. "/ca.key", key, true))
  end
  return cert, key
end

local FAULT_KEYS = { count = "integer", after = "integer", probability = "number", latency_ms = "number", path = "string", host = "string" }

local function parse_fault(text)
  local parts = {}
  for p in (text .. ":"):gmatch("([^:]*):") do parts[#parts + 1] = p end
  if #parts < 3 then return nil, "--fault needs SERVICE:METHOD:STATUS[:key=value]..., got '" .. text .. "'" end
  local service, method, status = parts[1], parts[2], parts[3]
  local rule = { match = {} }
  if service ~= "*" then rule.match.operation = service end
  if method ~= "*" then rule.match.method = method end
  if status == "drop" then
    rule.drop = true
  elseif status ~= "delay" then
    rule.status = math.tointeger(tonumber(status))
    if not rule.status then return nil, "--fault '" .. text .. "': STATUS must be an HTTP status, 'drop' or 'delay'" end
  end
  for i = 4, #parts do
    local k, v = parts[i]:match("^([%w_]+)=(.*)$")
    if not k or not FAULT_KEYS[k] then
      return nil, "--fault '" .. text .. "': '" .. parts[i] .. "' is not one of count=, probability=, latency_ms=, path=, host="
    end
    if FAULT_KEYS[k] == "string" then
      rule.match[k] = v
    else
      local n = tonumber(v)
      if FAULT_KEYS[k] == "integer" then n = n and math.tointeger(n) end
      if n == nil then return nil, "--fault '" .. text .. "': " .. k .. " must be a number" end
      rule[k] = n
    end
  end
  if next(rule.match) == nil then rule.match = nil end
  return rule
end

-- Knobs from --knobs FILE, then --profile, --delay, --fault and --throttle. Returns knobs (or nil when none
-- were given), or nil, message naming the option.
function M.parse_knobs(opts)
  local knobs, any = { faults = {} }, false
  if opts.knobs then
    local text = read_file(opts.knobs)
    if not text then return nil, "--knobs: cannot read '" .. opts.knobs .. "'" end
    local decoded, err = json.decode(text)
    if type(decoded) ~= "table" then return nil, "--knobs: " .. opts.knobs .. " is not a JSON object: " .. tostring(err) end
    knobs, any = decoded, true
    knobs.faults = knobs.faults or {}
  end
  if opts.profile then
    knobs.profile, any = opts.profile, true -- the flags below go on top of the profile
  end
  for _, d in ipairs(opts.delay or {}) do
    local k, v = d:match("^([%w_]+)=(.*)$")
    if not k or not tonumber(v) then return nil, "--delay needs KIND=SECONDS, got '" .. d .. "'" end
    knobs.delays = knobs.delays or {}
    knobs.delays[k] = tonumber(v)
    any = true
  end
  for _, f in ipairs(opts.fault or {}) do
    local rule, err = parse_fault(f)
    if not rule then return nil, err end
    if type(knobs.faults) == "table" then knobs.faults[#knobs.faults + 1] = rule end
    any = true
  end
  for _, t in ipairs(opts.throttle or {}) do
    knobs.throttling = knobs.throttling or {}
    local kind, n = t:match("^arm%.(%a+)=(%d+)$")
    local service, field, value = t:match("^(%a+)%.([%a_]+)=(%d+)$")
    if knob_rules.PUBLISHED_LIMITS[t] then
      knobs.throttling[t] = "published"
    elseif kind == "reads" or kind == "writes" then
      knobs.throttling.arm = type(knobs.throttling.arm) == "table" and knobs.throttling.arm or {}
      knobs.throttling.arm[kind .. "_per_minute"] = math.tointeger(tonumber(n))
    elseif service and service ~= "arm" and knob_rules.PUBLISHED_LIMITS[service] then
      knobs.throttling[service] = type(knobs.throttling[service]) == "table" and knobs.throttling[service] or {}
      knobs.throttling[service][field] = math.tointeger(tonumber(value))
    else
      return nil, "--throttle needs arm.reads=N or arm.writes=N (requests per minute), SERVICE for its published "
        .. "limits (arm, graph, keyvault, storage) or SERVICE.FIELD=N, got '" .. t .. "'"
    end
    any = true
  end
  if not any then return nil end
  if type(knobs.faults) == "table" and next(knobs.faults) == nil then knobs.faults = nil end
  local ok, err = pcall(knob_rules.validate_knobs, knobs, "knobs")
  if not ok then return nil, (opts.knobs and "--knobs " .. opts.knobs .. ": " or "") .. tostring(err) end
  return knobs
end

-- Fixed addresses, as Azurite has (docs/emulator.md, "Ports"): the HTTPS endpoint and the proxy.
M.DEFAULT_LISTEN, M.DEFAULT_PROXY = "127.0.0.1:10443", "127.0.0.1:10444"

-- The proxy's allow-list: every cloud's Azure host names the certificate names (not localhost).
local function proxy_hosts()
  local hosts = {}
  for _, name in ipairs(core.server.default_names().dns) do
    if not name:match("localhost$") then hosts[#hosts + 1] = name end
  end
  return hosts
end

local function in_use_hint(flag, addr)
  return ("%s is already in use (another emulator?): choose another address with %s 127.0.0.1:PORT "
    .. "(0 picks a free port)"):format(addr, flag)
end

-- Starts the proxy (unless --proxy off) in front of the emulator at srv. proxy | false | nil, message.
local function start_proxy(opts, listen, srv)
  local addr = opts.proxy
  if addr == "off" then return false end
  if not addr then addr = opts.listen and (listen:gsub(":%d+$", ":0")) or M.DEFAULT_PROXY end
  if not addr:match("^127%.%d+%.%d+%.%d+:%d+$") and not addr:match("^%[::1%]:%d+$") then
    return nil, "--proxy must be a loopback address and port, e.g. 127.0.0.1:0, or 'off' (got '" .. addr .. "')"
  end
  local max = opts["proxy-connections"]
  if max and not (math.tointeger(tonumber(max)) and tonumber(max) >= 1 and tonumber(max) <= 4096) then
    return nil, "--proxy-connections must be 1..4096 (got '" .. max .. "')"
  end
  local target = srv:url():match("^https://(.*)$")
  local ok, proxy, err = pcall(core.server.proxy, { listen = addr, target = target, hosts = proxy_hosts(),
    max_connections = max and math.tointeger(tonumber(max)) or nil })
  if not ok then return nil, "--proxy: " .. tostring(proxy) end
  if not proxy then
    if type(err) == "table" and err.code == "AddressInUse" then return nil, in_use_hint("--proxy", addr) end
    return nil, "--proxy: " .. tostring(err)
  end
  return proxy
end

function M.main(opts, EXIT)
  local listen = opts.listen or M.DEFAULT_LISTEN
  if not listen:match("^127%.%d+%.%d+%.%d+:%d+$") and not listen:match("^%[::1%]:%d+$") then
    io.stderr:write("cmkflow: --listen must be a loopback address and port, e.g. 127.0.0.1:0 (got '", listen, "')\n")
    return EXIT.usage
  end
  local state_dir = opts.state
  local made, merr = true, nil
  if state_dir then made, merr = core.fs.mkdir_p(state_dir, tonumber("700", 8)) end
  if not made then
    io.stderr:write("cmkflow: --state: cannot create directory '", state_dir, "': ", tostring(merr), "\n")
    return EXIT.usage
  end
  -- the locator (url, CA, proxy) goes to the state directory, else to the per-user one
  local locator_dir = state_dir and file.absolute(state_dir) or locator.default_dir()
  local claim, holder = nil, nil
  if state_dir then
    claim, holder = locator.claim(locator_dir)
    if claim == false then
      io.stderr:write("cmkflow: --state ", state_dir, ": another emulator (", tostring(holder),
        ") is running with this state directory; stop it or choose another --state\n")
      return EXIT.usage
    elseif not claim then
      io.stderr:write("cmkflow: --state: ", tostring(holder), "\n")
      return EXIT.usage
    end
  end
  local config = { state_dir = state_dir }
  local knobs, kerr = M.parse_knobs(opts)
  if kerr then
    io.stderr:write("cmkflow: ", kerr, "\n")
    return EXIT.usage
  end
  config.knobs = knobs
  if opts.seed then
    local text = read_file(opts.seed)
    if not text then
      io.stderr:write("cmkflow: --seed: cannot read '", opts.seed, "'\n")
      return EXIT.usage
    end
    local seed, err = json.decode(text)
    if seed == nil then
      io.stderr:write("cmkflow: --seed: ", opts.seed, " is not valid JSON: ", tostring(err), "\n")
      return EXIT.usage
    end
    local ok, verr = pcall(state.validate_seed, seed)
    if not ok then
      io.stderr:write("cmkflow: --seed ", opts.seed, ": ", tostring(verr), "\n")
      return EXIT.usage
    end
    config.seed = seed
  end

  local ca_pem, ca_key = M.certificate_authority(state_dir)
  local cert_pem, key_pem = core.server.make_cert(ca_pem, ca_key, core.server.default_names())
  local ca_path = file.absolute(opts["ca-cert"] or (state_dir and state_dir .. "/ca.pem") or (os.tmpname() .. ".pem"))
  local ok, werr = write_file(ca_path, ca_pem)
  if not ok then
    io.stderr:write("cmkflow: --ca-cert: cannot write: ", tostring(werr), "\n")
    return EXIT.usage
  end

  local started, srv, serr = pcall(core.server.start, { listen = listen, tls = true, cert_pem = cert_pem, key_pem = key_pem,
    handler_module = "cmkflow.emulator", config = json.encode(config) })
  if not started or not srv then
    if started and type(serr) == "table" and serr.code == "AddressInUse" then
      io.stderr:write("cmkflow: emulator: ", in_use_hint("--listen", listen), "\n")
    else
      io.stderr:write("cmkflow: emulator: ", tostring(started and serr or srv), "\n")
    end
    return EXIT.usage
  end
  local proxy, perr = start_proxy(opts, listen, srv)
  if proxy == nil then
    srv:stop()
    io.stderr:write("cmkflow: emulator: ", perr, "\n")
    return EXIT.usage
  end
  local info = { url = srv:url(), ca_cert = ca_path, proxy = proxy and proxy:url() or nil, pid = core.fs.pid(),
                 state_dir = state_dir and locator_dir or nil }
  if not claim and core.fs.mkdir_p(locator_dir, tonumber("700", 8)) then
    local holder_text
    claim, holder_text = locator.claim(locator_dir)
    if claim == false then
      -- another emulator without --state claimed it first: cloud = "emulator" finds that one
      io.stderr:write("cmkflow emulator: not recorded in ", locator_dir, ": another emulator (", tostring(holder_text),
        ") is; give this one a --state DIR to find it there\n")
    end
  end
  if claim then
    local ok, perr2 = locator.publish(locator_dir, info)
    if not ok then
      io.stderr:write("cmkflow emulator: ", perr2, "\n")
      claim:release()
      claim = nil
    end
  end
  local ready = { ready = true, url = info.url, ca_cert = ca_path, proxy = info.proxy }
  if claim then ready.locator = locator_dir .. "/" .. locator.FILE end
  io.stdout:write(json.encode(ready), "\n")
  io.stdout:flush()
  io.stderr:write("cmkflow emulator: listening on ", srv:url(),
    proxy and (", HTTPS proxy for Azure's host names on " .. proxy:url()) or "", " (Ctrl-C stops)\n")
  -- Wait until interrupted: Ctrl-C's hook raises from the Lua loop below; the locator goes first.
  local session = core.http.session()
  local waited, why = pcall(function()
    while true do
      local t = session:timer(1000)
      repeat session:run(200) until t:done()
    end
  end)
  assert(not waited)
  if claim then locator.withdraw(locator_dir, claim) end
  if proxy then proxy:stop() end
  error(why, 0)
end

return M
