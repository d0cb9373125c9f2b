-- Stops and limits (issue "Secure and durable by construction", point 3): Ctrl-C and SIGTERM stop
-- CPU-bound code inside a step, journal the step and leave a run that resumes (exit 130 / 143);
-- an instruction budget and a memory limit fail the step; two resumes of one run cannot both
-- proceed. Each runs the cmkflow binary as a user would, against the embedded emulator.
local cli = require "support.cli"
local files = require "support.files"
local json = require("cmkflow.core").json

local q = cli.quote

-- A step that spins while LOGNAME (one of the names os.getenv answers) is "spin": a run started
-- with it never finishes that step; resumed without it, the step returns. The loop runs inside a
-- coroutine created when the workflow loads, under a pcall: neither may hide the interruption.
local SPIN = [[
local spinner = coroutine.create(function() while os.getenv("LOGNAME") == "spin" do end end)
return { name = "busy", steps = {
  { name = "first", run = function() return { ok = true } end },
  { name = "spin", needs = { "first" }, run = function(ctx)
      coroutine.resume(spinner)
      pcall(function() while os.getenv("LOGNAME") == "spin" do end end)
      return { spun = true }
    end },
} }
]]

-- Runs a shell script; returns its stdout.
local function sh(script)
  local p = io.popen("sh -c " .. q(script))
  local out = p:read("a")
  p:close()
  return out
end

local function env_prefix(dir, logname)
  return "env -u CMKFLOW_LUA_PATH -u CMKFLOW_CONFIG CMKFLOW_STATE_DIR=" .. q(dir .. "/state") .. " LOGNAME=" .. logname
end

-- Starts `cmkflow run` on the spinning workflow, waits (bounded) until the step has started, sends
-- sig (times times), and counts the 50 ms waits until the process has ended (at most 60).
-- Returns {code, waits, run_id}.
local function stop_spinning_run(dir, sig, times)
  local wf = files.write(dir .. "/busy.lua", SPIN)
  local out = sh(table.concat({
    "cd " .. q(dir),
    env_prefix(dir, "spin") .. " " .. q(cli.bin) .. " run " .. q(wf) .. " --progress --output json >out.json 2>err.txt & pid=$!",
    "i=0; while ! grep -q '[.][.][.] spin' err.txt 2>/dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done",
    string.rep("kill -" .. sig .. " $pid; ", times or 1),
    "w=0; while kill -0 $pid 2>/dev/null && [ $w -lt 60 ]; do sleep 0.05; w=$((w+1)); done",
    "wait $pid; echo \"code=$? waits=$w\"",
  }, "\n"))
  local doc = json.decode(files.read(dir .. "/out.json", "null")) or {}
  return { code = tonumber(out:match("code=(%d+)")), waits = tonumber(out:match("waits=(%d+)")), run_id = doc.run_id,
           doc = doc, stderr = files.read(dir .. "/err.txt", "") }
end

local function cmkflow(dir, logname, args)
  local out = sh(env_prefix(dir, logname) .. " " .. q(cli.bin) .. " " .. args .. " 2>" .. q(dir .. "/stderr.txt") ..
                 "; echo \"code=$?\"")
  return { code = tonumber(out:match("code=(%d+)%s*$")), stdout = out:gsub("code=%d+%s*$", ""),
           stderr = files.read(dir .. "/stderr.txt", "") }
end

local function step(doc, name)
  for _, s in ipairs(doc.steps or {}) do if s.name == name then return s end end
end

describe("stops", function()
  local dir
  before_each(function() dir = files.tmpdir() end)
  after_each(function() files.sh("rm -rf " .. q(dir)) end)

  -- Ctrl-C twice: the second arrives while the first is being handled and must not kill the
  -- process before the journal is written (only a third would)
  for _, case in ipairs { { "INT", 130, "Ctrl-C (twice)", 2 }, { "TERM", 143, "SIGTERM", 1 } } do
    it(case[3] .. " stops a CPU-bound step promptly, exits " .. case[2] .. ", journals the step, and the run resumes",
      function()
        local r = stop_spinning_run(dir, case[1], case[4])
        assert.equals(case[2], r.code, r.stderr)
        assert.is_true(r.waits < 60, "still running after 60 waits of 50 ms")
        assert.equals("interrupted", r.doc.status)
        local shown = cmkflow(dir, "x", "runs show " .. q(r.run_id) .. " --output json")
        assert.equals(0, shown.code, shown.stderr)
        local doc = json.decode(shown.stdout)
        assert.equals("interrupted", doc.status)
        assert.equals("succeeded", step(doc, "first").status)
        assert.equals("failed", step(doc, "spin").status)
        assert.equals("Interrupted", step(doc, "spin").error.code)
        local resumed = cmkflow(dir, "done", "resume " .. q(r.run_id) .. " --output json")
        assert.equals(0, resumed.code, resumed.stderr)
        local rdoc = json.decode(resumed.stdout)
        assert.equals("succeeded", rdoc.status)
        assert.same({ spun = true }, rdoc.outputs.spin)
      end)
  end

  it("a second resume of a run exits 2 naming the process that holds it", function()
    local r = stop_spinning_run(dir, "INT")
    assert.equals(130, r.code, r.stderr)
    local lock = dir .. "/state/locks/" .. r.run_id .. ".lock"
    local out = sh(table.concat({
      "cd " .. q(dir),
      env_prefix(dir, "spin") .. " " .. q(cli.bin) .. " resume " .. q(r.run_id) .. " >/dev/null 2>first.txt & pid=$!",
      -- the lock file stays between runs: wait until it names this process
      "i=0; while ! grep -q \"process $pid \" " .. q(lock) .. " 2>/dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done",
      env_prefix(dir, "done") .. " " .. q(cli.bin) .. " resume " .. q(r.run_id) .. " >/dev/null 2>second.txt; echo \"second=$?\"",
      "kill -TERM $pid; wait $pid; echo \"first=$? pid=$pid\"",
    }, "\n"))
    local second = files.read(dir .. "/second.txt", "")
    assert.equals("2", out:match("second=(%d+)"), second)
    assert.matches("is being resumed or run by process " .. out:match("pid=(%d+)"), second, 1, true)
    assert.equals("143", out:match("first=(%d+)"))
    -- the lock went with its process: the next resume proceeds
    local resumed = cmkflow(dir, "done", "resume " .. q(r.run_id) .. " --output json")
    assert.equals(0, resumed.code, resumed.stderr)
  end)
end)

describe("limits", function()
  local dir
  before_each(function() dir = files.tmpdir() end)
  after_each(function() files.sh("rm -rf " .. q(dir)) end)

  -- a config file with limits (no request is made: the steps only compute)
  local function run_limited(limits, step_source)
    local cfg = files.write(dir .. "/cmkflow.lua", "return { cloud = 'azure', limits = " .. limits .. " }")
    local wf = files.write(dir .. "/wf.lua", "return { name = 'limited', steps = { { name = 'work', run = function(ctx)\n" ..
      step_source .. "\nend } } }")
    local r = cmkflow(dir, "x", "run " .. q(wf) .. " --config " .. q(cfg) .. " --output json")
    return r, json.decode(r.stdout)
  end

  it("an instruction budget fails a busy-looping step with InstructionLimit, even under pcall", function()
    local r, doc = run_limited("{ instructions = 2000000 }", "pcall(function() while true do end end) return {}")
    assert.equals(1, r.code, r.stderr)
    assert.equals("failed", doc.status)
    assert.equals("InstructionLimit", doc.error.code)
    assert.equals("limit", doc.error.kind)
    assert.equals("work", doc.error.step)
  end)

  it("two steps looping side by side both end once the budget is spent", function()
    local cfg = files.write(dir .. "/cmkflow.lua", "return { cloud = 'azure', limits = { instructions = 2000000 } }")
    local wf = files.write(dir .. "/wf.lua", [[
      local function spin() while true do end end
      return { name = "two", steps = { { name = "a", run = spin }, { name = "b", run = spin } } }
    ]])
    local r = cmkflow(dir, "x", "run " .. q(wf) .. " --config " .. q(cfg) .. " --output json")
    assert.equals(1, r.code, r.stderr)
    local shown = json.decode(cmkflow(dir, "x", "runs show " .. q(json.decode(r.stdout).run_id) .. " --output json").stdout)
    assert.equals("InstructionLimit", step(shown, "a").error.code)
    assert.equals("InstructionLimit", step(shown, "b").error.code)
  end)

  it("the same step within the budget succeeds", function()
    local r, doc = run_limited("{ instructions = 2000000 }", "local x = 0 for i = 1, 1000 do x = x + i end return { x = x }")
    assert.equals(0, r.code, r.stderr)
    assert.equals(500500, doc.outputs.work.x)
  end)

  for _, hog in ipairs {
    { "a growing table", "local t = {} for i = 1, 1e9 do t[i] = ('x'):rep(64) .. i end return {}" },
    { "one huge string", "return { n = #(('x'):rep(256 * 1024 * 1024)) }" },
  } do
    it("a memory limit fails a step holding " .. hog[1] .. " with MemoryLimit", function()
      local r, doc = run_limited("{ memory_mb = 48 }", hog[2])
      assert.equals(1, r.code, r.stderr)
      assert.equals("MemoryLimit", doc.error.code)
      assert.equals("limit", doc.error.kind)
      assert.equals("work", doc.error.step)
    end)
  end

  it("a limit that is not a whole number is a config error naming the field", function()
    local r = run_limited("{ memory_mb = 'lots' }", "return {}")
    assert.equals(2, r.code)
    assert.matches("limits.memory_mb", r.stderr, 1, true)
  end)
end)
