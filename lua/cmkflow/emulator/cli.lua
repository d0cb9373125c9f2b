-- `cmkflow emulator`: the emulator in the foreground on a loopback address, with a CA of its own
-- (kept in --state DIR when given) and one JSON "ready" line on stdout.
local core = require "cmkflow.core"
local json = core.json
local file = require "cmkflow.util.file"
local knob_rules = require "cmkflow.emulator.knobs"
local state = require "cmkflow.emulator.state"

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

-- The options of `cmkflow emulator` (for lua/cmkflow/cli.lua's parser).
M.OPTIONS = { listen = "value", seed = "value", state = "value", ["ca-cert"] = "value",
              delay = "list", fault = "list", throttle = "list", knobs = "value", profile = "value" }

M.USAGE = [[
  --profile instant|realistic  instant (default): no latency, no visibility delays; realistic: seeded
                              per-operation latency and Azure's replication delays (docs/emulator.md)
  --delay KIND=SECONDS        eventual-consistency delay; KIND: service_principal, federated_credential,
                              role_assignment (repeatable)
  --fault SERVICE:METHOD:STATUS[:key=value]...
                              a fault rule; SERVICE: entra, graph, arm, keyvault, imds or *; METHOD: an HTTP
                              method or *; STATUS: 100-599, or 'drop' (close the connection) or 'delay'
                              (latency only); keys: count, after, probability, latency_ms, path, host (repeatable)
  --throttle arm|graph|keyvault|storage   that service's published limits (docs/emulator.md)
  --throttle arm.reads=N | arm.writes=N | graph.requests=N | keyvault.requests=N | storage.writes=N ...
                              ARM token buckets, N requests per minute (repeatable)
  --knobs FILE.json           knobs as in the seed's "knobs" field ({delays, faults, throttling,
                              lro_retry_after_s, key_material})]]

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

function M.main(opts, EXIT)
  local listen = opts.listen or "127.0.0.1:0"
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
  local ca_path = opts["ca-cert"] or (state_dir and state_dir .. "/ca.pem") or (os.tmpname() .. ".pem")
  local ok, werr = write_file(ca_path, ca_pem)
  if not ok then
    io.stderr:write("cmkflow: --ca-cert: cannot write: ", tostring(werr), "\n")
    return EXIT.usage
  end

  local started, srv, serr = pcall(core.server.start, { listen = listen, tls = true, cert_pem = cert_pem, key_pem = key_pem,
    handler_module = "cmkflow.emulator", config = json.encode(config) })
  if not started or not srv then
    io.stderr:write("cmkflow: emulator: ", tostring(started and serr or srv), "\n")
    return EXIT.usage
  end
  io.stdout:write(json.encode({ ready = true, url = srv:url(), ca_cert = ca_path }), "\n")
  io.stdout:flush()
  io.stderr:write("cmkflow emulator: listening on ", srv:url(), " (Ctrl-C stops)\n")
  -- Wait until interrupted: Ctrl-C's hook raises from the Lua loop below.
  local session = core.http.session()
  while true do
    local t = session:timer(1000)
    repeat session:run(200) until t:done()
  end
end

return M
