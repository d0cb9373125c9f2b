-- `cmkflow emulator`: the emulator in the foreground on a loopback address, with a CA of its own
-- (kept in --state DIR when given) and one JSON "ready" line on stdout.
local core = require "cmkflow.core"
local json = core.json

local M = {}

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function write_file(path, content, private)
  if private then os.execute("umask 077; : > '" .. path:gsub("'", "'\\''") .. "'") end
  local f, err = io.open(path, "wb")
  if not f then return nil, err end
  f:write(content)
  f:close()
  return true
end

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

function M.main(opts, EXIT)
  local listen = opts.listen or "127.0.0.1:0"
  if not listen:match("^127%.%d+%.%d+%.%d+:%d+$") and not listen:match("^%[::1%]:%d+$") then
    io.stderr:write("cmkflow: --listen must be a loopback address and port, e.g. 127.0.0.1:0 (got '", listen, "')\n")
    return EXIT.usage
  end
  local state_dir = opts.state
  if state_dir and not os.execute("mkdir -p '" .. state_dir:gsub("'", "'\\''") .. "'") then
    io.stderr:write("cmkflow: --state: cannot create directory '", state_dir, "'\n")
    return EXIT.usage
  end
  local config = { state_dir = state_dir }
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
    local ok, verr = pcall(require("cmkflow.emulator.state").validate_seed, seed)
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
