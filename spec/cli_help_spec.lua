-- Help where people look, through the binary: COMMAND --help and help COMMAND for every command of
-- the command table, usage errors, workflows list/show, -p/-o/--params/@file, -v and
-- --only-show-errors, runs list/show/prune with filters and id prefixes, destructive workflows and
-- --yes, and the man page and completions the build generates from the same table.
local core = require "cmkflow.core"
local cli = require "support.cli"
local files = require "support.files"
local commands = require "cmkflow.cli.commands"

local json = core.json

-- every command path of the table: {"run"}, {"runs"}, {"runs", "list"}, ...
local function command_paths()
  local out = {}
  local function walk(entries, prefix)
    for _, e in ipairs(entries) do
      local path = { table.unpack(prefix) }
      path[#path + 1] = e.name
      out[#out + 1] = path
      walk(e.commands or {}, path)
    end
  end
  walk(commands.COMMANDS, {})
  return out
end

local function stock_workflow_names()
  local names = {}
  local p = io.popen("ls " .. files.quote(os.getenv("CMKFLOW_SOURCE_DIR") .. "/workflows"))
  for line in p:lines() do names[#names + 1] = line:match("^(.-)%.lua$") end
  p:close()
  return names
end

describe("cmkflow help", function()
  it("answers COMMAND --help and help COMMAND with the same text for every command of the table", function()
    for _, path in ipairs(command_paths()) do
      local words = table.concat(path, " ")
      local args = { table.unpack(path) }
      args[#args + 1] = "--help"
      local a = cli.run(args)
      assert.equals(0, a.code, words .. ": " .. a.stderr)
      assert.matches("^Usage: cmkflow " .. words:gsub("%-", "%%-"), a.stdout)
      local b = cli.run({ "help", table.unpack(path) })
      assert.equals(0, b.code, words .. ": " .. b.stderr)
      assert.equals(a.stdout, b.stdout, words)
      local h = cli.run({ path[1], "-h" })
      assert.equals(0, h.code, words)
    end
  end)

  it("lists every command with its summary in the program's help", function()
    local r = cli.run({ "--help" })
    assert.equals(0, r.code)
    assert.equals(r.stdout, cli.run({ "help" }).stdout)
    for _, e in ipairs(commands.COMMANDS) do
      assert.matches("\n   " .. e.name:gsub("%-", "%%-") .. "%s+" .. e.summary:gsub("%p", "%%%0"), r.stdout)
    end
    local none = cli.run({})
    assert.equals(2, none.code)
    assert.matches("^Usage: cmkflow", none.stderr)
  end)

  it("lists every option of a command with its description", function()
    local r = cli.run({ "run", "--help" })
    for _, o in ipairs(commands.COMMANDS[1].options) do
      assert.matches("--" .. o.long:gsub("%-", "%%-"), r.stdout)
    end
    for _, flag in ipairs { "-p NAME=VALUE", "--params FILE", "-o FORMAT", "-v, --verbose", "--only-show-errors",
                            "-y, --yes", "--debug" } do
      assert.matches(flag, r.stdout, 1, true)
    end
  end)

  it("exits 2 on a usage mistake with the command's usage and a suggestion", function()
    local r = cli.run({ "run", "onboard", "--parm", "customer=x" })
    assert.equals(2, r.code)
    assert.equals("", r.stdout)
    assert.matches("unknown option '--parm'", r.stderr, 1, true)
    assert.matches("Did you mean '--param'?", r.stderr, 1, true)
    assert.matches("Usage: cmkflow run ", r.stderr, 1, true)
    assert.matches("run 'cmkflow help run' for usage", r.stderr, 1, true)
    r = cli.run({ "runs", "lst" })
    assert.equals(2, r.code)
    assert.matches("Did you mean 'list'?", r.stderr, 1, true)
    r = cli.run({ "help", "frobnicate" })
    assert.equals(2, r.code)
    assert.matches("no command 'frobnicate'", r.stderr, 1, true)
    r = cli.run({ "runs", "prune" })
    assert.equals(2, r.code)
    assert.matches("missing option '--older-than'", r.stderr, 1, true)
    -- -o table is a valid output everywhere -o is
    r = cli.run({ "version", "-o", "table" })
    assert.equals(0, r.code, r.stderr)
  end)
end)

describe("cmkflow workflows", function()
  it("lists the stock workflows with their descriptions (text, table and json)", function()
    local r = cli.run({ "workflows" })
    assert.equals(0, r.code, r.stderr)
    local j = cli.run({ "workflows", "list", "-o", "json" })
    assert.equals(0, j.code, j.stderr)
    local list = json.decode(j.stdout)
    local by_name = {}
    for _, w in ipairs(list) do by_name[w.name] = w end
    for _, name in ipairs(stock_workflow_names()) do
      local w = by_name[name]
      assert.is_table(w, name)
      assert.equals("stock", w.source)
      assert.is_string(w.description, name)
      assert.matches("\n  " .. name:gsub("%-", "%%-") .. "%s+" .. w.description:gsub("%p", "%%%0"), r.stdout)
    end
    assert.is_true(by_name.revoke.destructive)
    assert.is_false(by_name.onboard.destructive)
    assert.equals("with delete_account=true", by_name.offboard.destructive)
    local t = cli.run({ "workflows", "-o", "table" })
    assert.matches("^  NAME%s+SOURCE%s+DESCRIPTION\n", t.stdout)
  end)

  it("lists local workflows from $CMKFLOW_WORKFLOWS_DIR and leaves other Lua files out", function()
    local dir = files.tmpdir()
    files.write(dir .. "/tidy.lua", "return { name = 'tidy', description = 'tidy up a customer', params = "
      .. "{ customer = { type = 'string', required = true } }, steps = { { name = 's', tenant = 'isv', "
      .. "mutates = false, run = function() end } } }")
    files.write(dir .. "/policy.lua", "return { location = 'westeurope' }")
    local r = cli.run({ "workflows", "-o", "json" }, { CMKFLOW_WORKFLOWS_DIR = dir })
    assert.equals(0, r.code, r.stderr)
    local found
    for _, w in ipairs(json.decode(r.stdout)) do
      if w.source == "local" then
        assert.is_nil(found, "only one local workflow")
        found = w
      end
    end
    assert.equals("tidy", found.name)
    assert.equals(dir .. "/tidy.lua", found.file)
    local text = cli.run({ "workflows" }, { CMKFLOW_WORKFLOWS_DIR = dir })
    assert.matches("local workflows (cmkflow run FILE):\n  " .. dir .. "/tidy.lua  tidy up a customer", text.stdout, 1, true)
    local show = cli.run({ "workflows", "show", "tidy", "-o", "json" }, { CMKFLOW_WORKFLOWS_DIR = dir })
    assert.equals(0, show.code, show.stderr)
    assert.equals("customer", json.decode(show.stdout).params[1].name)
    files.sh("rm -rf " .. files.quote(dir))
  end)

  it("shows a workflow's parameters with types and defaults and the tenant each step touches", function()
    local r = cli.run({ "workflows", "show", "offboard", "-o", "json" })
    assert.equals(0, r.code, r.stderr)
    local doc = json.decode(r.stdout)
    assert.equals("offboard", doc.name)
    local params = {}
    for _, p in ipairs(doc.params) do params[p.name] = p end
    assert.same({ name = "delete_account", type = "boolean", required = false, default = false,
                  description = "delete the storage account instead of reverting its encryption" }, params.delete_account)
    assert.is_true(params.customer.required)
    local tenants = {}
    for _, s in ipairs(doc.steps) do tenants[s.name] = s.tenant end
    assert.same({ app = "isv", identity = "isv", storage_account = "isv", federated_credential = "isv",
                  delete_identity = "isv" }, tenants)
    local rev = json.decode(cli.run({ "workflows", "show", "revoke", "-o", "json" }).stdout)
    for _, s in ipairs(rev.steps) do assert.equals("customer", s.tenant, s.name) end
    -- onboard touches both tenants, and its handoff gate none
    local on = json.decode(cli.run({ "workflows", "show", "onboard", "-o", "json" }).stdout)
    tenants = {}
    for _, s in ipairs(on.steps) do tenants[s.name] = s.tenant end
    assert.equals("isv", tenants.identity)
    assert.equals("customer", tenants.key_vault)
    assert.equals("none", tenants.handoff)
    local text = cli.run({ "workflows", "show", "onboard" })
    assert.matches("\n  key_size%s+integer%(2048|3072|4096%)%s+%-%s+RSA key size", text.stdout)
    assert.matches("\n  key_vault%s+customer%s+yes%s+key vault\n", text.stdout)
    assert.matches("\n  handoff%s+none%s+gate%s+customer handoff\n", text.stdout)
    local missing = cli.run({ "workflows", "show", "nosuch" })
    assert.equals(2, missing.code)
    assert.matches("no stock workflow named 'nosuch'", missing.stderr, 1, true)
  end)
end)

describe("cmkflow run parameters and verbosity", function()
  -- a workflow that returns its parameters as its step's outputs (no Azure call)
  local wf
  setup(function()
    wf = cli.write_temp("return { name = 'echo', params = { customer = { type = 'string', required = true }, "
      .. "size = { type = 'integer', default = 1 }, wipe = { type = 'boolean', default = false } }, "
      .. "destructive = function(p) return p.wipe and 'it wipes' end, "
      .. "steps = { { name = 's', mutates = false, run = function(ctx) return ctx.params end } } }", ".lua")
  end)
  teardown(function() os.remove(wf) end)

  local function outputs(r)
    assert.equals(0, r.code, r.stderr)
    return json.decode(r.stdout).outputs.s
  end

  it("takes -p k=v, --params FILE and -p @FILE.json, the later -p winning", function()
    assert.same({ customer = "contoso", size = 3, wipe = false },
                outputs(cli.run({ "run", wf, "-p", "customer=contoso", "-p", "size=3", "-o", "json" })))
    local f = cli.write_temp(json.encode { customer = "fabrikam", size = 7 }, ".json")
    assert.same({ customer = "fabrikam", size = 7, wipe = false }, outputs(cli.run({ "run", wf, "--params", f, "-ojson" })))
    assert.same({ customer = "northwind", size = 7, wipe = false },
                outputs(cli.run({ "run", wf, "-p", "@" .. f, "-p", "customer=northwind", "--output=json" })))
    assert.same({ customer = "northwind", size = 7, wipe = false },
                outputs(cli.run({ "run", wf, "--params", f, "--param", "customer=northwind", "-o", "json" })))
    files.write(f, "[1, 2]")
    local bad = cli.run({ "run", wf, "--params", f })
    assert.equals(2, bad.code)
    assert.matches("must hold one JSON object", bad.stderr, 1, true)
    os.remove(f)
    local missing = cli.run({ "run", wf, "-p", "@/nonexistent/params.json" })
    assert.equals(2, missing.code)
    assert.matches("cannot read '/nonexistent/params.json'", missing.stderr, 1, true)
  end)

  it("refuses a destructive run without --yes when stdin is not a terminal, and runs it with --yes", function()
    local state = files.tmpdir()
    local r = cli.run({ "run", wf, "-p", "customer=contoso", "-p", "wipe=true" }, { CMKFLOW_STATE_DIR = state })
    assert.equals(2, r.code)
    assert.matches("workflow echo is destructive (it wipes): run it with --yes to confirm; nothing was changed",
                   r.stderr, 1, true)
    assert.equals("[]", cli.run({ "runs", "list", "-o", "json" }, { CMKFLOW_STATE_DIR = state }).stdout:gsub("%s", ""))
    -- not destructive with these parameters: no question
    assert.equals("contoso", outputs(cli.run({ "run", wf, "-p", "customer=contoso", "-o", "json" },
                                             { CMKFLOW_STATE_DIR = state })).customer)
    assert.is_true(outputs(cli.run({ "run", wf, "-p", "customer=contoso", "-p", "wipe=true", "--yes", "-o", "json" },
                                   { CMKFLOW_STATE_DIR = state })).wipe)
    -- the stock ones: revoke always, offboard with delete_account=true
    r = cli.run({ "run", "revoke", "-p", "customer=contoso", "-p", "app_id=11111111-2222-4333-8444-555555555555" },
                { CMKFLOW_STATE_DIR = state })
    assert.equals(2, r.code)
    assert.matches("--yes", r.stderr, 1, true)
    r = cli.run({ "run", "offboard", "-p", "customer=contoso", "-p", "delete_account=true" }, { CMKFLOW_STATE_DIR = state })
    assert.equals(2, r.code)
    assert.matches("workflow offboard is destructive (it deletes the storage account)", r.stderr, 1, true)
    assert.equals(2, #json.decode(cli.run({ "runs", "list", "-o", "json" }, { CMKFLOW_STATE_DIR = state }).stdout))
    files.sh("rm -rf " .. files.quote(state))
  end)

  it("asks (y/N) on a terminal before a destructive run, and runs it only after a yes", function()
    -- script(1) gives the command a terminal on stdin and stderr; the answer is typed into it
    local function on_terminal(answer)
      local state = files.tmpdir()
      local cmd = ("printf '%s\\n' | env -u CMKFLOW_LUA_PATH CMKFLOW_STATE_DIR=%s script -qec %s /dev/null 2>&1"):format(
        answer, files.quote(state), files.quote(cli.quote(cli.bin) .. " run " .. cli.quote(wf)
          .. " -p customer=contoso -p wipe=true -o json; echo exit=$?"))
      local p = io.popen(cmd)
      local out = p:read("a")
      p:close()
      local runs = json.decode(cli.run({ "runs", "list", "-o", "json" }, { CMKFLOW_STATE_DIR = state }).stdout)
      files.sh("rm -rf " .. files.quote(state))
      return out, #runs
    end
    local out, runs = on_terminal("n")
    assert.matches("workflow echo is destructive: it wipes.", out, 1, true)
    assert.matches("Continue? (y/N) ", out, 1, true)
    assert.matches("cancelled; nothing was changed", out, 1, true)
    assert.matches("exit=2", out, 1, true)
    assert.equals(0, runs)
    out, runs = on_terminal("y")
    assert.matches("Continue? (y/N) ", out, 1, true)
    assert.matches('"status":"succeeded"', out, 1, true)
    assert.matches("exit=0", out, 1, true)
    assert.equals(1, runs)
  end)

  it("prints each HTTP request with -v and nothing but errors with --only-show-errors", function()
    local v = cli.run({ "run", "smoke", "-v", "-o", "json" })
    assert.equals(0, v.code, v.stderr)
    assert.matches("    GET https://management%.azure%.com/subscriptions %-> 200  %d+%.%d+ s\n", v.stderr)
    assert.matches("[1/1] done  subscriptions", v.stderr, 1, true)
    assert.is_nil(v.stderr:find("api-version", 1, true), "no query string")
    local q = cli.run({ "run", "smoke", "--only-show-errors", "--progress", "-o", "json" })
    assert.equals(0, q.code)
    assert.equals("", q.stderr)
    local plain = cli.run({ "run", "smoke", "-o", "json" })
    assert.matches("running against the embedded Azure emulator", plain.stderr, 1, true)
    assert.is_nil(plain.stderr:find("GET https://", 1, true))
  end)
end)

describe("cmkflow runs", function()
  local state, db_path
  local DAY = 86400
  -- four runs with ids chosen so that prefixes collide: two old (40 days), two recent
  local RUNS = {
    { id = "aaaa1111-0000-4000-8000-000000000001", workflow = "onboard", customer = "contoso", status = "succeeded", age = 40 },
    { id = "aaaa2222-0000-4000-8000-000000000002", workflow = "onboard", customer = "fabrikam", status = "failed", age = 40 },
    { id = "bbbb3333-0000-4000-8000-000000000003", workflow = "verify", customer = "contoso", status = "succeeded", age = 0 },
    { id = "cccc4444-0000-4000-8000-000000000004", workflow = "onboard", customer = "northwind", status = "waiting", age = 0 },
  }

  before_each(function()
    state = files.tmpdir()
    db_path = state .. "/runs.db"
    local db = assert(core.store.open(db_path))
    for _, r in ipairs(RUNS) do
      assert(db:create_run { id = r.id, workflow = r.workflow, params = json.encode { customer = r.customer } })
      assert(db:set_run(r.id, { status = r.status }))
      assert(db:step_begin(r.id, "first"))
    end
    db:close()
    for _, r in ipairs(RUNS) do
      if r.age > 0 then
        files.sh(("sqlite3 %s \"UPDATE runs SET created_at = created_at - %d, updated_at = created_at - %d + 75 WHERE id = '%s'\"")
          :format(files.quote(db_path), r.age * DAY, r.age * DAY, r.id))
      end
    end
  end)
  after_each(function() files.sh("rm -rf " .. files.quote(state)) end)

  local function runs(args)
    local r = cli.run(args, { CMKFLOW_STATE_DIR = state })
    return r
  end

  it("lists runs with workflow, customer, status, started and duration, filtered", function()
    local r = runs({ "runs", "list" })
    assert.equals(0, r.code, r.stderr)
    assert.matches("aaaa1111%-0000%-4000%-8000%-000000000001  onboard%s+contoso%s+succeeded%s+%d%d%d%d%-%d%d%-%d%dT[%d:]+Z  1m15s\n",
                   r.stdout)
    local t = runs({ "runs", "list", "-o", "table" })
    assert.matches("^RUN%s+WORKFLOW%s+CUSTOMER%s+STATUS%s+STARTED%s+DURATION\n%-%-%-", t.stdout)
    assert.matches("\naaaa2222  onboard%s+fabrikam%s+failed ", t.stdout)
    local function ids(args)
      local out = {}
      for _, x in ipairs(json.decode(runs(args).stdout)) do out[#out + 1] = x.run_id:sub(1, 4) end
      table.sort(out)
      return table.concat(out, ",")
    end
    assert.equals("aaaa,aaaa,bbbb,cccc", ids({ "runs", "list", "-o", "json" }))
    assert.equals("aaaa,bbbb", ids({ "runs", "list", "--status", "succeeded", "-o", "json" }))
    assert.equals("aaaa,aaaa,cccc", ids({ "runs", "list", "--workflow", "onboard", "-o", "json" }))
    assert.equals("aaaa,bbbb", ids({ "runs", "list", "--customer", "contoso", "-o", "json" }))
    assert.equals("cccc", ids({ "runs", "list", "--customer", "northwind", "--status", "waiting", "-o", "json" }))
    local doc = json.decode(runs({ "runs", "list", "--customer", "fabrikam", "-o", "json" }).stdout)[1]
    assert.equals("fabrikam", doc.customer)
    assert.equals(75, doc.duration_s)
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ$", doc.started)
    local bad = runs({ "runs", "list", "--status", "done" })
    assert.equals(2, bad.code)
  end)

  it("resolves a unique prefix as a run id and lists the candidates of an ambiguous one (exit 2)", function()
    local r = runs({ "runs", "show", "bbbb", "-o", "json" })
    assert.equals(0, r.code, r.stderr)
    assert.equals(RUNS[3].id, json.decode(r.stdout).run_id)
    r = runs({ "runs", "show", "aaaa" })
    assert.equals(2, r.code)
    assert.matches("run id prefix 'aaaa' matches 2 runs", r.stderr, 1, true)
    assert.matches(RUNS[1].id, r.stderr, 1, true)
    assert.matches(RUNS[2].id, r.stderr, 1, true)
    r = runs({ "runs", "show", "ffff" })
    assert.equals(2, r.code)
    assert.matches("no run 'ffff'", r.stderr, 1, true)
    -- every command that takes a RUN_ID resolves it
    r = runs({ "runs", "cancel", "cccc", "-o", "json" })
    assert.equals(0, r.code, r.stderr)
    assert.equals(RUNS[4].id, json.decode(r.stdout).run_id)
    r = runs({ "resume", "aaaa" })
    assert.equals(2, r.code)
    assert.matches("matches 2 runs", r.stderr, 1, true)
  end)

  it("prunes finished runs older than a duration, keeps unfinished ones unless asked, and says what it removed", function()
    local dry = runs({ "runs", "prune", "--older-than", "30d", "--dry-run" })
    assert.equals(0, dry.code, dry.stderr)
    assert.matches("would remove 1 run(s)", dry.stdout, 1, true)
    assert.equals(4, #json.decode(runs({ "runs", "list", "-o", "json" }).stdout))
    local r = runs({ "runs", "prune", "--older-than", "30d" })
    assert.equals(0, r.code, r.stderr)
    assert.matches("^removed 1 run%(s%) last updated more than 30d ago\naaaa1111%-0000%-4000%-8000%-000000000001  onboard", r.stdout)
    assert.matches("kept 1 unfinished run(s)", r.stdout, 1, true)
    assert.equals(3, #json.decode(runs({ "runs", "list", "-o", "json" }).stdout))
    -- nothing younger than 41 days
    local none = json.decode(runs({ "runs", "prune", "--older-than", "41d", "--unfinished", "-o", "json" }).stdout)
    assert.equals(0, #none.removed)
    local all = json.decode(runs({ "runs", "prune", "--older-than", "1d12h", "--unfinished", "-o", "json" }).stdout)
    assert.equals(1, #all.removed)
    assert.equals(RUNS[2].id, all.removed[1].run_id)
    local left = {}
    for _, x in ipairs(json.decode(runs({ "runs", "list", "-o", "json" }).stdout)) do left[#left + 1] = x.run_id end
    table.sort(left)
    assert.same({ RUNS[3].id, RUNS[4].id }, left)
    -- its journal went with it
    local count = io.popen("sqlite3 " .. files.quote(db_path) .. " 'SELECT count(*) FROM steps'")
    assert.equals("2", count:read("l")) -- the two runs left; none of the pruned ones
    count:close()
    local bad = runs({ "runs", "prune", "--older-than", "soon" })
    assert.equals(2, bad.code)
    assert.matches("--older-than needs a duration such as 30d", bad.stderr, 1, true)
  end)
end)

describe("cmkflow man page and completions", function()
  local build = assert(os.getenv("CMKFLOW_BUILD_DIR"))
  local generated = {
    man = build .. "/share/man/man1/cmkflow.1",
    bash = build .. "/share/bash-completion/completions/cmkflow",
    zsh = build .. "/share/zsh/vendor-completions/_cmkflow",
  }

  it("are what the binary generates from its command table", function()
    for what, path in pairs(generated) do
      local text = files.read(path)
      local r = cli.run({ "__generate", what })
      assert.equals(0, r.code, r.stderr)
      assert.equals(r.stdout, text, path)
    end
  end)

  it("mention every command and subcommand of the table", function()
    local man, bash, zsh = files.read(generated.man), files.read(generated.bash), files.read(generated.zsh)
    assert.matches("^%.TH CMKFLOW 1", man)
    assert.matches("complete %-F _cmkflow", bash)
    assert.matches("^#compdef cmkflow", zsh)
    for _, path in ipairs(command_paths()) do
      local name = path[#path]
      assert.matches(".SS " .. table.concat(path, " "):gsub("%-", "\\-"), man, 1, true)
      assert.is_truthy(bash:find("[\"' ]" .. name:gsub("%-", "%%-") .. "[\"' )|:]"), table.concat(path, " "))
      assert.is_truthy(zsh:find("[\"'|]" .. name:gsub("%-", "%%-") .. "[\":)|]"), table.concat(path, " "))
    end
    -- and every option of every command
    local function options(entries)
      for _, e in ipairs(entries) do
        for _, o in ipairs(e.options or {}) do
          assert.matches("\\-\\-" .. o.long:gsub("%-", "\\-"), man, 1, true)
          assert.matches("--" .. o.long, bash, 1, true)
          assert.matches("--" .. o.long, zsh, 1, true)
        end
        options(e.commands or {})
      end
    end
    options(commands.COMMANDS)
  end)
end)
