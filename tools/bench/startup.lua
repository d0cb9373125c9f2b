-- Startup time of `cmkflow version`: N sequential runs, mean per run.
local core = require "cmkflow.core"
local n = tonumber(arg[1]) or 200
local bin = assert(os.getenv("CMKFLOW_BIN"))
local s = core.http.session()
local t0 = s:now()
for _ = 1, n do
  assert(os.execute(bin .. " version >/dev/null"))
end
local per = (s:now() - t0) / n
local t1 = s:now()
for _ = 1, n do assert(os.execute("true")) end
local shell = (s:now() - t1) / n
print(("startup: cmkflow version %.2f ms per run (%d runs; a bare `true` costs %.2f ms the same way); target < 10 ms")
  :format(per, n, shell))
