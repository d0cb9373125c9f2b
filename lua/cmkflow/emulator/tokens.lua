-- Access tokens: real RS256 JWTs signed with each tenant's key, and their verification on every
-- ARM, Graph and Key Vault call (signature, issuer, audience, tenant, expiry).
local core = require "cmkflow.core"
local clouds = require "cmkflow.util.clouds"
local jose, json = core.jose, core.json

local M = {}

M.TOKEN_EXCHANGE_APP = "fb60f99c-7a34-4190-8149-302f77469936" -- "AAD Token Exchange Endpoint"

-- Audiences accepted per service, as the resource app id URIs Entra puts in `aud`: the public
-- cloud's (also on the single-origin layout) and, per cloud, AUDIENCES_BY_CLOUD[cloud][service].
M.AUDIENCES = {
  arm = { ["https://management.azure.com"] = true, ["https://management.azure.com/"] = true,
          ["https://management.core.windows.net"] = true, ["https://management.core.windows.net/"] = true },
  graph = { ["https://graph.microsoft.com"] = true, ["https://graph.microsoft.com/"] = true,
            ["00000003-0000-0000-c000-000000000000"] = true },
  kv = { ["https://vault.azure.net"] = true, ["https://vault.azure.net/"] = true,
         ["cfa8b339-82a2-471a-a3c9-0fc0be7a4093"] = true },
  -- Azure Storage: one resource for every cloud
  -- (https://learn.microsoft.com/azure/storage/blobs/authorize-access-azure-active-directory)
  storage = { ["https://storage.azure.com"] = true, ["https://storage.azure.com/"] = true,
              ["e406a681-f3d4-42a8-90b6-c2b029497af1"] = true },
}
M.AUDIENCES_BY_CLOUD = { azure = M.AUDIENCES }
for _, name in ipairs(clouds.NAMES) do
  if name ~= "azure" then
    local by = {}
    for _, service in ipairs { "arm", "graph", "kv" } do
      local r = clouds.resource(name, service):gsub("/$", "")
      by[service] = { [r] = true, [r .. "/"] = true }
    end
    by.graph["00000003-0000-0000-c000-000000000000"] = true
    by.kv["cfa8b339-82a2-471a-a3c9-0fc0be7a4093"] = true
    by.storage = M.AUDIENCES.storage
    M.AUDIENCES_BY_CLOUD[name] = by
  end
end

-- Single-origin layout (docs/realclients.md, "Token audiences in the single-origin layout"): third-party clients configured with
-- BASE = https://127.0.0.1:PORT ask for the resources BASE + "/" (az: ARM, scope BASE .. "//.default"),
-- BASE (Python SDK: ARM, scope BASE .. "/.default"), BASE .. "/graph" (Graph) and
-- https://vault.localhost:PORT (Key Vault: az rest --resource, the data-plane challenge). Entra puts the
-- scope minus "/.default" in `aud`; these are accepted only on the request's own origin (a loopback
-- Host with the server's port), so a token for one emulator port is refused on another.
M.ORIGIN_AUDIENCES = {
  arm = { "%s", "%s/" },
  graph = { "%s/graph", "%s/graph/" },
  kv = { "https://vault.localhost%s", "https://vault.localhost%s/" },
}
local LOOPBACK = { ["127.0.0.1"] = true, ["localhost"] = true }

-- The origin audiences valid for req: the set of strings, or nil when req is not single-origin.
function M.origin_audiences(req, service)
  local forms = M.ORIGIN_AUDIENCES[service]
  local host, port = req.host or "", math.tointeger(req.port)
  if not forms or not port then return nil end
  local ports = { ":" .. port }
  if port == 443 then ports[2] = "" end
  local set = {}
  for _, p in ipairs(ports) do
    for _, form in ipairs(forms) do
      if service == "kv" then
        if host:match("^[%w%-]+%.vault%.localhost$") then set[form:format(p)] = true end
      elseif LOOPBACK[host] then
        set[form:format("https://" .. host .. p)] = true
      end
    end
  end
  return next(set) and set or nil
end

-- True when aud is valid for service on req: a resource app id URI of the cloud the request's
-- host belongs to (the public cloud's on loopback), or the request's own origin.
function M.audience_ok(req, service, aud)
  if type(aud) ~= "string" then return false end
  local cloud = clouds.of_host(req.host) or "azure"
  if M.AUDIENCES_BY_CLOUD[cloud][service][aud] then return true end
  local origin = M.origin_audiences(req, service)
  return origin ~= nil and origin[aud] == true
end

-- A tenant's token issuers in its cloud (cloud: "azure" when nil).
function M.issuer_v1(tid, cloud) return clouds.issuer_v1(cloud, tid) end
function M.issuer_v2(tid, cloud) return clouds.issuer_v2(cloud, tid) end

-- The JWKS document of a tenant.
function M.jwks(tenant)
  local jwk = tenant.key:jwk()
  return { keys = json.array { { kty = "RSA", use = "sig", kid = tenant.kid, x5t = tenant.kid, n = jwk.n, e = jwk.e,
    issuer = M.issuer_v2(tenant.id, tenant.cloud) } } }
end

-- Issues a token. claims: aud (required), plus oid/sub/appid/azp/roles/idtyp/xms_mirid as the
-- caller decides; version "1.0" (default: ARM, Key Vault, Graph) or "2.0". Returns token, expires_in.
function M.issue(st, tenant, claims, version, lifetime)
  local now = st:now()
  lifetime = lifetime or 3599
  local c = {}
  for k, v in pairs(claims) do c[k] = v end
  c.tid = tenant.id
  c.iat, c.nbf, c.exp = now, now - 300, now + lifetime
  c.uti = core.crypto.b64url_encode(core.crypto.random_bytes(16))
  c.ver = version or "1.0"
  c.iss = c.ver == "2.0" and M.issuer_v2(tenant.id, tenant.cloud) or M.issuer_v1(tenant.id, tenant.cloud)
  c.idtyp = c.idtyp or "app"
  local token = jose.sign(c, tenant.key, { alg = "RS256", header = { kid = tenant.kid, x5t = tenant.kid } })
  return token, lifetime
end

-- Verified-token cache: token -> claims (bounded; entries dropped once expired or when full).
-- 1,024 tokens (about 2.5 MiB with their claims) cover the callers of a bulk run at concurrency
-- 64; 4,096 held 10 MiB that a 10,000-customer run never read again (docs/performance.md).
local cache, cache_size, CACHE_MAX = {}, 0, 1024

local function verify_signature(st, token)
  local hit = cache[token]
  if hit then return hit end
  local header, claims = jose.decode(token)
  if not header then return nil, "malformed", "the token is not a JWT: " .. tostring(claims) end
  local tenant = st:tenant(type(claims.tid) == "string" and claims.tid or "")
  if not tenant then return nil, "issuer", "the token's tenant is unknown to this emulator" end
  local verified = jose.verify(token, tenant.key)
  if not verified then return nil, "signature", "the token's signature does not verify" end
  if cache_size >= CACHE_MAX then cache, cache_size = {}, 0 end
  cache[token] = claims
  cache_size = cache_size + 1
  return claims
end

-- Verifies the bearer token of req for service ("arm" | "graph" | "kv").
-- Returns claims, or nil, reason, message where reason is one of
-- "missing", "malformed", "signature", "issuer", "expired", "not_yet_valid", "audience".
function M.verify(st, req, service)
  local auth = req.headers.authorization
  if not auth or auth == "" then return nil, "missing", "the Authorization header is missing" end
  local token = auth:match("^[Bb]earer%s+(%S+)$")
  if not token then return nil, "malformed", "the Authorization header is not 'Bearer <token>'" end
  local claims, reason, message = verify_signature(st, token)
  if not claims then return nil, reason, message end
  local now = st:now()
  if type(claims.exp) ~= "number" or claims.exp <= now then
    return nil, "expired", "the token expired at " .. os.date("!%Y-%m-%dT%H:%M:%SZ", tonumber(claims.exp) or 0)
  end
  if type(claims.nbf) == "number" and claims.nbf > now + 300 then return nil, "not_yet_valid", "the token is not yet valid" end
  local tenant = st:tenant(claims.tid)
  local cloud = tenant.cloud or "azure"
  if claims.iss ~= M.issuer_v1(claims.tid, cloud) and claims.iss ~= M.issuer_v2(claims.tid, cloud) then
    return nil, "issuer", "the token's issuer '" .. tostring(claims.iss) .. "' does not match its tenant"
  end
  -- a tenant exists in one cloud only: its tokens mean nothing to another cloud's services
  local host_cloud = clouds.of_host(req.host)
  if host_cloud and host_cloud ~= cloud then
    return nil, "issuer", "the token's tenant belongs to the " .. cloud .. " cloud, not to " .. host_cloud
  end
  if not M.audience_ok(req, service, claims.aud) then
    return nil, "audience", "the token's audience '" .. tostring(claims.aud) .. "' is not valid for this service"
  end
  return claims
end

return M
