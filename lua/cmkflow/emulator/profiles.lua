-- Emulator profiles as data: "instant" (the default: no latency, no visibility delays, so
-- `make check` stays fast) and "realistic" (per-operation latency and the visibility delays of
-- Azure's eventual consistency, as log-normal draws given by median and p95 and cut at a cap).
-- Draws come from a generator seeded by the seed's random_seed, so runs repeat.
--   profiles.knobs(name) -> knobs table (knobs.validate_knobs shape) | nil for an unknown name
--   profiles.sample(dist, seed, n) -> seconds: the n-th draw of dist = {median, p95, cap}
--   profiles.operation(service, req) -> the LATENCY key of a request, or nil
local M = {}

M.NAMES = { instant = true, realistic = true }

-- Figures (seconds). Sources: https://learn.microsoft.com/entra/identity-platform/msal-net-token-cache-serialization
-- (token requests), https://learn.microsoft.com/azure/role-based-access-control/troubleshooting
-- (role assignments: up to 10 minutes), https://learn.microsoft.com/entra/workload-id/workload-identity-federation-create-trust
-- (a new federated credential: "a few seconds", failures possible for minutes),
-- https://learn.microsoft.com/rest/api/storagerp/storage-accounts/create (Retry-After 17 in the example);
-- the medians and tails in between are estimates (docs/emulator.md, "Profiles").
local function d(median, p95, cap) return { median = median, p95 = p95, cap = cap } end

M.REALISTIC = {
  latency = {
    ["entra.token"] = d(0.25, 0.8, 5),
    ["graph.applications.create"] = d(0.8, 2.5, 20),
    ["graph.servicePrincipals.create"] = d(0.8, 2.5, 20),
    ["graph.fic.write"] = d(0.6, 2.0, 20),
    ["graph.read"] = d(0.2, 0.6, 10),
    ["arm.resourceGroups.put"] = d(0.6, 2.0, 30),
    ["arm.uami.put"] = d(1.2, 3.0, 30),
    ["arm.vault.put"] = d(2.0, 5.0, 60),
    ["arm.key.put"] = d(1.5, 4.0, 30),
    ["arm.roleAssignments.put"] = d(1.5, 5.0, 30),
    ["arm.storage.put"] = d(1.5, 4.0, 30),
    ["arm.storage.patch"] = d(3, 10, 60),
    ["arm.read"] = d(0.3, 1.0, 10),
    ["kv.keys.create"] = d(0.5, 2.0, 20),
    ["kv.crypto"] = d(0.1, 0.4, 5),
  },
  delays = {
    service_principal = d(5, 30, 300),      -- AADSTS700016, PrincipalNotFound, a FIC's subject
    federated_credential = d(10, 120, 300), -- AADSTS70021
    role_assignment = d(45, 240, 600),      -- ForbiddenByRbac (Storage: KeyVaultAccessForbidden)
    vault_dns = d(15, 60, 300),             -- RegisteringDns, host not resolvable
  },
  lro_retry_after_s = 17,
}

function M.knobs(name)
  if name == "instant" then return { delays = {}, latency = {}, lro_retry_after_s = 1 } end
  if name == "realistic" then
    local out = { delays = {}, latency = {}, lro_retry_after_s = M.REALISTIC.lro_retry_after_s }
    for k, v in pairs(M.REALISTIC.delays) do out.delays[k] = v end
    for k, v in pairs(M.REALISTIC.latency) do out.latency[k] = v end
    return out
  end
  return nil
end

-- splitmix64 of (seed, n): a uniform draw in (0, 1).
local function uniform(seed, n)
  local z = (seed * 0x9E3779B97F4A7C15 + n * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
  z = (z ~ (z >> 30)) * 0xBF58476D1CE4E5B9
  z = (z ~ (z >> 27)) * 0x94D049BB133111EB
  z = z ~ (z >> 31)
  return ((z >> 11) + 0.5) / 9007199254740992.0
end

-- The n-th draw of a log-normal with the given median and p95 (sigma = ln(p95/median)/1.645),
-- cut at cap.
function M.sample(dist, seed, n)
  local u1, u2 = uniform(seed, 2 * n), uniform(seed, 2 * n + 1)
  local normal = math.sqrt(-2 * math.log(u1)) * math.cos(2 * math.pi * u2)
  local sigma = math.log(dist.p95 / dist.median) / 1.645
  return math.min(dist.cap, dist.median * math.exp(sigma * normal))
end

-- The latency key of a request (service as the router names it).
function M.operation(service, req)
  local method, path = req.method, (req.service_path or req.path or ""):lower()
  if service == "entra" or service == "imds" then
    return path:find("token", 1, true) and "entra.token" or nil
  elseif service == "graph" then
    if method == "GET" then return "graph.read" end
    if path:find("federatedidentitycredentials", 1, true) then return "graph.fic.write" end
    if path:find("^/v1%.0/serviceprincipals") or path:find("^/serviceprincipals") then
      return "graph.servicePrincipals.create"
    end
    return "graph.applications.create"
  elseif service == "keyvault" then
    if path:find("/create", 1, true) then return "kv.keys.create" end
    return "kv.crypto"
  elseif service == "arm" then
    if method == "GET" or method == "HEAD" then return "arm.read" end
    if path:find("/microsoft.storage/storageaccounts/", 1, true) then
      return method == "PATCH" and "arm.storage.patch" or "arm.storage.put"
    end
    if path:find("/roleassignments/", 1, true) then return "arm.roleAssignments.put" end
    if path:find("/vaults/[^/]+/keys/") then return "arm.key.put" end
    if path:find("/microsoft.keyvault/vaults/", 1, true) then return "arm.vault.put" end
    if path:find("/userassignedidentities/", 1, true) then return "arm.uami.put" end
    if path:find("^/subscriptions/[^/]+/resourcegroups/[^/]+$") then return "arm.resourceGroups.put" end
  end
  return nil
end

return M
