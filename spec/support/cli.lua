-- Helpers for specs that run the cmkflow executable as a user would.
local files = require "support.files"

local M = {}

M.bin = assert(os.getenv("CMKFLOW_BIN"), "CMKFLOW_BIN is not set (run the specs through ctest)")

local shell_quote = files.quote
M.quote = shell_quote -- the specs' name for it

-- Runs cmkflow with args (array); returns {code, stdout, stderr}. env: {NAME = value} prefix.
function M.run(args, env)
  local out, err = os.tmpname(), os.tmpname()
  -- the caller's own Azure settings must not leak into a spec
  local parts = { "env", "-u", "AZURE_TENANT_ID", "-u", "AZURE_CLIENT_ID", "-u", "AZURE_CLIENT_SECRET",
                  "-u", "AZURE_CLIENT_CERTIFICATE_PATH", "-u", "AZURE_FEDERATED_TOKEN_FILE",
                  "-u", "AZURE_SUBSCRIPTION_ID", "-u", "CMKFLOW_LUA_PATH", "-u", "CMKFLOW_CONFIG" }
  -- runs and the embedded emulator's state go to a scratch directory, never the user's home
  if not (env and env.CMKFLOW_STATE_DIR) then
    M.state_dir = M.state_dir or files.tmpdir()
    parts[#parts + 1] = "CMKFLOW_STATE_DIR=" .. shell_quote(M.state_dir)
  end
  for k, v in pairs(env or {}) do parts[#parts + 1] = k .. "=" .. shell_quote(v) end
  parts[#parts + 1] = shell_quote(M.bin)
  for _, a in ipairs(args) do parts[#parts + 1] = shell_quote(a) end
  local cmd = table.concat(parts, " ") .. " >" .. out .. " 2>" .. err .. " </dev/null"
  local _, _, code = os.execute(cmd)
  local r = { code = code, stdout = files.read(out, ""), stderr = files.read(err, "") }
  os.remove(out)
  os.remove(err)
  return r
end

function M.write_temp(content, suffix)
  return files.write(os.tmpname() .. (suffix or ""), content)
end

return M
