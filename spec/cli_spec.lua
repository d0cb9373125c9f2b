-- The cmkflow command line as a user meets it: versions, usage errors, exit codes, Ctrl-C.
local cli = require "support.cli"
local files = require "support.files"
local json = require("cmkflow.core").json

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

  -- a one-step workflow definition whose step runs body (ctx in scope), with declared params
  local function workflow(body, params)
    return cli.write_temp(("return { name = 't', params = %s, steps = { { name = 's', mutates = false, run = function(ctx) %s end } } }")
      :format(params or "{}", body), ".lua")
  end
  local function state() return { CMKFLOW_STATE_DIR = files.tmpdir() } end

  it("runs a workflow file and prints its run: status and each step's outputs", function()
    local wf = workflow("return { customer = ctx.params.customer, ok = true }",
                        "{ customer = { type = 'string', required = true } }")
    local r = cli.run({ "run", wf, "--param", "customer=contoso", "--output", "json" }, state())
    os.remove(wf)
    assert.equals(0, r.code, r.stderr)
    local doc = json.decode(r.stdout)
    assert.equals("succeeded", doc.status)
    assert.same({ customer = "contoso", ok = true }, doc.outputs.s)
  end)

  it("prints the outputs indented for people without --output json", function()
    local wf = workflow("return { tags = require('cmkflow.json').array(), n = 1 }")
    local r = cli.run({ "run", wf }, state())
    os.remove(wf)
    assert.equals(0, r.code, r.stderr)
    assert.matches('run %x+%-[%x-]+ %(.-%): succeeded\n', r.stdout)
    assert.matches('"n": 1,\n%s+"tags": %[%]', r.stdout)
  end)

  it("prints plain outputs one 'name: value' a line", function()
    local wf = cli.write_temp("return { name = 't', steps = { { name = 's', mutates = false, run = function() "
      .. "return { status = 'pending', version = 7 } end } }, outputs = function(ctx) return ctx.outputs.s end }", ".lua")
    local r = cli.run({ "run", wf }, state())
    os.remove(wf)
    assert.equals(0, r.code, r.stderr)
    assert.matches("\nstatus: +pending\nversion: +7\n$", r.stdout)
    assert.is_nil(r.stdout:find("{", 1, true))
  end)

  it("exits 1 with the step's error and location on failure", function()
    local wf = workflow("local x = nil\nreturn x.field")
    local r = cli.run({ "run", wf }, state())
    os.remove(wf)
    assert.equals(1, r.code)
    assert.matches("step 's' failed: InternalError: .-:2: attempt to index a nil value", r.stdout)
  end)

  it("refuses a file that returns no workflow definition, before any call (exit 2)", function()
    local wf = cli.write_temp("return { customer = 'contoso' }", ".lua")
    local r = cli.run({ "run", wf }, state())
    os.remove(wf)
    assert.equals(2, r.code)
    assert.matches("must return a workflow definition", r.stderr, 1, true)
    assert.equals("", r.stdout)
  end)

  it("exits 4 naming the context when no credential is configured", function()
    local wf = workflow("return { tenant = ctx.context('nobody').tenant }")
    local r = cli.run({ "run", wf }, state())
    os.remove(wf)
    assert.equals(4, r.code)
    assert.matches("NoCredential: no credential is configured for context 'nobody'", r.stdout, 1, true)
  end)

  it("builds the isv context from the Azure SDK environment variables", function()
    local wf = workflow("local c = ctx.context_info('isv') return { tenant = c.tenant, sub = c.subscription }")
    local env = state()
    env.AZURE_TENANT_ID = "11111111-2222-4333-8444-555555555555"
    env.AZURE_CLIENT_ID, env.AZURE_CLIENT_SECRET = "0a1b2c3d-0000-4000-8000-000000000001", "not-used"
    env.AZURE_SUBSCRIPTION_ID = "22222222-2222-4333-8444-555555555555"
    local r = cli.run({ "run", wf, "--cloud", "azure", "--output", "json" }, env)
    assert.equals(0, r.code, r.stderr)
    assert.same({ sub = "22222222-2222-4333-8444-555555555555", tenant = "11111111-2222-4333-8444-555555555555" },
                json.decode(r.stdout).outputs.s)
    -- bad configuration is a usage error that names what to fix, before any request
    env.AZURE_TENANT_ID = "common"
    r = cli.run({ "run", wf, "--cloud", "azure" }, env)
    assert.equals(2, r.code)
    assert.matches("AZURE_TENANT_ID", r.stderr, 1, true)
    env.AZURE_TENANT_ID, env.AZURE_CLIENT_SECRET = "11111111-2222-4333-8444-555555555555", nil
    r = cli.run({ "run", wf, "--cloud", "azure" }, env)
    assert.equals(2, r.code)
    assert.matches("AZURE_CLIENT_SECRET", r.stderr, 1, true)
    r = cli.run({ "run", wf, "--cloud", "mars" })
    assert.equals(2, r.code)
    assert.matches("argument for option '--cloud' must be one of 'emulator', 'azure', 'usgov', 'china'", r.stderr, 1, true)
    os.remove(wf)
  end)

  it("loads Lua modules from CMKFLOW_LUA_PATH instead of the embedded copies", function()
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. cli.quote(dir .. "/cmkflow")))
    local f = assert(io.open(dir .. "/cmkflow/json.lua", "wb"))
    f:write("return { marker = 'from the development tree' }")
    f:close()
    local wf = workflow("return { marker = require('cmkflow.json').marker or 'embedded' }")
    local embedded = cli.run({ "run", wf, "--output", "json" }, state())
    local env = state()
    env.CMKFLOW_LUA_PATH = dir
    local dev = cli.run({ "run", wf, "--output", "json" }, env)
    os.execute("rm -rf " .. cli.quote(dir))
    os.remove(wf)
    assert.equals(0, embedded.code, embedded.stderr)
    assert.equals("embedded", json.decode(embedded.stdout).outputs.s.marker)
    assert.equals(0, dev.code, dev.stderr)
    assert.equals("from the development tree", json.decode(dev.stdout).outputs.s.marker)
  end)

  it("stops cleanly on Ctrl-C with exit 130", function()
    local wf = workflow("local t = os.clock() while os.clock() - t < 60 do end return {}")
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
