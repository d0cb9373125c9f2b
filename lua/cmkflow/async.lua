-- cmkflow.async: coroutine tasks over the state's HTTP session.
--
--   async.run(fn, ...)        run fn as a task, drive the session until every task has finished,
--                             return fn's results (its error, with traceback, is raised)
--   async.spawn(fn, ...)      start a task inside a running scheduler -> task
--   async.await(task)         wait for a task -> its results (its error is raised)
--   async.all({fn1, fn2, ...}) run the functions concurrently -> {first result of each};
--                             the first error (in list order) is raised after all have finished
--   async.sleep(ms)           wait on a session timer (the session clock: fake clocks skip it)
--   async.in_task()           true inside a task
--   async.wait(transfer)      wait until a session transfer has finished (used by cmkflow.http)
--
-- Tasks only switch at these waits, so code between two waits runs without interleaving.
local core = require "cmkflow.core"

local coroutine, debug, select, table, type, error, setmetatable, tostring =
  coroutine, debug, select, table, type, error, setmetatable, tostring

local M = {}

local session = core.http.session()

-- The innermost running scheduler (nil outside async.run), the task of each coroutine and the
-- task waiting for each transfer (shared by nested schedulers, so none loses another's).
local scheduler = nil
local task_of = setmetatable({}, { __mode = "k" })
local waiting = {}

local Task = {}
Task.__index = Task
Task.__name = "cmkflow.async.task"
function Task.__tostring(t) return "cmkflow.async.task(" .. t.status .. ")" end

local function handler(e)
  -- an error re-raised by await/all already carries the traceback of where it began
  if type(e) == "string" and not e:find("\nstack traceback:", 1, true) then
    return debug.traceback(e, 2)
  end
  return e -- error tables keep their identity (cmkflow.error)
end

local function current()
  local co, main = coroutine.running()
  if main then return nil end
  return task_of[co]
end

function M.in_task()
  return current() ~= nil
end

local function ready(sched, task, ...)
  task.resume_args = table.pack(...)
  sched.ready[#sched.ready + 1] = task
end

local function finish(task, ok, ...)
  task.status = "done"
  task.ok = ok
  if ok then task.results = table.pack(...) else task.err = (...) end
  local sched = task.sched
  sched.alive = sched.alive - 1
  for _, waiter in ipairs(task.waiters) do ready(sched, waiter) end
  task.waiters = {}
  if not ok and not task.awaited then sched.unobserved[#sched.unobserved + 1] = task end
end

local function new_task(sched, fn, ...)
  if type(fn) ~= "function" then error("async: a task must be a function, got " .. type(fn), 3) end
  local args = table.pack(...)
  local task = setmetatable({ status = "ready", waiters = {}, sched = sched }, Task)
  task.co = coroutine.create(function()
    return xpcall(fn, handler, table.unpack(args, 1, args.n))
  end)
  task_of[task.co] = task
  sched.alive = sched.alive + 1
  ready(sched, task)
  return task
end

local function step(task)
  local args = task.resume_args or { n = 0 }
  task.resume_args = nil
  task.status = "running"
  local resumed = table.pack(coroutine.resume(task.co, table.unpack(args, 1, args.n)))
  if coroutine.status(task.co) == "dead" then
    if resumed[1] then
      finish(task, table.unpack(resumed, 2, resumed.n)) -- xpcall's own ok, results
    else
      finish(task, false, resumed[2])
    end
  elseif task.status == "running" then
    task.status = "waiting"
  end
end

-- Hand finished transfers to the tasks waiting for them.
local function dispatch(done)
  for _, t in ipairs(done) do
    local task = waiting[t]
    if task then
      waiting[t] = nil
      ready(task.sched, task)
    end
  end
end

-- The scheduler loop: run ready tasks; when none is ready, drive the session.
local function loop(sched)
  while sched.alive > 0 do
    if #sched.ready > 0 then
      local batch = sched.ready
      sched.ready = {}
      for _, task in ipairs(batch) do
        if task.status ~= "done" then step(task) end
      end
    elseif session:pending() > 0 then
      dispatch(session:run())
    else
      error("async: deadlock: " .. sched.alive .. " task(s) waiting with no transfer pending", 0)
    end
  end
end

function M.run(fn, ...)
  if current() then return fn(...) end -- already inside a task: just call it
  local outer = scheduler
  local sched = { ready = {}, alive = 0, unobserved = {} }
  scheduler = sched
  local main = new_task(sched, fn, ...)
  main.awaited = true
  local ok, err = pcall(loop, sched)
  scheduler = outer
  if not ok then error(err, 0) end
  if not main.ok then error(main.err, 0) end
  for _, task in ipairs(sched.unobserved) do
    if not task.awaited then error(task.err, 0) end -- a spawned task failed and nobody awaited it
  end
  return table.unpack(main.results, 1, main.results.n)
end

function M.spawn(fn, ...)
  local me = current()
  if not me then error("async.spawn must be called inside async.run", 2) end
  return new_task(me.sched, fn, ...)
end

local function yield_task(task)
  task.status = "waiting"
  coroutine.yield()
end

function M.await(task)
  if getmetatable(task) ~= Task then error("async.await expects a task, got " .. tostring(task), 2) end
  task.awaited = true
  local me = current()
  if task.status ~= "done" then
    if not me then error("async.await must be called inside async.run", 2) end
    if task == me then error("async.await: a task cannot await itself", 2) end
    task.waiters[#task.waiters + 1] = me
    yield_task(me)
  end
  if not task.ok then error(task.err, 0) end
  return table.unpack(task.results, 1, task.results.n)
end

-- Wait for a session transfer. Inside a task: yield until the scheduler sees it finish.
-- Outside: drive the session here (other tasks' transfers are handed to their scheduler).
function M.wait(transfer)
  if transfer:done() then return transfer end
  local me = current()
  if me then
    waiting[transfer] = me
    repeat yield_task(me) until transfer:done()
    return transfer
  end
  repeat
    if session:pending() == 0 then error("async.wait: the transfer is not pending in the session", 2) end
    dispatch(session:run())
  until transfer:done()
  return transfer
end

function M.sleep(ms)
  if type(ms) ~= "number" or ms < 0 then error("async.sleep expects a number of ms >= 0", 2) end
  M.wait(session:timer(math.floor(ms)))
end

function M.all(fns)
  if type(fns) ~= "table" then error("async.all expects an array of functions", 2) end
  if not current() then
    return M.run(M.all, fns)
  end
  local tasks = {}
  for i = 1, #fns do tasks[i] = M.spawn(fns[i]) end
  local results, first_err = {}, nil
  for i, task in ipairs(tasks) do
    task.awaited = true
    local ok, v = pcall(M.await, task)
    if ok then results[i] = v elseif first_err == nil then first_err = v end
  end
  if first_err ~= nil then error(first_err, 0) end
  return results
end

return M
