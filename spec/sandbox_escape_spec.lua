-- Escape attempts against the workflow sandbox (issue: "Secure and durable by construction",
-- point 1). Each case is data: sandboxed code that tries to get out, the refusal it must meet, and
-- after every attempt the host is checked unchanged (quoting, module functions, the string
-- library, no file written). The shell escape is also run end to end through the cmkflow binary.
local sandbox = require "cmkflow.sandbox"
local core = require "cmkflow.core"
local azure_errors = require "cmkflow.azure.errors"
local async = require "cmkflow.async"
local http = require "cmkflow.http"
local files = require "support.files"
local cli = require "support.cli"

local scratch = files.tmpdir()
local PWNED = scratch .. "/PWNED"

-- what the host holds before any attempt
local original = {
  explain = azure_errors.explain, from_response = azure_errors.from_response, gsub = string.gsub,
  encode = core.json.encode, async_run = async.run, http_new = http.new, auth_codes = azure_errors.AUTH_CODES,
  auth_code_count = 0,
}
for _ in pairs(azure_errors.AUTH_CODES) do original.auth_code_count = original.auth_code_count + 1 end

local function host_unchanged()
  assert.equals("it''s", (("it's"):gsub("'", "''")))
  assert.equals(original.explain, azure_errors.explain)
  assert.equals(original.from_response, azure_errors.from_response)
  assert.equals(original.gsub, string.gsub)
  assert.equals(original.encode, core.json.encode)
  assert.equals(original.async_run, async.run)
  assert.equals(original.http_new, http.new)
  assert.equals(original.auth_codes, azure_errors.AUTH_CODES)
  local n = 0
  for _ in pairs(azure_errors.AUTH_CODES) do n = n + 1 end
  assert.equals(original.auth_code_count, n)
  assert.is_false(getmetatable(""))
  assert.is_false(files.read(PWNED, false), "a file was written by sandboxed code")
end

local credential = core.auth.credential { kind = "client_secret", tenant = "00000000-0000-4000-8000-0000000000aa",
  client_id = "00000000-0000-4000-8000-0000000000bb", client_secret = "sup3r-s3cret-value" }
local foreign_coroutine = coroutine.create(function() coroutine.yield(1) end)

-- the values handed to sandboxed code, as the host hands its api
local function api()
  return { PWNED = PWNED, credential = credential, client = http.new {}, foreign = foreign_coroutine,
           interrupt = core.error.interrupt(),
           limit = core.error.new { code = "InstructionLimit", kind = "limit", message = "budget" },
           json = sandbox.readonly(core.json), async = sandbox.readonly(async) }
end

local function run(source)
  local fn, err = sandbox.load(source, "=(escape)", api())
  if not fn then return false, err end
  return pcall(fn)
end

-- { name, source, expect }: expect is a plain substring of the refusal, or a function(ok, value)
-- for attempts that "succeed" only in changing the workflow's own copy.
local SHELL = [[
local S = getmetatable("").__index
local g = S.gsub
S.gsub = function(s, p, r, n) if p == "'" then return g(s, p, r, n) .. "'; id > PWNED; : '", 0 end return g(s, p, r, n) end
]]
local ATTEMPTS = {
  { "the issue's string-metatable shell escape", SHELL, "attempt to index a boolean value" },
  { "getmetatable('').__index through a method", "return ('').__index.gsub", "attempt to index a nil value" },
  { "assigning a method on the string type", "local s = 'x'; s.gsub = print", "attempt to index a string value" },
  { "debug.getmetatable of a string", "return debug.getmetatable('')", "attempt to index a nil value" },
  { "debug.setmetatable / getregistry", "return debug.getregistry()", "attempt to index a nil value" },
  { "patching the workflow's string library", "string.gsub = function() return 'pwned' end; return ('a'):gsub('a', 'b')",
    function(ok, v) return ok and v == "b" end },
  { "patching cmkflow.azure.errors.explain", "require('cmkflow.azure.errors').explain = function() end", "read-only" },
  { "rawset on a module view", "rawset(require('cmkflow.azure.errors'), 'explain', print)", "read-only" },
  { "setmetatable on a module view", "setmetatable(require('cmkflow.azure.errors'), {})", "cannot change the metatable" },
  { "getmetatable of a module view, then patch", "getmetatable(require('cmkflow.azure.errors')).__index = {}",
    "attempt to index a string value" },
  { "patching a nested shared table", "require('cmkflow.azure.errors').AUTH_CODES.Pwned = true", "read-only" },
  { "clearing a nested shared table through pairs",
    "local t = require('cmkflow.azure.errors').AUTH_CODES for k in pairs(t) do t[k] = nil end", "read-only" },
  { "patching the json codec handed as a global", "json.encode = function() return 'x' end", "read-only" },
  { "patching async.run", "require('cmkflow.async').run = error", "read-only" },
  { "the HTTP session's set_debug writes files", "require('cmkflow.http').session():set_debug(PWNED)",
    "attempt to call a nil value" },
  { "replacing http.new", "require('cmkflow.http').new = print", "read-only" },
  { "require of the core", "return require('cmkflow.core')", "not available to workflows" },
  { "require of io / os / debug", "return require('io') or require('os') or require('debug')", "not available" },
  { "require of the sandbox itself", "return require('cmkflow.sandbox')", "not available" },
  { "package.loaded", "return package.loaded['cmkflow.core']", "attempt to index a nil value" },
  { "_G.os.execute", "return _G.os.execute('id > ' .. PWNED)", "attempt to call a nil value" },
  { "_ENV.io.open", "return _ENV.io.open(PWNED, 'w')", "attempt to index a nil value" },
  { "io.popen", "return io.popen('id > ' .. PWNED)", "attempt to index a nil value" },
  { "os.remove / os.rename / os.tmpname", "return os.remove(PWNED) or os.rename('a', 'b') or os.tmpname()",
    "attempt to call a nil value" },
  { "dofile and loadfile", "return loadfile('/etc/passwd') or dofile('/etc/passwd')", "attempt to call a nil value" },
  { "string.dump", "return string.dump(function() end)", "attempt to call a nil value" },
  { "a binary chunk through load", "return load('\\27Lua\\84\\0')", function(ok, v, e) return ok and v == nil end },
  { "load with mode 'b'", "return assert(load('return 1', 'x', 'b'))", "only text chunks" },
  { "load with a reader returning a binary chunk",
    "local sent; return assert(load(function() if sent then return nil end sent = true return '\\27Lua' end))",
    "attempt to load a binary chunk" },
  { "load with a custom env reaching host globals",
    "local f = assert(load('return io or os or require or string and string.dump', 'x', 't', {})) return f()",
    function(ok, v) return ok and v == nil end },
  { "load with a non-table env", "return assert(load('return 1', 'x', 't', 'oops'))", "must be a table" },
  { "collectgarbage('stop')", "collectgarbage('stop')", "only \"count\"" },
  { "resuming a host coroutine from a workflow coroutine",
    "local co = coroutine.create(function() return coroutine.resume(foreign) end)\n" ..
    "local ok, e = coroutine.resume(co) if not ok then error(e, 0) end",
    "not a coroutine this workflow created" },
  { "yielding the main thread", "coroutine.yield('escape')", "not a coroutine this workflow created" },
  { "yielding an async task to its scheduler", "return async.run(function() coroutine.yield('escape') end)",
    "not a coroutine this workflow created" },
  { "resuming a host coroutine", "return coroutine.resume(foreign)", "not a coroutine this workflow created" },
  { "pcall swallowing the interrupt", "pcall(error, interrupt) return 'swallowed'", "interrupted" },
  { "xpcall swallowing the interrupt", "xpcall(error, function() return 'h' end, interrupt) return 'x'", "interrupted" },
  { "coroutine.resume swallowing an exceeded limit",
    "local co = coroutine.create(function() error(limit) end) coroutine.resume(co) return 'x'", "budget" },
  { "getmetatable of a credential", "return getmetatable(credential).__index", "attempt to index a nil value" },
  { "getmetatable of an HTTP client", "getmetatable(client).request = print", "attempt to index a nil value" },
  { "setmetatable on an HTTP client", "setmetatable(client, {})", "cannot change the metatable" },
  { "tostring of a credential", "return tostring(credential)",
    function(ok, v) return ok and v == "cmkflow.credential" end },
  { "pairs over a credential", "for k, v in pairs(credential) do end", "table expected" },
  { "a credential's fields", "return credential.client_secret or credential.secret",
    function(ok, v) return ok and v == nil end },
  { "os.getenv of a secret", "return os.getenv('HOME') or os.getenv('AZURE_CLIENT_SECRET') or os.getenv('PATH')",
    function(ok, v) return ok and v == nil end },
}

describe("sandbox escape attempts (Lua API)", function()
  after_each(host_unchanged)
  teardown(function() os.remove(PWNED) os.remove(scratch) end)

  for _, a in ipairs(ATTEMPTS) do
    it("refuses " .. a[1], function()
      local ok, v, e = run(a[2])
      if type(a[3]) == "function" then
        assert.is_true(a[3](ok, v, e), "unexpected outcome: " .. tostring(ok) .. " " .. tostring(v))
      else
        assert.is_false(ok, "the attempt was not refused: " .. tostring(v))
        assert.matches(a[3], tostring(v), 1, true)
      end
    end)
  end

  it("holds at least 30 attempts", function() assert.is_true(#ATTEMPTS >= 30) end)

  it("no module offered hands out a way to files, the shell or the session", function()
    local forbidden = { [io.open] = "io.open", [io.popen] = "io.popen", [os.execute] = "os.execute",
      [os.remove] = "os.remove", [os.rename] = "os.rename", [load] = "load", [loadfile] = "loadfile",
      [dofile] = "dofile", [require] = "require", [package.loadlib] = "package.loadlib",
      [string.dump] = "string.dump", [debug.getmetatable] = "debug.getmetatable",
      [http.session] = "http.session", [core.http.session] = "core.http.session" }
    local session = core.http.session()
    local env = sandbox.env()
    local seen = {}
    local function walk(v, path)
      if type(v) == "function" then
        assert.is_nil(forbidden[v], path .. " is " .. tostring(forbidden[v]))
      elseif type(v) == "userdata" then
        assert.is_nil(io.type(v), path .. " is a file handle")
        assert.are_not.equal(session, v, path .. " is the HTTP session")
      elseif type(v) == "table" and not seen[v] then
        seen[v] = true
        for k, x in pairs(v) do walk(x, path .. "." .. tostring(k)) end
      end
    end
    local n = 0
    for name in pairs { ["cmkflow.azure"] = 1, ["cmkflow.azure.cloud"] = 1, ["cmkflow.azure.arm"] = 1,
                        ["cmkflow.azure.graph"] = 1, ["cmkflow.azure.keyvault"] = 1, ["cmkflow.azure.errors"] = 1,
                        ["cmkflow.azure.validate"] = 1, ["cmkflow.workflow.cmk"] = 1, ["cmkflow.json"] = 1,
                        ["cmkflow.async"] = 1, ["cmkflow.http"] = 1 } do
      walk(env.require(name), name)
      n = n + 1
    end
    walk(env, "_ENV")
    assert.equals(11, n)
  end)

  it("a view reads like the module: fields, nested tables, pairs and #", function()
    local ok, v = run([[
      local e = require('cmkflow.azure.errors')
      local n = 0 for _ in pairs(e.AUTH_CODES) do n = n + 1 end
      return type(e.explain) == 'function' and n > 0 and #{ 1, 2 } == 2 and json.encode(json.array { 1 }) == '[1]'
    ]])
    assert.is_true(ok, tostring(v))
    assert.is_true(v)
  end)

  it("the host's own code cannot reach the string metatable either", function()
    assert.is_false(getmetatable(""))
    assert.equals("b", ("a"):gsub("a", "b"))
  end)
end)

describe("sandbox escape attempts (the cmkflow binary)", function()
  local function run_in(dir, wf, env)
    local out, err = os.tmpname(), os.tmpname()
    local parts = { "cd", cli.quote(dir), "&&", "env", "-u", "CMKFLOW_LUA_PATH", "-u", "CMKFLOW_CONFIG",
                    "CMKFLOW_STATE_DIR=" .. cli.quote(dir .. "/state") }
    for k, v in pairs(env or {}) do parts[#parts + 1] = k .. "=" .. cli.quote(v) end
    parts[#parts + 1] = cli.quote(cli.bin) .. " run " .. cli.quote(wf) .. " --output json >" .. out .. " 2>" .. err
    local _, _, code = os.execute(table.concat(parts, " "))
    local r = { code = code, stdout = files.read(out, ""), stderr = files.read(err, "") }
    os.remove(out)
    os.remove(err)
    return r
  end

  it("the issue's shell escape, end to end: the run does not create PWNED", function()
    local dir = files.tmpdir()
    -- the payload swallowed by pcall, then a whole run (state directory, journal, embedded emulator)
    local wf = files.write(dir .. "/wf.lua", "pcall(function()\n" .. SHELL .. "\nend)\n" .. [[
      return { name = "escape", steps = { { name = "a", run = function(ctx) return { q = ('x'):gsub("'", "") } end } } }
    ]])
    local r = run_in(dir, wf)
    local pwned = files.read(dir .. "/PWNED", false)
    files.sh("rm -rf " .. cli.quote(dir))
    assert.is_false(pwned, "the escape ran a shell command")
    assert.equals(0, r.code, r.stderr)
    -- and unguarded, the workflow file fails to load at its first line: a bad workflow (exit 2)
    dir = files.tmpdir()
    wf = files.write(dir .. "/wf.lua", SHELL .. "return { name = 'x', steps = {} }")
    r = run_in(dir, wf)
    pwned = files.read(dir .. "/PWNED", false)
    files.sh("rm -rf " .. cli.quote(dir))
    assert.is_false(pwned)
    assert.equals(2, r.code)
    assert.matches("attempt to index a boolean value", r.stderr, 1, true)
  end)

  it("the same escape from a policy file named in the configuration creates no PWNED", function()
    local dir = files.tmpdir()
    files.write(dir .. "/policy.lua", "pcall(function()\n" .. SHELL .. "\nend)\nreturn { location = 'westeurope' }")
    local cfg = files.write(dir .. "/cmkflow.lua", "return { cloud = 'azure', policy = 'policy.lua' }")
    local wf = files.write(dir .. "/wf.lua", [[
      return { name = "escape", steps = { { name = "a", run = function(ctx) return { q = ("it's"):gsub("'", "") } end } } }
    ]])
    local out, err = os.tmpname(), os.tmpname()
    local _, _, code = os.execute("cd " .. cli.quote(dir) .. " && env -u CMKFLOW_LUA_PATH CMKFLOW_STATE_DIR=" ..
      cli.quote(dir .. "/state") .. " " .. cli.quote(cli.bin) .. " run " .. cli.quote(wf) .. " --config " ..
      cli.quote(cfg) .. " >" .. out .. " 2>" .. err)
    local stderr = files.read(err, "")
    os.remove(out)
    os.remove(err)
    local pwned = files.read(dir .. "/PWNED", false)
    files.sh("rm -rf " .. cli.quote(dir))
    assert.is_false(pwned, "the policy's escape ran a shell command")
    assert.equals(0, code, stderr)
  end)

  it("os.getenv answers only the documented names", function()
    local dir = files.tmpdir()
    local wf = files.write(dir .. "/wf.lua", "return { name = 'env', steps = { { name = 'a', run = function() " ..
      "return { secret = os.getenv('ISV_SECRET') or 'none', lang = os.getenv('LANG') or 'unset' } end } } }")
    local r = run_in(dir, wf, { ISV_SECRET = "s3cret-of-the-isv", LANG = "C.UTF-8" })
    files.sh("rm -rf " .. cli.quote(dir))
    assert.equals(0, r.code, r.stderr)
    assert.same({ secret = "none", lang = "C.UTF-8" }, core.json.decode(r.stdout).outputs.a)
  end)

  it("set_debug of the HTTP session is out of reach, so no trace file is written", function()
    local dir = files.tmpdir()
    local wf = files.write(dir .. "/wf.lua", "return { name = 'dbg', steps = { { name = 'a', run = function() " ..
      "local ok = pcall(function() require('cmkflow.http').session():set_debug('" .. dir .. "/trace') end) " ..
      "return { reached = ok } end } } }")
    local r = run_in(dir, wf)
    local trace = files.read(dir .. "/trace", false)
    files.sh("rm -rf " .. cli.quote(dir))
    assert.equals(0, r.code, r.stderr)
    assert.is_false(core.json.decode(r.stdout).outputs.a.reached)
    assert.is_false(trace)
  end)
end)
