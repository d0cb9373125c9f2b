-- Handler for the HTTP benchmark: an Entra-style token endpoint and one ARM-style resource
-- behind bearer-token checks. Counts token issues so the benchmark can report them.
local core = require "cmkflow.core"
local json = core.json

local issued, token_count = {}, 0
local resource = json.encode({
  id = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/bench-rg",
  name = "bench-rg", type = "Microsoft.Resources/resourceGroups", location = "westeurope",
  properties = { provisioningState = "Succeeded" }, tags = json.object(),
})
local JSON = { ["content-type"] = "application/json; charset=utf-8" }

return function(req)
  if req.method == "POST" and req.path:match("^/[^/]+/oauth2/v2%.0/token$") then
    token_count = token_count + 1
    local token = core.crypto.b64url_encode(core.crypto.random_bytes(32))
    issued[token] = true
    return 200, JSON, json.encode({ token_type = "Bearer", expires_in = 3599, access_token = token })
  end
  if req.path == "/_bench/tokens" then
    return 200, JSON, json.encode({ tokens = token_count })
  end
  local token = (req.headers.authorization or ""):match("^Bearer (%S+)$")
  if not (token and issued[token]) then
    return 401, JSON, '{"error":{"code":"AuthenticationFailed","message":"missing or invalid token"}}'
  end
  return 200, JSON, resource
end
