-- A private PostgreSQL server for specs: initdb into a scratch directory, pg_ctl start on
-- 127.0.0.1 at a free port (and a unix socket in that directory), stopped by :stop(). Debian's
-- server binaries (tools/bootstrap --test installs postgresql). PostgreSQL refuses to run as root:
-- as root the server runs as nobody, in a directory nobody owns.
--
--   local pg = require("support.postgres").start()   -- raises when it cannot start
--   pg.url                 -- "postgresql://cmkflow@127.0.0.1:PORT/cmkflow"
--   pg:store("name")       -- the URL of a new, empty store (a schema of its own)
--   pg:psql(sql, "name")   -- psql's output for sql in that schema
--   pg:stop()
local files = require("support.files")

local M = {}

local q = files.quote

-- The newest installed server's bin directory (/usr/lib/postgresql/15/bin on Debian 12).
local function bindir()
  local p = io.popen("ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1")
  local dir = p:read("l")
  p:close()
  return dir
end

M.available = function() return bindir() ~= nil end

-- A TCP port nothing listens on now (the kernel's pick for an ephemeral bind).
local function free_port()
  local p = io.popen([[python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])']])
  local port = tonumber(p:read("l"))
  p:close()
  return assert(port, "no free port")
end

local function is_root()
  local p = io.popen("id -u")
  local uid = p:read("l")
  p:close()
  return uid == "0"
end

local Server = {}
Server.__index = Server

-- Runs a server binary as the server's user; raises with its output when it fails.
function Server:exec(cmd)
  local full = self.as .. self.bin .. "/" .. cmd .. " >" .. q(self.dir .. "/cmd.log") .. " 2>&1"
  if not os.execute(full) then
    error("postgres: " .. cmd .. " failed:\n" .. files.read(self.dir .. "/cmd.log", "") ..
      files.read(self.dir .. "/server.log", ""), 2)
  end
end

-- A new empty schema in the cmkflow database (a schema, not a database: CREATE DATABASE takes
-- seconds on a loaded machine); the URL of a store in it (search_path set through libpq's options).
function Server:store(name)
  assert(name:match("^[%l%d_]+$"), "a plain lower-case schema name")
  local out = self:psql("CREATE SCHEMA " .. name)
  assert(out == "", out)
  return ("postgresql://cmkflow@%s:%d/cmkflow?options=-csearch_path%%3D%s"):format(self.host, self.port, name)
end

-- SQL through psql on the cmkflow database, in schema (when given); its unaligned, tuples-only output.
function Server:psql(sql, schema)
  if schema then sql = "SET search_path TO " .. schema .. "; " .. sql end
  local p = io.popen(("psql -XAtq -h %s -p %d -U cmkflow -d cmkflow -c %s 2>&1"):format(q(self.host), self.port,
    q(sql)))
  local out = p:read("a")
  p:close()
  return out
end

function Server:stop()
  if self.stopped then return end
  self.stopped = true
  os.execute(self.as .. self.bin .. "/pg_ctl stop -m immediate -w -t 30 -D " .. q(self.dir .. "/data") ..
    " >/dev/null 2>&1")
  os.execute("rm -rf " .. q(self.dir))
end

-- Starts a server; raises (with the server's log) when it does not accept connections within 60 s.
function M.start()
  local bin = assert(bindir(), "PostgreSQL's server is not installed (tools/bootstrap --test)")
  local dir = files.tmpdir()
  local self = setmetatable({ bin = bin, dir = dir, host = "127.0.0.1", port = free_port(), as = "" }, Server)
  if is_root() then
    -- the server's user must own its directory and be able to reach it
    files.sh("chmod 755 " .. q(dir) .. " && chown nobody:nogroup " .. q(dir))
    self.as = "setpriv --reuid=nobody --regid=nogroup --clear-groups env HOME=" .. q(dir) .. " "
  end
  self:exec(("initdb -D %s -U cmkflow --auth=trust --no-sync -E UTF8 --locale=C"):format(q(dir .. "/data")))
  -- fsync off: a scratch server (the store's durability is PostgreSQL's, not under test here)
  local opts = ("-c listen_addresses=127.0.0.1 -p %d -k %s -c fsync=off -c max_connections=200")
    :format(self.port, dir)
  local ok, err = pcall(self.exec, self, ("pg_ctl start -w -t 60 -D %s -l %s -o %s")
    :format(q(dir .. "/data"), q(dir .. "/server.log"), q(opts)))
  if not ok then
    self:stop()
    error(err, 0)
  end
  self:exec(("createdb -h %s -p %d -U cmkflow cmkflow"):format(self.host, self.port))
  self.url = ("postgresql://cmkflow@%s:%d/cmkflow"):format(self.host, self.port)
  return self
end

return M
