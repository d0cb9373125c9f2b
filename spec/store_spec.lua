-- cmkflow.core.store from Lua: runs, steps, approvals and events in the run store, on both of its
-- backends: an SQLite file, and a PostgreSQL database (a private server this spec starts).
local core = require("cmkflow.core")
local files = require("support.files")
local postgres = require("support.postgres")
local store, json = core.store, core.json

local BACKENDS = {
  { name = "SQLite", location = function(dir) return dir .. "/runs.db" end },
  { name = "PostgreSQL", server = true },
}

for _, backend in ipairs(BACKENDS) do
describe("cmkflow.core.store (" .. backend.name .. ")", function()
  local dir, db, location, pg, n = nil, nil, nil, nil, 0
  local sqlite = not backend.server

  setup(function()
    if backend.server then pg = postgres.start() end
  end)

  teardown(function()
    if pg then pg:stop() end
  end)

  before_each(function()
    dir = files.tmpdir()
    n = n + 1
    location = pg and pg:store("t" .. n) or backend.location(dir)
    db = assert(store.open(location))
  end)

  after_each(function()
    if db then db:close() end
    files.sh("rm -rf " .. files.quote(dir))
  end)

  describe("open", function()
    if sqlite then
    it("creates the file, private to its owner, and keeps data across reopen", function()
      local id = assert(db:create_run{workflow = "cross-tenant-cmk", params = '{"vault":"kv1"}'})
      db:close()
      local mode = io.popen("stat -c %a " .. files.quote(dir .. "/runs.db")):read("l")
      assert.equals("600", mode)
      db = assert(store.open(dir .. "/runs.db"))
      local run = db:run(id)
      assert.equals("cross-tenant-cmk", run.workflow)
      assert.equals('{"vault":"kv1"}', run.params)
      assert.equals(2, store.schema_version)
    end)

    it("migrates a version 1 store to version 2, keeping its runs, and accepts a cancelled run", function()
      db:close()
      local v1 = dir .. "/v1.db"
      -- the version 1 schema as cmkflow 0.x wrote it, with one run, step, approval and event
      files.sh("sqlite3 " .. files.quote(v1) .. [[ "CREATE TABLE runs (id TEXT PRIMARY KEY NOT NULL, workflow TEXT NOT NULL,
        params TEXT NOT NULL DEFAULT '{}', status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN
        ('pending','running','waiting','succeeded','failed','interrupted')), created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL, error TEXT, outputs TEXT, config TEXT NOT NULL DEFAULT '{}') STRICT;
        CREATE INDEX runs_by_created ON runs (created_at DESC);
        CREATE TABLE steps (run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE, name TEXT NOT NULL,
        status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, started_at INTEGER, finished_at INTEGER,
        outputs TEXT, error TEXT, PRIMARY KEY (run_id, name)) STRICT;
        CREATE TABLE approvals (run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE, gate TEXT NOT NULL,
        status TEXT NOT NULL, requested_at INTEGER NOT NULL, decided_at INTEGER, decided_by TEXT, note TEXT,
        PRIMARY KEY (run_id, gate)) STRICT;
        CREATE TABLE events (run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE, seq INTEGER NOT NULL,
        time INTEGER NOT NULL, kind TEXT NOT NULL, message TEXT NOT NULL, PRIMARY KEY (run_id, seq)) STRICT;
        INSERT INTO runs (id, workflow, status, created_at, updated_at) VALUES ('old', 'onboard', 'waiting', 1, 1);
        INSERT INTO steps (run_id, name, status, attempts) VALUES ('old', 'app', 'succeeded', 1);
        INSERT INTO approvals (run_id, gate, status, requested_at) VALUES ('old', 'handoff', 'waiting', 1);
        INSERT INTO events (run_id, seq, time, kind, message) VALUES ('old', 1, 1, 'note', 'hello');
        PRAGMA application_id = 1129139014; PRAGMA user_version = 1;"]])
      db = assert(store.open(v1))
      assert.equals("waiting", db:run("old").status)
      assert.equals("succeeded", db:steps("old")[1].status)
      assert.equals("waiting", db:approval("old", "handoff").status)
      assert.is_true(db:set_run("old", { status = "cancelled" }))
      assert.equals("cancelled", db:run("old").status)
      assert.equals("2", io.popen("sqlite3 " .. files.quote(v1) .. " 'PRAGMA user_version'"):read("l"))
    end)
    end

    if sqlite then
    it("returns nil and an error naming the path when the directory does not exist", function()
      local s, err = store.open("/nonexistent/dir/x.db")
      assert.is_nil(s)
      assert.equals("StoreOpenFailed", err.code)
      assert.matches("/nonexistent/dir/x.db", err.message, 1, true)
      assert.equals("/nonexistent/dir/x.db", err.target)
    end)

    it("refuses a file that is not a store", function()
      local path = files.write(dir .. "/garbage.db", string.rep("not sqlite at all ", 500))
      local s, err = store.open(path)
      assert.is_nil(s)
      assert.equals("NotAStore", err.code)
      assert.matches(path, err.message, 1, true)
      assert.matches("not a cmkflow store", tostring(err), 1, true)
      -- and leaves it untouched
      assert.equals(string.rep("not sqlite at all ", 500), files.read(path))
    end)
    else
    it("keeps data across reopen, and tells the backend", function()
      local id = assert(db:create_run{workflow = "cross-tenant-cmk", params = '{"vault":"kv1"}'})
      assert.equals("postgresql", db:backend())
      assert.equals(location:match("^[^?]*"), db:path())
      db:close()
      db = assert(store.open(location))
      assert.equals('{"vault":"kv1"}', db:run(id).params)
      assert.equals("2", pg:psql("SELECT schema_version FROM cmkflow_store", "t" .. n):match("%d+"))
    end)

    it("returns nil and an error naming the server, never the password, when it cannot connect", function()
      local s, err = store.open(("postgresql://cmkflow:hunter2@127.0.0.1:%d/nowhere?sslmode=disable"):format(pg.port))
      assert.is_nil(s)
      assert.equals("StoreOpenFailed", err.code)
      assert.matches("nowhere", err.message, 1, true)
      assert.is_nil(tostring(err):find("hunter2", 1, true))
      assert.equals(("postgresql://cmkflow@127.0.0.1:%d/nowhere"):format(pg.port), err.target)
    end)

    it("refuses a database whose tables are another program's, and a newer schema", function()
      local other = pg:store("other" .. n)
      pg:psql("CREATE TABLE runs (x int)", "other" .. n)
      local s, err = store.open(other)
      assert.is_nil(s)
      assert.equals("NotAStore", err.code)
      assert.matches("not a cmkflow store", err.message, 1, true)
      db:close()
      pg:psql("UPDATE cmkflow_store SET schema_version = 99", "t" .. n)
      s, err = store.open(location)
      assert.is_nil(s)
      assert.equals("StoreTooNew", err.code)
      assert.matches("schema version 99", err.message, 1, true)
      db = nil
    end)
    end

    it("raises for a path that is not a string", function()
      assert.has_error(function() store.open(nil) end)
      assert.has_error(function() store.open("") end)
    end)

    it("closes once and then refuses to be used", function()
      db:close()
      db:close()
      assert.has_error(function() db:runs() end, "calling 'runs' on bad self (store is closed)")
      assert.equals("cmkflow.store(closed)", tostring(db))
      db = nil
    end)
  end)

  describe("runs", function()
    it("creates runs pending, with a uuid4 id unless one is given", function()
      local before = os.time()
      local id = assert(db:create_run{workflow = "wf", config = '{"contexts":["home"]}'})
      assert.matches("^%x%x%x%x%x%x%x%x%-%x%x%x%x%-4%x%x%x%-[89ab]%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$", id)
      local run = db:run(id)
      assert.equals(id, run.id)
      assert.equals("pending", run.status)
      assert.equals("{}", run.params)
      assert.equals('{"contexts":["home"]}', run.config)
      assert.is_true(math.type(run.created_at) == "integer" and run.created_at >= before)
      assert.equals(run.created_at, run.updated_at)
      assert.is_nil(run.error)
      assert.is_nil(run.outputs)
      assert.equals("mine", db:create_run{id = "mine", workflow = "wf"})
      assert.is_nil(db:run("absent"))
    end)

    it("returns nil, err for a duplicate id", function()
      assert(db:create_run{id = "r1", workflow = "wf"})
      local ok, err = db:create_run{id = "r1", workflow = "other"}
      assert.is_nil(ok)
      assert.equals("RunExists", err.code)
      assert.matches("r1", err.message, 1, true)
      assert.equals("wf", db:run("r1").workflow)
    end)

    it("raises for misuse", function()
      assert.has_error(function() db:create_run{} end, "create_run: workflow must be a non-empty string")
      assert.has_error(function() db:create_run{workflow = "wf", params = "{nope"} end)
      assert.has_error(function() db:create_run{workflow = "wf", params = {a = 1}} end)
      assert.has_error(function() db:create_run{workflow = "wf", id = 5} end)
      assert.has_error(function() db:set_run("x", {status = "done"}) end)
      assert.has_error(function() db:set_run("x", {outputs = "not json"}) end)
      assert.has_error(function() db:runs{limit = 0} end)
      assert.has_error(function() db:runs{status = "sleeping"} end)
    end)

    it("deletes a run with its steps, approvals and events (runs prune)", function()
      assert(db:create_run{id = "gone", workflow = "wf"})
      assert(db:create_run{id = "kept", workflow = "wf"})
      assert(db:step_begin("gone", "a"))
      assert(db:request_approval("gone", "g"))
      assert(db:event("gone", "info", "x"))
      assert.is_true(db:delete_run("gone"))
      assert.is_nil(db:run("gone"))
      assert.same({}, db:steps("gone"))
      assert.same({}, db:approvals("gone"))
      assert.same({}, db:events("gone"))
      assert.is_false(db:delete_run("gone"))
      assert.equals("kept", db:run("kept").id)
    end)

    it("lists newest first, filtered by status and workflow, limited", function()
      local ids = {}
      for i = 1, 5 do
        ids[i] = assert(db:create_run{id = "r" .. i, workflow = i % 2 == 0 and "even" or "odd"})
      end
      assert(db:set_run("r2", {status = "running"}))
      assert(db:set_run("r3", {status = "failed", error = "boom"}))
      local function idlist(list)
        local out = {}
        for i, r in ipairs(list) do out[i] = r.id end
        return out
      end
      assert.same({"r5", "r4", "r3", "r2", "r1"}, idlist(db:runs()))
      assert.same({"r5", "r4"}, idlist(db:runs{limit = 2}))
      assert.same({"r4", "r2"}, idlist(db:runs{workflow = "even"}))
      assert.same({"r2"}, idlist(db:runs{status = "running"}))
      assert.same({"r5", "r1"}, idlist(db:runs{status = "pending", workflow = "odd"}))
      assert.same({}, db:runs{workflow = "none"})
    end)

    it("updates status, error and outputs; false clears", function()
      local id = assert(db:create_run{workflow = "wf"})
      assert.is_true(db:set_run(id, {status = "failed", error = "denied", outputs = '{"a":1}'}))
      local run = db:run(id)
      assert.equals("failed", run.status)
      assert.equals("denied", run.error)
      assert.equals('{"a":1}', run.outputs)
      assert.is_true(db:set_run(id, {status = "running", error = false}))
      run = db:run(id)
      assert.equals("running", run.status)
      assert.is_nil(run.error)
      assert.equals('{"a":1}', run.outputs)
      assert.is_true(db:set_run(id, {outputs = false}))
      assert.is_nil(db:run(id).outputs)
      local ok, err = db:set_run("ghost", {status = "running"})
      assert.is_nil(ok)
      assert.equals("UnknownRun", err.code)
      assert.matches("ghost", err.message, 1, true)
    end)

    it("redacts secrets from stored errors", function()
      local id = assert(db:create_run{workflow = "wf"})
      assert(db:set_run(id, {error = "token request failed: client_secret=abc&x=1"}))
      assert.equals("token request failed: client_secret=REDACTED&x=1", db:run(id).error)
    end)

    if not sqlite then
    it("stores an error quoting bytes that are not UTF-8 (or a NUL), each such byte as '?'", function()
      local id = assert(db:create_run{workflow = "wf"})
      assert(db:set_run(id, {error = "body \xff\xfe\0 \xc3\xa9t\xc3\xa9 \xed\xa0\x80 \xf0\x9f\x94\x91"}))
      assert.equals("body ??? \xc3\xa9t\xc3\xa9 ??? \xf0\x9f\x94\x91", db:run(id).error)
    end)
    end
  end)

  describe("steps", function()
    local id
    before_each(function() id = assert(db:create_run{id = "run", workflow = "wf"}) end)

    it("records attempts, outputs and errors in start order", function()
      assert.equals(1, db:step_begin(id, "resolve"))
      assert.equals("running", db:step(id, "resolve").status)
      assert.is_true(db:step_finish(id, "resolve", "succeeded", '{"tenant":"t1"}'))
      assert.equals(1, db:step_begin(id, "grant"))
      assert.is_true(db:step_finish(id, "grant", "failed", nil, "403 access_token=abc"))
      assert.is_true(db:step_finish(id, "notify", "skipped"))

      local grant = db:step(id, "grant")
      assert.equals("failed", grant.status)
      assert.equals("403 access_token=REDACTED", grant.error)
      assert.is_nil(grant.outputs)
      assert.is_true(grant.finished_at >= grant.started_at)

      -- a retry counts the attempt and clears the last failure
      assert.equals(2, db:step_begin(id, "grant"))
      grant = db:step(id, "grant")
      assert.equals("running", grant.status)
      assert.equals(2, grant.attempts)
      assert.is_nil(grant.error)
      assert.is_true(db:step_finish(id, "grant", "succeeded", '{"role":"r"}'))

      local steps = db:steps(id)
      assert.equals(3, #steps)
      assert.same({"resolve", "grant", "notify"}, {steps[1].name, steps[2].name, steps[3].name})
      assert.same({1, 2, 0}, {steps[1].attempts, steps[2].attempts, steps[3].attempts})
      assert.equals('{"tenant":"t1"}', steps[1].outputs)
      assert.same({tenant = "t1"}, json.decode(steps[1].outputs))
      assert.equals("skipped", steps[3].status)
      assert.is_nil(steps[3].started_at)
      assert.is_nil(db:step(id, "absent"))
      assert.same({}, db:steps("other"))
    end)

    it("returns nil, err for a step of an unknown run", function()
      local ok, err = db:step_begin("ghost", "s")
      assert.is_nil(ok)
      assert.equals("UnknownRun", err.code)
      assert.equals("unknown run ghost", err.message)
      ok, err = db:step_finish("ghost", "s", "succeeded")
      assert.is_nil(ok)
      assert.equals("UnknownRun", err.code)
    end)

    it("raises for a bad status or outputs", function()
      assert.has_error(function() db:step_finish(id, "s", "running") end)
      assert.has_error(function() db:step_finish(id, "s", "done") end)
      assert.has_error(function() db:step_finish(id, "s", "succeeded", "{broken") end)
      assert.has_error(function() db:step_begin(id, "") end)
      assert.has_error(function() db:step_begin(id) end)
    end)
  end)

  describe("approvals", function()
    local id
    before_each(function() id = assert(db:create_run{id = "run", workflow = "wf"}) end)

    it("waits, is decided once, and a repeated request keeps the decision", function()
      assert.equals("waiting", db:request_approval(id, "grant-access"))
      assert.equals("waiting", db:request_approval(id, "grant-access"))
      local a = db:approval(id, "grant-access")
      assert.equals("waiting", a.status)
      assert.is_nil(a.decided_at)

      assert.is_true(db:decide(id, "grant-access", "approved", "alice", "ok password=hunter2"))
      a = db:approval(id, "grant-access")
      assert.equals("approved", a.status)
      assert.equals("alice", a.decided_by)
      assert.equals("ok password=REDACTED", a.note)
      assert.is_true(a.decided_at >= a.requested_at)
      assert.equals("approved", db:request_approval(id, "grant-access"))

      local ok, err = db:decide(id, "grant-access", "rejected", "mallory")
      assert.is_nil(ok)
      assert.equals("AlreadyDecided", err.code)
      assert.equals("approved", db:approval(id, "grant-access").status)

      assert.equals("waiting", db:request_approval(id, "enable-cmk"))
      assert.is_true(db:decide(id, "enable-cmk", "rejected"))
      local list = db:approvals(id)
      assert.equals(2, #list)
      assert.same({"grant-access", "approved"}, {list[1].gate, list[1].status})
      assert.same({"enable-cmk", "rejected"}, {list[2].gate, list[2].status})
    end)

    it("names the unknown run or gate", function()
      local ok, err = db:decide("ghost", "g", "approved")
      assert.is_nil(ok)
      assert.equals("UnknownRun", err.code)
      assert.matches("ghost", err.message, 1, true)
      ok, err = db:decide(id, "no-such-gate", "approved")
      assert.is_nil(ok)
      assert.equals("UnknownGate", err.code)
      assert.matches("no-such-gate", err.message, 1, true)
      ok, err = db:request_approval("ghost", "g")
      assert.is_nil(ok)
      assert.equals("UnknownRun", err.code)
      assert.is_nil(db:approval(id, "no-such-gate"))
    end)

    it("decides again only when asked to (a corrected approval), keeping the newer note", function()
      db:request_approval(id, "handoff")
      assert.is_true(db:decide(id, "handoff", "approved", "isv", '{"values":{"key_name":"k1"}}'))
      assert.equals("AlreadyDecided", select(2, db:decide(id, "handoff", "approved", "isv", "x")).code)
      assert.is_true(db:decide(id, "handoff", "approved", "isv", '{"values":{"key_name":"k2"}}', true))
      assert.equals('{"values":{"key_name":"k2"}}', db:approval(id, "handoff").note)
    end)

    it("raises for a decision other than approved or rejected", function()
      db:request_approval(id, "g")
      assert.has_error(function() db:decide(id, "g", "yes") end)
      assert.equals("waiting", db:approval(id, "g").status)
    end)
  end)

  describe("events", function()
    it("numbers events per run, redacts messages, and reads after a sequence", function()
      local a = assert(db:create_run{id = "a", workflow = "wf"})
      local b = assert(db:create_run{id = "b", workflow = "wf"})
      assert.equals(1, db:event(a, "step", "resolve started"))
      assert.equals(2, db:event(a, "http", "Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"))
      assert.equals(1, db:event(b, "step", "other run"))
      assert.equals(3, db:event(a, "step", "done"))
      local events = db:events(a)
      assert.equals(3, #events)
      assert.same({1, "step", "resolve started"}, {events[1].seq, events[1].kind, events[1].message})
      assert.equals("Authorization: Bearer REDACTED", events[2].message)
      assert.equals("integer", math.type(events[1].time))
      local later = db:events(a, 2)
      assert.equals(1, #later)
      assert.equals("done", later[1].message)
      local ok, err = db:event("ghost", "step", "x")
      assert.is_nil(ok)
      assert.equals("UnknownRun", err.code)
    end)
  end)

  describe("transaction", function()
    it("commits and returns the function's results", function()
      local x, y = db:transaction(function(t)
        assert.equals(db, t)
        assert(t:create_run{id = "r1", workflow = "wf"})
        assert(t:step_begin("r1", "s"))
        return "done", 2
      end)
      assert.same({"done", 2}, {x, y})
      assert.equals("running", db:step("r1", "s").status)
    end)

    it("rolls back everything and raises the same error again", function()
      assert(db:create_run{id = "keep", workflow = "wf"})
      local sentinel = setmetatable({}, {__tostring = function() return "sentinel" end})
      local ok, err = pcall(db.transaction, db, function()
        assert(db:create_run{id = "gone", workflow = "wf"})
        assert(db:set_run("keep", {status = "failed"}))
        assert(db:event("keep", "k", "m"))
        error(sentinel)
      end)
      assert.is_false(ok)
      assert.equals(sentinel, err)
      assert.is_nil(db:run("gone"))
      assert.equals("pending", db:run("keep").status)
      assert.same({}, db:events("keep"))
      -- the store is usable afterwards, outside any transaction
      assert(db:create_run{id = "after", workflow = "wf"})
      db:close()
      db = assert(store.open(location))
      assert.is_table(db:run("after"))
    end)

    it("nests: an inner failure undoes only the inner work", function()
      db:transaction(function()
        assert(db:create_run{id = "outer", workflow = "wf"})
        assert.is_false(pcall(db.transaction, db, function()
          assert(db:create_run{id = "inner", workflow = "wf"})
          error("inner fails")
        end))
        assert(db:create_run{id = "outer2", workflow = "wf"})
      end)
      assert.is_table(db:run("outer"))
      assert.is_table(db:run("outer2"))
      assert.is_nil(db:run("inner"))
    end)

    it("raises when not given a function", function()
      assert.has_error(function() db:transaction("BEGIN") end)
    end)
  end)

  it("is seen by a second connection to the same store", function()
    local other = assert(store.open(location))
    local id = assert(db:create_run{workflow = "wf"})
    assert(db:request_approval(id, "g"))
    assert.is_true(other:decide(id, "g", "approved", "bob"))
    assert.equals("approved", db:approval(id, "g").status)
    other:close()
  end)

  if not sqlite then
  describe("locks", function()
    it("lets one connection hold a run, names its process to others, and ends with its connection", function()
      local other = assert(store.open(location))
      assert.is_true(db:try_lock("run-1"))
      local ok, holder = other:try_lock("run-1")
      assert.is_false(ok)
      assert.matches("^process " .. core.fs.pid() .. " %(cmkflow on .+%), connected since %d+%-%d+%-%d+T", holder)
      assert.is_true(other:try_lock("run-2")) -- another run is free
      assert.is_true(db:unlock("run-1"))
      assert.is_true(other:try_lock("run-1"))
      -- a connection that ends (a process that dies) takes its locks with it, once the server has
      -- seen it go (its backend exits after the client's goodbye)
      other:close()
      local got = false
      for _ = 1, 200 do
        got = db:try_lock("run-2")
        if got then break end
        os.execute("sleep 0.05")
      end
      assert.is_true(got)
    end)

    it("runs transactions of two connections one after the other", function()
      local other = assert(store.open(location))
      -- while db's transaction is open, other's waits: psql's lock_timeout makes it give up
      db:transaction(function()
        assert(db:create_run{id = "in-tx", workflow = "wf"})
        local out = pg:psql("SET lock_timeout = '200ms'; BEGIN; SELECT pg_advisory_xact_lock(1129139014, 0); COMMIT",
          "t" .. n)
        assert.matches("lock timeout", out, 1, true)
      end)
      assert.is_table(other:run("in-tx"))
      other:close()
    end)
  end)
  end
end)
end
