-- The workflow engine: definitions, parameters, journaling to the run store, resume, concurrency,
-- approval gates and plans. Steps here are local functions; the stock workflows' specs drive the
-- emulator.
local core = require "cmkflow.core"
local engine = require "cmkflow.workflow.engine"
local async = require "cmkflow.async"
local files = require "support.files"
local postgres = require "support.postgres"

-- the engine knows no Azure types; as the application layer does, register the Azure layer's
require("cmkflow.workflow.params").register_types(require("cmkflow.azure.validate").PARAM_TYPES)

-- A new empty run store of the backend under test (set by each describe below: the engine runs
-- on both, an SQLite file and a PostgreSQL schema of a private server).
local new_store

local function start(db, def, params)
  engine.check_definition(def)
  local values = assert(engine.check_params(def, params or {}))
  local id = db:create_run { workflow = def.name, params = core.json.encode(values) }
  return id, { params = values, log = function() end }
end

for _, backend in ipairs { "SQLite", "PostgreSQL" } do
describe("workflow engine (" .. backend .. " run store)", function()
  local pg, n = nil, 0
  setup(function()
    core.http.session():set_clock("fake")
    if backend == "PostgreSQL" then pg = postgres.start() end
    new_store = function()
      if not pg then return assert(core.store.open(files.tmpdir() .. "/runs.db")) end
      n = n + 1
      return assert(core.store.open(pg:store("e" .. n)))
    end
  end)
  teardown(function()
    core.http.session():set_clock("real")
    if pg then pg:stop() end
  end)

  describe("definitions", function()
    local bad = {
      { "no name", { steps = { { name = "a", run = function() end } } }, "'name' is required" },
      { "no steps", { name = "x", steps = {} }, "'steps' must list at least one step" },
      { "a duplicate step", { name = "x", steps = { { name = "a", run = print }, { name = "a", run = print } } },
        "step name 'a' is used twice" },
      { "an unknown dependency", { name = "x", steps = { { name = "a", needs = { "b" }, run = print } } },
        "step 'a' needs unknown step 'b'" },
      { "a cycle", { name = "x", steps = { { name = "a", needs = { "b" }, run = print },
                                            { name = "b", needs = { "a" }, run = print } } }, "cycle" },
      { "a step without run", { name = "x", steps = { { name = "a" } } }, "needs a run function" },
    }
    for _, case in ipairs(bad) do
      it("refuses " .. case[1], function()
        local ok, err = pcall(engine.check_definition, case[2])
        assert.is_false(ok)
        assert.matches(case[3], err, 1, true)
      end)
    end

    it("orders steps after what they need", function()
      local def = engine.check_definition { name = "x", steps = {
        { name = "late", needs = { "early" }, run = print }, { name = "early", run = print } } }
      assert.equals("early", def.steps[1].name)
      assert.equals("late", def.steps[2].name)
    end)
  end)

  describe("parameters", function()
    local def = { name = "p", params = {
      customer = { type = "string", required = true, pattern = "^[a-z0-9-]+$", hint = "use lowercase letters, digits and '-'" },
      key_size = { type = "integer", enum = { 2048, 3072, 4096 }, default = 3072 },
      account = { type = "storage_account" },
      tenant = { type = "guid" },
      confirm = { type = "boolean", default = false },
    }, steps = { { name = "a", run = print } } }

    it("converts and defaults", function()
      local v = assert(engine.check_params(def, { customer = "contoso", key_size = "4096", confirm = "yes" }))
      assert.equals(4096, v.key_size)
      assert.equals(true, v.confirm)
      assert.equals("contoso", v.customer)
      v = assert(engine.check_params(def, { customer = "x" }))
      assert.equals(3072, v.key_size)
    end)

    it("reports every problem with what to fix", function()
      local v, problems = engine.check_params(def, { key_size = "1024", account = "My_Account",
                                                      tenant = "not-a-guid", colour = "blue" })
      assert.is_nil(v)
      local text = table.concat(problems, "\n")
      assert.matches("unknown parameter 'colour' (this workflow takes: account, confirm, customer, key_size, tenant)", text, 1, true)
      assert.matches("parameter 'customer' is required", text, 1, true)
      assert.matches("parameter 'key_size' must be one of 2048, 3072, 4096, got '1024'", text, 1, true)
      assert.matches("parameter 'account': storage account name 'My_Account' is invalid", text, 1, true)
      assert.matches("parameter 'tenant': GUID 'not-a-guid' is invalid", text, 1, true)
      v, problems = engine.check_params(def, { customer = "Contoso!" })
      assert.equals("parameter 'customer' is invalid: use lowercase letters, digits and '-'", problems[1])
    end)
  end)

  describe("runs", function()
    it("journals each step's outputs and runs independent steps concurrently", function()
      local db = new_store()
      local trace = {}
      local def = { name = "flow", steps = {
        { name = "app", run = function() trace[#trace + 1] = "app:start" async.sleep(100) trace[#trace + 1] = "app:end" return { appId = "A" } end },
        { name = "identity", run = function() trace[#trace + 1] = "identity:start" async.sleep(100) trace[#trace + 1] = "identity:end" return { principalId = "P" } end },
        { name = "bind", needs = { "app", "identity" }, run = function(ctx)
            trace[#trace + 1] = "bind"
            return { subject = ctx.outputs.identity.principalId, app = ctx.outputs.app.appId } end },
      } }
      local id, ctx = start(db, def)
      local r = engine.execute { def = def, ctx = ctx, store = db, run_id = id }
      assert.equals("succeeded", r.status)
      -- both started before either finished (concurrent), and bind ran last, after both
      assert.same({ "app:start", "identity:start" }, { trace[1], trace[2] })
      local ends = { trace[3], trace[4] }
      table.sort(ends)
      assert.same({ "app:end", "identity:end" }, ends)
      assert.equals("bind", trace[5])
      assert.equals(5, #trace)
      assert.equals("succeeded", db:run(id).status)
      assert.same({ subject = "P", app = "A" }, core.json.decode(db:step(id, "bind").outputs))
      assert.same({ subject = "P", app = "A" }, r.outputs.bind)
    end)

    it("resumes a failed run without repeating finished steps", function()
      local db = new_store()
      local calls, broken = { a = 0, b = 0, c = 0 }, true
      local def = { name = "flow", steps = {
        { name = "a", run = function() calls.a = calls.a + 1 return { n = 1 } end },
        { name = "b", needs = { "a" }, run = function() calls.b = calls.b + 1
            if broken then error({ code = "Conflict", message = "try again" }) end
            return { n = 2 } end },
        { name = "c", needs = { "b" }, run = function() calls.c = calls.c + 1 return { n = 3 } end },
      } }
      local id, ctx = start(db, def)
      local r = engine.execute { def = def, ctx = ctx, store = db, run_id = id }
      assert.equals("failed", r.status)
      assert.equals("b", r.error.step)
      assert.equals("Conflict", r.error.code)
      assert.equals("failed", db:run(id).status)
      assert.equals("failed", db:step(id, "b").status)
      assert.is_nil(db:step(id, "c"))
      broken = false
      r = engine.execute { def = def, ctx = { params = {}, log = function() end }, store = db, run_id = id }
      assert.equals("succeeded", r.status)
      assert.same({ a = 1, b = 2, c = 1 }, calls)
      assert.equals(2, db:step(id, "b").attempts)
      assert.equals(1, r.outputs.a.n)   -- read back from the journal
    end)

    it("stops at an approval gate and continues once approved", function()
      local db = new_store()
      local after = 0
      local def = { name = "gated", steps = {
        { name = "prepare", run = function() return { ok = true } end },
        { name = "handoff", gate = true, needs = { "prepare" } },
        { name = "finish", needs = { "handoff" }, run = function() after = after + 1 return {} end },
      } }
      local id, ctx = start(db, def)
      ctx.policy = { approval = function(gate) return gate == "handoff" end }
      local r = engine.execute { def = def, ctx = ctx, store = db, run_id = id }
      assert.equals("waiting", r.status)
      assert.equals("handoff", r.gate)
      assert.equals(0, after)
      assert.equals("waiting", db:approval(id, "handoff").status)
      assert.equals(6, engine.STATUS_EXIT[r.status])
      -- still waiting on a second attempt
      r = engine.execute { def = def, ctx = ctx, store = db, run_id = id }
      assert.equals("waiting", r.status)
      assert(db:decide(id, "handoff", "approved", "spec"))
      r = engine.execute { def = def, ctx = ctx, store = db, run_id = id }
      assert.equals("succeeded", r.status)
      assert.equals(1, after)
    end)

    it("skips a gate the policy does not want", function()
      local db = new_store()
      local def = { name = "gated", steps = { { name = "handoff", gate = true }, { name = "go", needs = { "handoff" }, run = function() return { done = true } end } } }
      local id, ctx = start(db, def)
      ctx.policy = { approval = function() return false end }
      local r = engine.execute { def = def, ctx = ctx, store = db, run_id = id }
      assert.equals("succeeded", r.status)
      assert.is_true(r.outputs.go.done)
    end)

    describe("a gate decided first (decide_first)", function()
      -- isv runs 100 ms; customer follows the gate, which follows isv
      local function def_with(trace)
        return { name = "overlap", steps = {
          { name = "isv", run = function() trace[#trace + 1] = "isv:start" async.sleep(100)
              trace[#trace + 1] = "isv:end" return {} end },
          { name = "handoff", gate = true, decide_first = true, needs = { "isv" } },
          { name = "customer", needs = { "handoff" }, run = function() trace[#trace + 1] = "customer:start"
              async.sleep(100) trace[#trace + 1] = "customer:end" return {} end },
        } }
      end

      it("waived by the policy, orders nothing: the steps after it overlap the gate's needs", function()
        local db, trace = new_store(), {}
        local def = def_with(trace)
        local id, ctx = start(db, def)
        ctx.policy = { approval = function() return false end }
        local r = engine.execute { def = def, ctx = ctx, store = db, run_id = id }
        assert.equals("succeeded", r.status)
        assert.same({ "isv:start", "customer:start" }, { trace[1], trace[2] })
        assert.equals("succeeded", db:step(id, "handoff").status)
      end)

      it("required by the policy, waits for its needs, then stops the steps after it", function()
        local db, trace = new_store(), {}
        local def = def_with(trace)
        local id, ctx = start(db, def)
        ctx.policy = { approval = function() return true end }
        local r = engine.execute { def = def, ctx = ctx, store = db, run_id = id }
        assert.equals("waiting", r.status)
        assert.equals("handoff", r.gate)
        assert.same({ "isv:start", "isv:end" }, trace)
        assert(db:decide(id, "handoff", "approved", "spec"))
        r = engine.execute { def = def, ctx = ctx, store = db, run_id = id }
        assert.equals("succeeded", r.status)
        assert.same({ "isv:start", "isv:end", "customer:start", "customer:end" }, trace)
      end)

      it("without decide_first, a waived gate still waits for its needs", function()
        local db, trace = new_store(), {}
        local def = def_with(trace)
        def.steps[2].decide_first = nil
        local id, ctx = start(db, def)
        ctx.policy = { approval = function() return false end }
        assert.equals("succeeded", engine.execute { def = def, ctx = ctx, store = db, run_id = id }.status)
        assert.same({ "isv:start", "isv:end", "customer:start", "customer:end" }, trace)
      end)
    end)

    it("plans every mutation without running anything", function()
      local ran = 0
      local def = engine.check_definition { name = "plan", params = {}, steps = {
        { name = "app", title = "Application", plan = function(ctx) return "create application 'isv-" .. ctx.params.customer .. "'" end,
          run = function() ran = ran + 1 end },
        { name = "read", mutates = false, run = function() ran = ran + 1 end },
        { name = "fic", needs = { "app" }, plan = function(ctx) return { "bind " .. ctx.outputs.app.appId, "second change" } end,
          run = function() ran = ran + 1 end },
      } }
      local plan = engine.plan(def, { params = { customer = "contoso" } })
      assert.equals(0, ran)
      assert.equals(2, #plan)
      assert.same({ "create application 'isv-contoso'" }, plan[1].mutations)
      assert.same({ "bind <app.appId>", "second change" }, plan[2].mutations)
    end)

    it("calls the policy's hooks around each step", function()
      local db = new_store()
      local seen = {}
      local def = { name = "hooks", steps = { { name = "a", run = function() seen[#seen + 1] = "run" return { v = 1 } end } } }
      local id, ctx = start(db, def)
      ctx.hooks = { before = function(step) seen[#seen + 1] = "before:" .. step end,
                    after = function(step, _, out) seen[#seen + 1] = "after:" .. step .. ":" .. out.v end }
      assert.equals("succeeded", engine.execute { def = def, ctx = ctx, store = db, run_id = id }.status)
      assert.same({ "before:a", "run", "after:a:1" }, seen)
    end)
  end)

  describe("errors are data", function()
    it("fails (exit 1) on a remote error whose message says 'interrupted'; only the sentinel interrupts", function()
      local db = new_store()
      local def = { name = "e", steps = { { name = "a", run = function()
        error(core.error.new { code = "OperationCanceled", kind = "remote", status = 409,
                               message = "The operation was interrupted by the service" })
      end } } }
      local id, ctx = start(db, def)
      local r = engine.execute { def = def, ctx = ctx, store = db, run_id = id }
      assert.equals("failed", r.status)
      assert.equals(1, engine.exit_code(r))
      assert.equals("failed", db:step(id, "a").status)

      local def2 = { name = "i", steps = { { name = "a", run = function() error(core.error.interrupt()) end } } }
      local id2, ctx2 = start(db, def2)
      local r2 = engine.execute { def = def2, ctx = ctx2, store = db, run_id = id2 }
      assert.equals("interrupted", r2.status)
      assert.equals(130, engine.exit_code(r2))
      assert.equals("interrupted", db:run(id2).status)
    end)

    it("journals a plain table error with its fields, as JSON", function()
      local db = new_store()
      local def = { name = "t", steps = { { name = "a", run = function()
        error({ code = "KeyDisabled", message = "the key is disabled", tenant = "customer", hint = "enable it" })
      end } } }
      local id, ctx = start(db, def)
      local r = engine.execute { def = def, ctx = ctx, store = db, run_id = id }
      assert.equals("failed", r.status)
      local journaled = core.json.decode(db:step(id, "a").error)
      assert.same({ code = "KeyDisabled", message = "the key is disabled", tenant = "customer", hint = "enable it",
                    step = "a" }, journaled)
      local run_error = core.json.decode(db:run(id).error)
      assert.equals("KeyDisabled", run_error.code)
      assert.equals("a", run_error.step)
    end)

    it("journals a Lua error in a step as an internal error with its message", function()
      local db = new_store()
      local def = { name = "l", steps = { { name = "a", run = function() local t = nil return t.x end } } }
      local id, ctx = start(db, def)
      local r = engine.execute { def = def, ctx = ctx, store = db, run_id = id }
      local journaled = core.json.decode(db:step(id, "a").error)
      assert.equals("InternalError", journaled.code)
      assert.equals("internal", journaled.kind)
      assert.matches("attempt to index", journaled.message)
      assert.equals(1, engine.exit_code(r))
    end)
  end)
end)
end
