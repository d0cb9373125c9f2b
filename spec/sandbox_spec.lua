-- The workflow sandbox: what workflow code can and cannot reach.
local sandbox = require "cmkflow.sandbox"

local function run(source, api)
  local fn, env_or_err = sandbox.load(source, "=(test)", api)
  assert(fn, env_or_err)
  return pcall(fn)
end

describe("workflow sandbox", function()
  local denied = {
    { "os.execute", "return os.execute('true')" },
    { "os.remove", "return os.remove('/tmp/x')" },
    { "os.exit", "return os.exit(3)" },
    { "io.popen", "return io.popen('id')" },
    { "io.open", "return io.open('/etc/passwd')" },
    { "package.loadlib", "return package.loadlib('libc.so.6', 'system')" },
    { "dofile", "return dofile('/etc/passwd')" },
    { "loadfile", "return loadfile('/etc/passwd')" },
    { "debug", "return debug.getregistry()" },
    { "collectgarbage", "return collectgarbage('collect')", "only \"count\"" },
  }
  for _, case in ipairs(denied) do
    it("denies " .. case[1], function()
      local ok, err = run(case[2])
      assert.is_false(ok)
      assert.matches(case[3] or "attempt to %a+ a nil value", tostring(err), 1, case[3] ~= nil)
    end)
  end

  it("refuses modules outside the allow-list", function()
    local ok, err = run("return require('io')")
    assert.is_false(ok)
    assert.matches("module 'io' is not available to workflows", tostring(err), 1, true)
    ok, err = run("return require('cmkflow.sandbox')")
    assert.is_false(ok)
    assert.matches("not available to workflows", tostring(err), 1, true)
  end)

  it("refuses binary chunks through load", function()
    local bytecode = string.dump(function() return 1 end)
    local env = sandbox.env()
    local fn, err = env.load(bytecode)
    assert.is_nil(fn)
    assert.matches("attempt to load a binary chunk", err, 1, true)
  end)

  it("keeps the safe standard library and the API", function()
    local ok, v = run("return string.format('%s-%d', params.name, math.max(1, 7)) .. os.date('!%Y', 0)",
      { params = { name = "contoso" } })
    assert.is_true(ok)
    assert.equals("contoso-71970", v)
  end)

  it("gives each run its own globals and libraries", function()
    assert(run("string.upper = nil; leaked = true"))
    local ok, v = run("return leaked == nil and string.upper('x')")
    assert.is_true(ok)
    assert.equals("X", v)
    assert.is_nil(rawget(_G, "leaked"))
    assert.is_function(string.upper)
  end)
end)
