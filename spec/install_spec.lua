-- Installed and proven (docs/embedding.md): `make install` into a scratch prefix, then each
-- embedding example against the emulator: the C host built with `pkg-config --cflags --libs
-- cmkflow`, the Lua host (`require "cmkflow"` in a stock lua5.4) and a Python host over ctypes.
local json = require("cmkflow.core").json
local ext = require "support.external_emulator"
local files = require "support.files"
local cli = require "support.cli"
local seed = require "cmkflow.emulator.demo_seed"

local build = os.getenv("CMKFLOW_BUILD_DIR") or "build"
local source = os.getenv("CMKFLOW_SOURCE_DIR") or "."

local function sh(cmd)
  local p = assert(io.popen(cmd .. " 2>&1; echo \"exit=$?\""))
  local out = p:read("a")
  p:close()
  local code = tonumber(out:match("exit=(%d+)%s*$"))
  return code, out:gsub("exit=%d+%s*$", "")
end

describe("the installed library and its examples", function()
  local emu, prefix, dir, env
  setup(function()
    emu = ext.start {}
    dir = files.tmpdir()
    prefix = dir .. "/prefix"
    local code, out = sh("cmake --install " .. cli.quote(build) .. " --prefix " .. cli.quote(prefix))
    assert(code == 0, out)
    local isv, customer = seed.tenants[1], seed.tenants[2]
    env = {
      CMKFLOW_EMULATOR = emu.url, CMKFLOW_EMULATOR_CA = emu.ca_cert,
      ISV_TENANT = isv.id, ISV_CLIENT = isv.principals[1].appId, ISV_SECRET = isv.principals[1].secret,
      ISV_SUBSCRIPTION = isv.subscriptions[1].id,
      CUSTOMER_TENANT = customer.id, CUSTOMER_CLIENT = customer.principals[1].appId,
      CUSTOMER_SECRET = customer.principals[1].secret, CUSTOMER_SUBSCRIPTION = customer.subscriptions[1].id,
      LD_LIBRARY_PATH = prefix .. "/lib", PKG_CONFIG_PATH = prefix .. "/lib/pkgconfig",
      LUA_PATH = prefix .. "/share/lua/5.4/?.lua;" .. prefix .. "/share/lua/5.4/?/init.lua;;",
      LUA_CPATH = prefix .. "/lib/lua/5.4/?.so;;", CMKFLOW_LIB = prefix .. "/lib/libcmkflow.so",
    }
  end)
  teardown(function() if emu then emu:stop() end end)

  local function run(cmd, state)
    local parts = { "env", "-u", "CMKFLOW_LUA_PATH", "-u", "CMKFLOW_CONFIG", "CMKFLOW_STATE_DIR=" .. cli.quote(state) }
    for k, v in pairs(env) do parts[#parts + 1] = k .. "=" .. cli.quote(v) end
    return sh(table.concat(parts, " ") .. " " .. cmd)
  end

  local function succeeded(out, customer)
    local doc
    for line in out:gmatch("[^\n]+") do -- the run: the first line that is a JSON object (not an event)
      if line:match('^{"') then doc = json.decode(line) break end
    end
    assert(doc, out)
    assert.equal("succeeded", doc.status, out)
    assert.matches("^st" .. customer, doc.outputs.storage_account.name)
    assert.equal("Microsoft.Keyvault", doc.outputs.storage_account.properties.encryption.keySource)
  end

  it("installs the header, the library, cmkflow.pc and the Lua modules", function()
    for _, f in ipairs { "/include/cmkflow.h", "/lib/pkgconfig/cmkflow.pc", "/lib/libcmkflow.so",
                         "/lib/lua/5.4/cmkflow/core.so", "/share/lua/5.4/cmkflow/init.lua", "/bin/cmkflow" } do
      assert.is_truthy(files.read(prefix .. f, false), f)
    end
  end)

  it("installs the README, docs/ and examples/ under share/doc/cmkflow, the man page and the completions", function()
    local doc = prefix .. "/share/doc/cmkflow/"
    assert.equal(files.read(source .. "/README.md"), files.read(doc .. "README.md", false))
    assert.equal(files.read(source .. "/docs/README.md"), files.read(doc .. "docs/README.md", false))
    assert.equal(files.read(source .. "/docs/quickstart.md"), files.read(doc .. "docs/quickstart.md", false))
    for _, f in ipairs { "/share/doc/cmkflow/examples/policy.lua", "/share/man/man1/cmkflow.1",
                         "/share/bash-completion/completions/cmkflow", "/share/zsh/vendor-completions/_cmkflow" } do
      assert.is_truthy(files.read(prefix .. f, false), f)
    end
  end)

  it("the C host, built with pkg-config against the installed prefix, onboards a customer", function()
    local exe = dir .. "/onboard"
    -- (sh -c: pkg-config runs with the environment above, PKG_CONFIG_PATH naming the prefix)
    local code, out = run("sh -c " .. cli.quote(("cc %s/examples/embed/onboard.c $(pkg-config --cflags --libs cmkflow)"
      .. " -lpthread -o %s"):format(cli.quote(source), cli.quote(exe))), dir .. "/state-c")
    assert.equal(0, code, out)
    code, out = run(cli.quote(exe) .. " alpha", dir .. "/state-c")
    assert.equal(0, code, out)
    succeeded(out, "alpha")
  end)

  it("the Lua host (require \"cmkflow\" in a stock lua5.4) onboards a customer with events", function()
    local code, out = run("lua5.4 " .. cli.quote(source .. "/examples/embed/onboard.lua") .. " bravo",
                          dir .. "/state-lua")
    assert.equal(0, code, out)
    assert.matches("%[bravo%] done storage_account", out)
    succeeded(out, "bravo")
  end)

  it("a Python host over ctypes onboards a customer", function()
    local code, out = run("python3 " .. cli.quote(source .. "/examples/embed/onboard.py") .. " charlie",
                          dir .. "/state-py")
    assert.equal(0, code, out)
    succeeded(out, "charlie")
  end)
end)
