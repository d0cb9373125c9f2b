-- Startup time of `cmkflow version` beside `curl --version` (a peer that loads the same
-- libcurl), measured by hyperfine without a shell (-N). Falls back to a timed loop.
local core = require "cmkflow.core"
local json = core.json
local n = tonumber(arg[1]) or 200
local bin = assert(os.getenv("CMKFLOW_BIN"))

local function hyperfine(cmds)
  local out = os.tmpname()
  local q = {}
  for _, c in ipairs(cmds) do q[#q + 1] = "'" .. c .. "'" end
  local ok = os.execute(("hyperfine -N --warmup 10 --runs %d --export-json %s %s >/dev/null 2>&1")
    :format(n, out, table.concat(q, " ")))
  if not ok then os.remove(out) return nil end
  local f = assert(io.open(out, "rb"))
  local r = json.decode(f:read("a"))
  f:close()
  os.remove(out)
  local means = {}
  for i, res in ipairs(r.results) do means[i] = res.mean * 1000 end
  return means
end

local m = hyperfine({ bin .. " version", "curl --version" })
if m then
  print(("startup: cmkflow version %.2f ms, curl --version %.2f ms (hyperfine -N, %d runs); ratio %.2f; target < 10 ms")
    :format(m[1], m[2], n, m[1] / m[2]))
else
  local s = core.http.session()
  local t0 = s:now()
  for _ = 1, n do assert(os.execute(bin .. " version >/dev/null")) end
  print(("startup: cmkflow version %.2f ms per run including a shell (%d runs; hyperfine not installed)")
    :format((s:now() - t0) / n, n))
end
