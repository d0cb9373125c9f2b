-- cmkflow emulator [...]: the Azure emulator in the foreground (cmkflow.emulator.cli), and
-- cmkflow emulator state|reset|snapshot NAME|restore NAME|journal: its control API
-- (docs/emulator.md) on a running one, found through its state directory or --endpoint.
-- opts: the options of the command table's emulator rows (cmkflow.cli.commands), by long name.
local core = require "cmkflow.core"
local args = require "cmkflow.cli.args"
local http = require "cmkflow.http"
local ecli = require "cmkflow.emulator.cli"
local locator = require "cmkflow.emulator.locator"

local json = core.json

local M = {}

-- Each control command: {method, path}, name: takes a NAME, body: from NAME, text: a line for people.
local CONTROL = {
  state = { "GET", "/_emulator/state" },
  reset = { "POST", "/_emulator/reset", text = function(_, url) return "reset: the emulator at " .. url .. " is back to its seed" end },
  snapshot = { "POST", "/_emulator/snapshot", name = true, body = function(n) return { name = n } end,
               text = function(doc) return "snapshot: saved as " .. tostring(doc.id) end },
  restore = { "POST", "/_emulator/restore", name = true, body = function(n) return { id = n } end,
              text = function(doc) return "restore: the world of snapshot " .. tostring(doc.restored) .. " is back" end },
  journal = { "GET", "/_emulator/journal" },
}

-- The running emulator to talk to: --endpoint (with --ca-cert), else the locator in --state DIR or
-- the per-user state directory. {url, ca_cert} | nil, message.
local function target(opts)
  if opts.endpoint then
    if not opts.endpoint:match("^https://") then return nil, "--endpoint must be the emulator's https:// URL" end
    if not opts["ca-cert"] then return nil, "--endpoint needs --ca-cert (the emulator's CA, its ready line names it)" end
    return { url = opts.endpoint:gsub("/+$", ""), ca_cert = opts["ca-cert"] }
  end
  return locator.find(opts.state or locator.default_dir())
end

local function journal_text(doc)
  local lines = {}
  for _, e in ipairs(doc.value or {}) do
    lines[#lines + 1] = ("%6d  %s  %-6s %3s  %s%s%s"):format(e.seq or 0, tostring(e.time), tostring(e.method),
      tostring(e.status), tostring(e.host), tostring(e.path), (e.query and e.query ~= "") and ("?" .. e.query) or "")
  end
  lines[#lines + 1] = ("(%d request(s); next seq %s)"):format(#(doc.value or {}), tostring(doc.next_seq))
  return table.concat(lines, "\n")
end

-- One control call; prints the answer (JSON, or a line of text). Exit code.
local function control(name, opts)
  local cmd = CONTROL[name]
  local arg = opts[1]
  local emu, err = target(opts)
  if not emu then
    io.stderr:write("cmkflow: emulator ", name, ": ", err, "\n")
    return core.exit.usage
  end
  local query = {}
  if name == "journal" then
    if opts.since then
      if not math.tointeger(tonumber(opts.since)) then return args.usage_error("--since must be a sequence number") end
      query[#query + 1] = "since=" .. opts.since
    end
    if opts.service then query[#query + 1] = "service=" .. opts.service end
  end
  -- the emulator is on loopback: never through a proxy from the environment
  local client = http.new { ca_file = emu.ca_cert, proxy = "", retry = { max_attempts = 1 } }
  local resp, rerr = client:request { method = cmd[1],
    url = emu.url .. cmd[2] .. (#query > 0 and "?" .. table.concat(query, "&") or ""),
    json = cmd.body and cmd.body(arg) or nil }
  if not resp then
    io.stderr:write("cmkflow: emulator ", name, ": ", emu.url, " did not answer: ",
      tostring(type(rerr) == "table" and rerr.message or rerr), " (is `cmkflow emulator` running?)\n")
    return core.exit.failed
  end
  local doc = resp.body ~= "" and json.decode(resp.body) or nil
  if resp.status >= 300 then
    local e = type(doc) == "table" and doc.error or {}
    io.stderr:write("cmkflow: emulator ", name, ": ", tostring(e.code or resp.status), ": ", tostring(e.message or resp.body), "\n")
    return resp.status == 404 and core.exit.usage or core.exit.failed
  end
  if opts.output ~= "json" and cmd.text then
    io.stdout:write(cmd.text(doc, emu.url), "\n")
  elseif opts.output ~= "json" and name == "journal" then
    io.stdout:write(journal_text(doc), "\n")
  else
    io.stdout:write(json.encode(doc), "\n")
  end
  return core.exit.ok
end

-- cmkflow emulator [serve]: the emulator in the foreground
function M.serve(opts)
  return ecli.main(opts, core.exit)
end

function M.state(opts) return control("state", opts) end
function M.reset(opts) return control("reset", opts) end
function M.snapshot(opts) return control("snapshot", opts) end
function M.restore(opts) return control("restore", opts) end
function M.journal(opts) return control("journal", opts) end

return M
