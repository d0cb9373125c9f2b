-- `cmkflow emulator` as a child process for specs that drive the CLI against it through a config
-- file (as a user with a long-running emulator would), and `cmkflow` clients in the background.
--   local ext = require "support.external_emulator"
--   local emu = ext.start { args = { "--delay", "service_principal=3" } }  -- state dir: a scratch dir
--   ext.start { knobs = {...} }  -- the --knobs file (default ext.FAST_KNOBS; false: the emulator's defaults)
--   emu.url, emu.ca_cert, emu.pid, emu.dir, emu.ready (the decoded ready line), emu.line (as printed)
--   ext.start { state = false, args = ... }  -- no --state: an in-memory emulator, as without one
--   emu:config { policy = "/path/policy.lua" } -> path of a config file for the demo seed's principals
--     (also contexts = {"isv"}: only those; secrets = {isv = "..."}: another client secret)
--   emu:request(method, path, body) -> status, decoded body   (the /_emulator/ API, no retries)
--   emu:reset(), emu:fresh() (the world and knobs as at its first call, cheaper than reset),
--   emu:snapshot() -> id, emu:restore(id),
--   emu:state(), emu:journal(since) -> entries, next_seq, emu:mark() -> next_seq,
--   emu:add_fault(rule) -> id, emu:clear_faults(), emu:delays(t)
--   emu:stop()
--   ext.curl(args) -> curl's output (stdout and stderr), bounded
--   ext.onboard_census(state) -> counts of what onboard creates; ext.ONBOARD_ONCE: one of each
--   local p = ext.spawn(args, env)   -- cmkflow in the background: p.pid, p:done(), p:kill(sig), p:wait()
-- Every wait is bounded; the emulator's life is bounded by `timeout`.
local core = require "cmkflow.core"
local json = core.json
local http = require "cmkflow.http"
local cli = require "support.cli"
local files = require "support.files"
local demo_seed = require "cmkflow.emulator.demo_seed"

local q = files.quote
local M = {}
local Emu = {}
Emu.__index = Emu

-- Environment variables of the caller that must not reach a cmkflow child.
local UNSET = { "AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH",
                "AZURE_FEDERATED_TOKEN_FILE", "AZURE_SUBSCRIPTION_ID", "CMKFLOW_LUA_PATH", "CMKFLOW_CONFIG" }

local function env_prefix(env)
  local parts = { "env" }
  for _, name in ipairs(UNSET) do parts[#parts + 1] = "-u " .. name end
  local names = {}
  for k in pairs(env or {}) do names[#names + 1] = k end
  table.sort(names)
  for _, k in ipairs(names) do parts[#parts + 1] = k .. "=" .. q(env[k]) end
  return table.concat(parts, " ")
end

function M.sleep(seconds) os.execute("sleep " .. tostring(seconds)) end

-- curl ARGS (bounded to 20 s): its stdout and stderr.
function M.curl(args)
  local p = io.popen("curl -sS --max-time 20 " .. args .. " 2>&1")
  local out = p:read("a")
  p:close()
  return out
end

-- The same fast knobs as the in-process spec emulator (see there).
M.FAST_KNOBS = require("support.emulator").FAST_KNOBS

-- Starts `cmkflow emulator --listen 127.0.0.1:0 --state DIR [--knobs FILE] [args]`; returns the
-- handle once its ready line arrived (raises with its stderr otherwise). opts: {args = {...}, dir =
-- state dir (and its stderr file), lifetime = s, state = false: leave out --state, knobs = table
-- for --knobs (default M.FAST_KNOBS) or false for the emulator's own defaults, listen = address or
-- false (the default address), state_home = its CMKFLOW_STATE_DIR (default: dir)}
function M.start(opts)
  opts = opts or {}
  local dir = opts.dir or files.tmpdir()
  local err = dir .. "/emulator.stderr"
  local args = {}
  if opts.listen ~= false then args = { "--listen", opts.listen or "127.0.0.1:0" } end
  if opts.state ~= false then
    args[#args + 1] = "--state"
    args[#args + 1] = dir
  end
  local knobs = opts.knobs
  if knobs == nil then knobs = M.FAST_KNOBS end
  if knobs then
    args[#args + 1] = "--knobs"
    args[#args + 1] = files.write(dir .. "/knobs.json", json.encode(knobs))
  end
  for _, a in ipairs(opts.args or {}) do args[#args + 1] = a end
  local quoted = {}
  for _, a in ipairs(args) do quoted[#quoted + 1] = q(a) end
  -- `timeout` bounds the child's life and forwards our SIGINT to it
  local inner = "echo $$; exec timeout -s INT " .. (opts.lifetime or 600) .. " " .. q(cli.bin) .. " emulator "
    .. table.concat(quoted, " ")
  -- the per-user state directory (its locator without --state) is a scratch one, never the home's
  local p = assert(io.popen(env_prefix({ CMKFLOW_STATE_DIR = opts.state_home or dir }) .. " sh -c " .. q(inner) .. " 2>" .. q(err) .. " </dev/null", "r"))
  local pid = tonumber(p:read("l"))
  local line = p:read("l")
  local ready = line and json.decode(line)
  if type(ready) ~= "table" or not ready.url then
    p:close()
    error("cmkflow emulator did not start: " .. tostring(line) .. " " .. files.read(err, ""), 2)
  end
  local emu = setmetatable({ pipe = p, pid = pid, dir = dir, owns_dir = opts.dir == nil, url = ready.url,
                             ca_cert = ready.ca_cert, err_file = err, ready = ready, line = line }, Emu)
  -- connection failures are retried (a handful of resets were seen right after a client was
  -- SIGKILLed mid-request); the control API answers none of the retried statuses (408/429/5xx)
  -- in normal operation
  emu.http = http.new { ca_file = ready.ca_cert, retry = { max_attempts = 3, base_delay_ms = 100 } }
  return emu
end

-- A config file (in the emulator's dir unless path is given) naming the emulator and the demo
-- seed's two deployer principals. extra: {policy = path, path = file, contexts = {"isv", ...} (the
-- contexts it holds, default both), secrets = {isv = "..."} (a client secret in place of the
-- seed's), seed = the seed the emulator runs (default the demo seed)}. Returns its path.
function Emu:config(extra)
  extra = extra or {}
  local secrets = extra.secrets or {}
  local seed = extra.seed or demo_seed
  local tenants = { isv = seed.tenants[1], customer = seed.tenants[2] }
  local lines = { ("  cloud = { emulator = %q, ca_cert = %q },\n"):format(self.url, self.ca_cert) }
  for _, role in ipairs(extra.contexts or { "isv", "customer" }) do
    local t = assert(tenants[role], "no context " .. tostring(role) .. " in the demo seed")
    local pr = t.principals[1]
    lines[#lines + 1] = ("  %s = { tenant = %q, subscription = %q, credential = { client_id = %q, client_secret = %q } },\n")
      :format(role, t.id, t.subscriptions[1].id, pr.appId, secrets[role] or pr.secret)
  end
  if extra.policy then lines[#lines + 1] = ("  policy = %q,\n"):format(extra.policy) end
  return files.write(extra.path or (self.dir .. "/config.lua"), "return {\n" .. table.concat(lines) .. "}\n")
end

-- A request to the emulator's own origin; returns status, decoded body (or the raw text).
function Emu:request(method, path, body)
  local resp, err = self.http:request { method = method, url = self.url .. path, json = body }
  if not resp then error(("%s %s: %s"):format(method, path, tostring(err and err.message or err)), 2) end
  local doc = resp.body ~= "" and json.decode(resp.body) or nil
  return resp.status, doc == nil and resp.body or doc
end

local function expect(status, want, doc, what)
  if status ~= want then error(("%s answered %d: %s"):format(what, status, json.encode(doc)), 3) end
  return doc
end

function Emu:reset() return expect(self:request("POST", "/_emulator/reset"), 200, nil, "reset") end

function Emu:snapshot()
  local s, d = self:request("POST", "/_emulator/snapshot")
  return expect(s, s == 200 and 200 or 201, d, "POST /_emulator/snapshot").id
end

function Emu:restore(id) return expect(self:request("POST", "/_emulator/restore", { id = id }), 200, nil, "POST /_emulator/restore") end

-- Back to the world and knobs as at the first call (support.emulator's fresh: cheaper than reset).
function Emu:fresh() return require("support.emulator").fresh(self, function(...) return self:request(...) end) end

function Emu:state() local s, d = self:request("GET", "/_emulator/state") return expect(s, 200, d, "state") end

-- Journal entries after seq `since` (0: all kept), and the next seq.
function Emu:journal(since)
  local s, d = self:request("GET", "/_emulator/journal?since=" .. (since or 0))
  expect(s, 200, d, "journal")
  return d.value, d.next_seq
end

-- The seq the next request will get: journal(mark - 1) shows only later requests.
function Emu:mark()
  local _, next_seq = self:journal(math.maxinteger)
  return next_seq
end

function Emu:add_fault(rule)
  local s, d = self:request("POST", "/_emulator/faults", rule)
  return expect(s, 201, d, "POST /_emulator/faults").id
end

function Emu:clear_faults() expect(self:request("DELETE", "/_emulator/faults"), 204, nil, "DELETE /_emulator/faults") end

function Emu:delays(t)
  local s, d = self:request("PUT", "/_emulator/delays", t)
  return expect(s, 200, d, "PUT /_emulator/delays")
end

function Emu:stop()
  if not self.pid then return end
  os.execute("kill -INT " .. self.pid .. " 2>/dev/null")
  self.rest = self.pipe:read("a") -- until the child exits (bounded by timeout)
  self.pipe:close()
  self.pid = nil
  if self.owns_dir then os.execute("rm -rf " .. q(self.dir)) end
end

-- ---- what onboard leaves behind ----------------------------------------------------------------

local ROLE_ENCRYPTION_USER = "e147488a-f6f5-4113-8e2d-b22465e65bf6"

-- Counts, in a decoded /_emulator/state, the objects one onboard creates: the multi-tenant app,
-- federated credentials, the app's service principals (any tenant), Key Vault Crypto Service
-- Encryption User assignments, storage accounts, vaults, keys and key versions.
function M.onboard_census(state)
  local c = { apps = 0, fics = 0, app_sps = 0, crypto_roles = 0, storage_accounts = 0, vaults = 0, keys = 0,
              key_versions = 0 }
  local app_ids = {}
  for _, t in ipairs(state.tenants) do
    for _, a in ipairs(t.applications) do
      if a.signInAudience == "AzureADMultipleOrgs" then
        c.apps = c.apps + 1
        app_ids[a.appId] = true
      end
    end
    c.fics = c.fics + #t.federated_credentials
    for _, r in ipairs(t.role_assignments) do
      if r.properties.roleDefinitionId:find("/" .. ROLE_ENCRYPTION_USER, 1, true) then c.crypto_roles = c.crypto_roles + 1 end
    end
    for _, r in ipairs(t.resources) do
      if r.type == "Microsoft.Storage/storageAccounts" then c.storage_accounts = c.storage_accounts + 1 end
      if r.type == "Microsoft.KeyVault/vaults" then c.vaults = c.vaults + 1 end
    end
  end
  for _, t in ipairs(state.tenants) do
    for _, sp in ipairs(t.service_principals) do
      if app_ids[sp.appId] then c.app_sps = c.app_sps + 1 end
    end
  end
  for _, keys in pairs(state.vault_keys or {}) do
    for _, k in ipairs(keys) do
      c.keys = c.keys + 1
      c.key_versions = c.key_versions + #k.versions
    end
  end
  return c
end

-- One of each after an onboard of one customer.
M.ONBOARD_ONCE = { apps = 1, fics = 1, app_sps = 1, crypto_roles = 1, storage_accounts = 1, vaults = 1, keys = 1,
                   key_versions = 1 }

-- ---- cmkflow clients in the background -----------------------------------------------------------

local Proc = {}
Proc.__index = Proc

-- Starts `cmkflow ARGS` in the background with env; returns a handle: pid (cmkflow's own),
-- done() -> exited?, wait() -> {code, stdout, stderr}, kill(signal).
function M.spawn(args, env)
  local dir = files.tmpdir()
  local quoted = {}
  for _, a in ipairs(args) do quoted[#quoted + 1] = q(a) end
  local cmd = env_prefix(env) .. " " .. q(cli.bin) .. " " .. table.concat(quoted, " ")
    .. " >" .. q(dir .. "/out") .. " 2>" .. q(dir .. "/err") .. " </dev/null"
  -- the shell prints the child's pid, waits for it and records its exit status
  local inner = cmd .. " & echo $!; wait $!; echo $? >" .. q(dir .. "/rc.tmp") .. "; mv "
    .. q(dir .. "/rc.tmp") .. " " .. q(dir .. "/rc")
  -- (the shell's own stderr, e.g. "Killed", is not the child's)
  local p = assert(io.popen("sh -c " .. q(inner) .. " 2>/dev/null", "r"))
  local pid = tonumber(p:read("l"))
  return setmetatable({ pipe = p, pid = pid, dir = dir }, Proc)
end

function Proc:done() return files.read(self.dir .. "/rc", false) ~= false end

function Proc:kill(signal)
  -- the background job is env, which execs cmkflow: $! is cmkflow's pid
  os.execute(("kill -%s %d 2>/dev/null"):format(signal or "KILL", self.pid))
end

function Proc:wait()
  if self.pipe then
    self.pipe:read("a")
    self.pipe:close()
    self.pipe = nil
    self.result = { code = tonumber(files.read(self.dir .. "/rc", "")), stdout = files.read(self.dir .. "/out", ""),
                    stderr = files.read(self.dir .. "/err", "") }
    os.execute("rm -rf " .. q(self.dir))
  end
  return self.result
end

return M
