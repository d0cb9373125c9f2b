-- The cmkflow command line as a user meets it: versions, usage errors, exit codes, Ctrl-C.
local cli = require "support.cli"

describe("cmkflow CLI", function()
  it("prints the versions of cmkflow and every library it runs on", function()
    local r = cli.run({ "version" })
    assert.equals(0, r.code)
    assert.matches("^cmkflow %d+%.%d+%.%d+\n", r.stdout)
    assert.matches("\nLua 5%.4%.%d+\n", r.stdout)
    assert.matches("\nlibcurl %d+%.%d+%.%d+\n", r.stdout)
    assert.matches("\nOpenSSL 3%.%d+%.%d+", r.stdout)
    assert.matches("\nSQLite 3%.%d+%.%d+\n", r.stdout)
    assert.equals("", r.stderr)
  end)

  it("prints the versions as JSON for machines", function()
    local json = require("cmkflow.core").json
    local r = cli.run({ "version", "--output", "json" })
    assert.equals(0, r.code)
    local v = assert(json.decode(r.stdout))
    assert.matches("^%d+%.%d+%.%d+$", v.cmkflow)
    assert.matches("^Lua 5%.4", v.lua)
    assert.is_string(v.libcurl)
    assert.is_string(v.sqlite)
  end)

  it("exits 2 with a hint on usage errors", function()
    for _, args in ipairs({ {}, { "frobnicate" }, { "run" }, { "run", "x.lua", "--output", "yaml" },
                            { "run", "x.lua", "--param", "novalue" }, { "version", "--bogus" } }) do
      local r = cli.run(args)
      assert.equals(2, r.code, table.concat(args, " "))
      assert.matches("cmkflow", r.stderr)
      assert.equals("", r.stdout)
    end
  end)

  it("runs a workflow file and prints its result", function()
    local wf = cli.write_temp("return { customer = params.customer, ok = true }", ".lua")
    local r = cli.run({ "run", wf, "--param", "customer=contoso", "--output", "json" })
    os.remove(wf)
    assert.equals(0, r.code, r.stderr)
    assert.equals('{"customer":"contoso","ok":true}\n', r.stdout)
  end)

  it("prints the result indented for people without --output json", function()
    local wf = cli.write_temp("return { tags = json.array(), n = 1 }", ".lua")
    local r = cli.run({ "run", wf })
    os.remove(wf)
    assert.equals(0, r.code, r.stderr)
    assert.equals('{\n  "n": 1,\n  "tags": []\n}\n', r.stdout)
  end)

  it("exits 1 with the workflow's error and location on failure", function()
    local wf = cli.write_temp("local x = nil\nreturn x.field", ".lua")
    local r = cli.run({ "run", wf })
    os.remove(wf)
    assert.equals(1, r.code)
    assert.matches(":2: attempt to index a nil value", r.stderr)
  end)

  it("exits 4 naming the context when no credential is configured", function()
    local wf = cli.write_temp("return context('isv').tenant", ".lua")
    local r = cli.run({ "run", wf })
    assert.equals(4, r.code)
    assert.matches("NoCredential: no credential is configured for context 'isv'", r.stderr, 1, true)
    assert.matches("AZURE_CLIENT_ID", r.stderr, 1, true)
    os.remove(wf)
  end)

  it("builds the isv context from the Azure SDK environment variables", function()
    local wf = cli.write_temp("local c = context('isv') return { tenant = c.tenant, sub = c.subscription }", ".lua")
    local env = { AZURE_TENANT_ID = "11111111-2222-4333-8444-555555555555",
                  AZURE_CLIENT_ID = "0a1b2c3d-0000-4000-8000-000000000001", AZURE_CLIENT_SECRET = "not-used",
                  AZURE_SUBSCRIPTION_ID = "22222222-2222-4333-8444-555555555555" }
    local r = cli.run({ "run", wf, "--output", "json" }, env)
    assert.equals(0, r.code, r.stderr)
    assert.equals('{"sub":"22222222-2222-4333-8444-555555555555","tenant":"11111111-2222-4333-8444-555555555555"}\n', r.stdout)
    -- bad configuration is a usage error that names what to fix, before any request
    env.AZURE_TENANT_ID = "common"
    r = cli.run({ "run", wf }, env)
    assert.equals(2, r.code)
    assert.matches("AZURE_TENANT_ID", r.stderr, 1, true)
    env.AZURE_TENANT_ID, env.AZURE_CLIENT_SECRET = "11111111-2222-4333-8444-555555555555", nil
    r = cli.run({ "run", wf }, env)
    assert.equals(2, r.code)
    assert.matches("AZURE_CLIENT_SECRET", r.stderr, 1, true)
    r = cli.run({ "run", wf, "--cloud", "mars" })
    assert.equals(2, r.code)
    assert.matches("--cloud must be emulator, azure, usgov or china", r.stderr, 1, true)
    os.remove(wf)
  end)

  it("loads Lua modules from CMKFLOW_LUA_PATH instead of the embedded copies", function()
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. cli.quote(dir .. "/cmkflow")))
    local f = assert(io.open(dir .. "/cmkflow/json.lua", "wb"))
    f:write("return { marker = 'from the development tree' }")
    f:close()
    local wf = cli.write_temp("return require('cmkflow.json').marker", ".lua")
    local embedded = cli.run({ "run", wf })
    local dev = cli.run({ "run", wf }, { CMKFLOW_LUA_PATH = dir })
    os.execute("rm -rf " .. cli.quote(dir))
    os.remove(wf)
    assert.equals(0, embedded.code, embedded.stderr)
    assert.equals("null\n", embedded.stdout)
    assert.equals(0, dev.code, dev.stderr)
    assert.equals('"from the development tree"\n', dev.stdout)
  end)

  it("stops cleanly on Ctrl-C with exit 130", function()
    local wf = cli.write_temp("local t = os.clock() while os.clock() - t < 60 do end return 1", ".lua")
    -- SIGINT is re-sent (bounded) until the process ends, so it arrives after the handler is set.
    local script = table.concat({
      cli.quote(cli.bin) .. " run " .. cli.quote(wf) .. " 2>/dev/null & pid=$!",
      "i=0; while kill -0 $pid 2>/dev/null && [ $i -lt 100 ]; do kill -INT $pid; sleep 0.1; i=$((i+1)); done",
      "wait $pid; echo $?",
    }, "\n")
    local p = io.popen("sh -c " .. cli.quote(script))
    local code = tonumber(p:read("a"):match("(%d+)"))
    p:close()
    os.remove(wf)
    assert.equals(130, code)
  end)
end)
