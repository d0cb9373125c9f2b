-- Echo handler for spec/server_spec.lua: returns the request it saw as JSON.
--   /drop            -> nil: the server closes the connection without a response
--   /error           -> raises: the server answers 500 InternalServerError
--   ?delay_ms=N      -> the response is sent after N milliseconds
--   ?status=N        -> that status
-- config (a string) is echoed back as "config"; init counts how often it ran.
local json = require("cmkflow.core").json

local inits = 0

return {
  init = function(config)
    inits = inits + 1
    if config == "fail-init" then error("init refused the config") end
  end,
  handle = function(req, config)
    if req.path == "/drop" then return nil end
    if req.path == "/error" then error("echo handler failure on purpose") end
    local body = json.encode {
      method = req.method, path = req.path, query = req.query, args = json.object(req.args),
      headers = json.object(req.headers), body = req.body, body_len = #req.body, host = req.host,
      port = req.port, remote = req.remote, scheme = req.scheme, config = config, inits = inits,
    }
    return tonumber(req.args.status) or 200,
      { ["content-type"] = "application/json", ["x-multi"] = { "one", "two" }, ["x-number"] = 42,
        ["content-length"] = "999" },
      body, tonumber(req.args.delay_ms)
  end,
}
