-- verify: checks the cross-tenant chain from both sides, read-only, in the order Azure Storage
-- walks it: the ISV's multi-tenant app, its federated credential for the user-assigned identity,
-- the app's service principal in the customer tenant, the role on the vault or key, the key (enabled,
-- RSA >= 2048), the vault (soft delete, purge protection), the storage account's encryption. Names
-- the first broken link and the tenant that must fix it: outputs {ok, checks, broken = {link,
-- tenant, fix}}; the run fails (exit 1) when a link is broken.
local cmk = require "cmkflow.workflow.cmk"

local function good(t) t.ok = true return t end
local function broken(link, tenant, problem, fix) return { ok = false, link = link, tenant = tenant, problem = problem, fix = fix } end
local function skipped(why) return { ok = "skipped", why = why } end
local function usable(out) return out and out.ok == true end

local function norm_uri(u) return type(u) == "string" and u:lower():gsub("/+$", "") or u end

local checks = {}

function checks.app(ctx)
  local app = cmk.find_app(ctx)
  local what = ctx.params.app_id or ("uniqueName=" .. cmk.names(ctx).app_unique_name)
  if not app then
    return broken("app", "ISV", "application " .. what .. " does not exist",
      "run isv-setup (it creates the multi-tenant application)")
  end
  if app.signInAudience ~= "AzureADMultipleOrgs" and app.signInAudience ~= "AzureADandPersonalMicrosoftAccount" then
    return broken("app", "ISV", ("application %s is single-tenant (%s)"):format(app.appId, tostring(app.signInAudience)),
      "set signInAudience to AzureADMultipleOrgs (run isv-setup)")
  end
  return good { appId = app.appId, objectId = app.id }
end

function checks.identity(ctx)
  local isv = ctx.context("isv")
  local id = cmk.identity_id(ctx)
  local uami = cmk.get_or_absent(isv.arm, id, { api_version = cmk.API.identities }, "identity " .. id, "ISV")
  if not uami then
    return broken("identity", "ISV", "user-assigned identity " .. id .. " does not exist", "run isv-setup")
  end
  return good { id = uami.id, principalId = uami.properties.principalId, clientId = uami.properties.clientId }
end

function checks.federated_credential(ctx)
  local app, identity = ctx.outputs.app, ctx.outputs.identity
  if not usable(identity) then return identity end
  if not usable(app) then return skipped("the application is broken") end
  local isv = ctx.context("isv")
  local list, err = isv.graph:list("/applications/" .. app.objectId .. "/federatedIdentityCredentials")
  if list == nil then cmk.raise("federated credentials of " .. app.appId .. ": " .. tostring(err) .. " [ISV]", 0) end
  local issuer = cmk.fic_issuer(isv.tenant)
  local near
  for _, f in ipairs(list) do
    local aud = false
    for _, a in ipairs(f.audiences or {}) do if a == cmk.TOKEN_EXCHANGE_AUDIENCE then aud = true end end
    if f.subject == identity.principalId then
      if f.issuer == issuer and aud then return good { name = f.name, subject = f.subject, issuer = f.issuer } end
      near = f
    end
  end
  if near then
    return broken("federated_credential", "ISV", ("federated credential %s does not match: issuer %s (want %s), audiences %s (want %s)")
      :format(near.name, tostring(near.issuer), issuer, table.concat(near.audiences or {}, ","), cmk.TOKEN_EXCHANGE_AUDIENCE),
      "run isv-setup (it rewrites the federated credential)")
  end
  return broken("federated_credential", "ISV", ("no federated credential on application %s for identity %s (subject %s)")
    :format(app.appId, identity.id, identity.principalId), "run isv-setup (it adds the federated credential)")
end

function checks.service_principal(ctx)
  local app = ctx.outputs.app
  local app_id = usable(app) and app.appId or ctx.params.app_id
  if not app_id then return skipped("no application id") end
  local customer = ctx.context("customer")
  local sp = cmk.get_or_absent(customer.graph, "/servicePrincipals(appId='" .. app_id .. "')", nil,
    "service principal for " .. app_id, "customer")
  if not sp then
    return broken("service_principal", "customer", "the ISV application " .. app_id .. " has no service principal in the customer tenant",
      "the customer runs customer-authorize (or grants admin consent) to install the application")
  end
  if sp.accountEnabled == false then
    return broken("service_principal", "customer", "the ISV application's service principal " .. sp.id .. " is disabled",
      "the customer re-enables the enterprise application (accountEnabled = true)")
  end
  return good { id = sp.id, appId = sp.appId }
end

function checks.key_vault(ctx)
  local customer = ctx.context("customer")
  local id = cmk.vault_id(ctx)
  local vault = cmk.get_or_absent(customer.arm, id, { api_version = cmk.API.vaults }, "key vault " .. id, "customer")
  if not vault then return broken("key_vault", "customer", "key vault " .. id .. " does not exist", "the customer runs customer-authorize") end
  local p = vault.properties or {}
  if p.enableSoftDelete == false or p.enablePurgeProtection ~= true then
    return broken("key_vault", "customer", ("key vault %s: soft delete %s, purge protection %s"):format(vault.name,
      tostring(p.enableSoftDelete ~= false), tostring(p.enablePurgeProtection == true)),
      "the customer enables soft delete and purge protection on the vault (irreversible; run customer-authorize)")
  end
  if ctx.params.key_vault_uri and norm_uri(ctx.params.key_vault_uri) ~= norm_uri(p.vaultUri) then
    return broken("key_vault", "customer", ("vault %s has URI %s, not %s"):format(vault.name, p.vaultUri, ctx.params.key_vault_uri),
      "pass the vault's key_vault_id or fix key_vault_uri")
  end
  return good { id = vault.id, vaultUri = p.vaultUri }
end

function checks.key(ctx)
  local vault = ctx.outputs.key_vault
  if not usable(vault) then return skipped("the vault is missing or misconfigured") end
  local customer = ctx.context("customer")
  local name = cmk.key_name(ctx)
  local key = cmk.get_or_absent(customer.arm, vault.id .. "/keys/" .. name, { api_version = cmk.API.keys }, "key " .. name, "customer")
  if not key then return broken("key", "customer", "key " .. name .. " does not exist in " .. vault.vaultUri,
    "the customer recovers the deleted key or runs customer-authorize") end
  local p = key.properties or {}
  if p.attributes and p.attributes.enabled == false then
    return broken("key", "customer", "key " .. name .. " is disabled", "the customer re-enables the key (its current version)")
  end
  if not tostring(p.kty):match("^RSA") or (tonumber(p.keySize) or 0) < 2048 then
    return broken("key", "customer", ("key %s is %s %s; Storage needs RSA of at least 2048 bits"):format(name, tostring(p.kty), tostring(p.keySize)),
      "the customer creates an RSA key of 2048, 3072 or 4096 bits")
  end
  return good { id = key.id, name = key.name, keyUriWithVersion = p.keyUriWithVersion }
end

function checks.role_assignment(ctx)
  local sp, key, vault = ctx.outputs.service_principal, ctx.outputs.key, ctx.outputs.key_vault
  if not usable(sp) then return skipped("no service principal") end
  if not usable(vault) then return skipped("no usable vault") end
  local customer = ctx.context("customer")
  local list, err = customer.arm:list(vault.id .. "/providers/Microsoft.Authorization/roleAssignments?$filter="
    .. cmk.escape("principalId eq '" .. sp.id .. "'"), { api_version = cmk.API.roles })
  if list == nil then cmk.raise("role assignments on " .. vault.id .. ": " .. tostring(err) .. " [customer]", 0) end
  local key_id = usable(key) and key.id or (vault.id .. "/keys/" .. cmk.key_name(ctx))
  for _, ra in ipairs(list) do
    local p = ra.properties or {}
    local role = tostring(p.roleDefinitionId):lower():match("([^/]+)$")
    local scope = tostring(p.scope)
    local covers = cmk.same_id(scope, vault.id) or cmk.same_id(scope, key_id) or (vault.id:lower():find(scope:lower() .. "/", 1, true) == 1)
    if covers and (role == cmk.ROLE_ENCRYPTION_USER or role == "14b46e9e-c2b7-41b4-b07b-48a6ebf60603") then
      return good { id = ra.id, scope = scope }
    end
  end
  return broken("role_assignment", "customer", ("the ISV app's service principal %s has no Key Vault Crypto Service Encryption User role on the %s")
    :format(sp.id, ctx.policy.role_scope == "vault" and ("vault " .. vault.id) or ("key " .. key_id)),
    "the customer runs customer-authorize (it assigns the role)")
end

function checks.storage_account(ctx)
  local isv = ctx.context("isv")
  local id = cmk.account_id(ctx)
  local account = cmk.get_or_absent(isv.arm, id, { api_version = cmk.API.storage }, "storage account " .. id, "ISV")
  if not account then return broken("storage_account", "ISV", "storage account " .. id .. " does not exist", "run new-account") end
  local enc = (account.properties or {}).encryption or {}
  local kvp, eid = enc.keyvaultproperties or {}, enc.identity or {}
  local app, vault, identity = ctx.outputs.app, ctx.outputs.key_vault, ctx.outputs.identity
  local function bad(problem) return broken("storage_account", "ISV", "storage account " .. account.name .. ": " .. problem,
    "run existing-account (it points the account's encryption at the customer's key)") end
  if tostring(enc.keySource):lower() ~= "microsoft.keyvault" then return bad("keySource is " .. tostring(enc.keySource) .. ", not Microsoft.Keyvault") end
  if usable(vault) and norm_uri(kvp.keyvaulturi) ~= norm_uri(vault.vaultUri) then
    return bad(("keyvaulturi is %s, not %s"):format(tostring(kvp.keyvaulturi), vault.vaultUri)) end
  if kvp.keyname ~= cmk.key_name(ctx) then return bad(("keyname is %s, not %s"):format(tostring(kvp.keyname), cmk.key_name(ctx))) end
  if usable(app) and tostring(eid.federatedIdentityClientId):lower() ~= app.appId:lower() then
    return bad(("federatedIdentityClientId is %s, not the app id %s"):format(tostring(eid.federatedIdentityClientId), app.appId)) end
  if usable(identity) and not cmk.same_id(eid.userAssignedIdentity, identity.id) then
    return bad(("encryption identity is %s, not %s"):format(tostring(eid.userAssignedIdentity), identity.id)) end
  if not kvp.currentVersionedKeyIdentifier then return bad("no currentVersionedKeyIdentifier (Storage could not reach the key)") end
  return good { id = account.id, currentVersionedKeyIdentifier = kvp.currentVersionedKeyIdentifier }
end

local function check_step(name, title, needs, side)
  return { name = name, title = title, needs = needs, mutates = false, run = function(ctx)
    if side == "customer" and not ctx.has_context("customer") then return skipped("no credentials for the customer tenant") end
    return checks[name](ctx)
  end }
end

local ORDER = { "app", "identity", "federated_credential", "service_principal", "role_assignment", "key", "key_vault", "storage_account" }

local function verdict(ctx)
  local out = { ok = true, checks = {} }
  for _, name in ipairs(ORDER) do
    local c = ctx.outputs[name]
    out.checks[name] = c and (c.ok == true and "ok" or c.ok == false and "broken" or "skipped") or "not run"
    if c and c.ok == false and not out.broken then
      out.ok = false
      out.broken = { link = c.link, tenant = c.tenant, problem = c.problem, fix = c.fix }
    end
  end
  return out
end

return {
  name = "verify",
  description = "Read-only check of the cross-tenant chain from both sides; names the broken link and who fixes it",
  params = cmk.params { "customer", "app_id", "identity_id", "key_vault_uri", "key_vault_id", "key_name",
    "storage_account_id", "storage_account", "resource_group" },
  steps = {
    check_step("app", "ISV: multi-tenant application", {}, "isv"),
    check_step("identity", "ISV: user-assigned identity", {}, "isv"),
    check_step("federated_credential", "ISV: federated credential", { "app", "identity" }, "isv"),
    check_step("service_principal", "customer: service principal", { "app" }, "customer"),
    check_step("key_vault", "customer: key vault", {}, "customer"),
    check_step("key", "customer: key", { "key_vault" }, "customer"),
    check_step("role_assignment", "customer: role for the app", { "service_principal", "key", "key_vault" }, "customer"),
    check_step("storage_account", "ISV: storage account encryption", { "app", "identity", "key_vault", "key" }, "isv"),
    { name = "verdict", title = "verdict", mutates = false,
      needs = { "federated_credential", "role_assignment", "storage_account" },
      run = function(ctx)
        local v = verdict(ctx)
        if not v.ok then
          cmk.raise(("broken link: %s — %s. Fix (%s tenant): %s"):format(v.broken.link, v.broken.problem, v.broken.tenant, v.broken.fix), 0)
        end
        return v
      end },
  },
  outputs_on_failure = true,
  outputs = function(ctx) return verdict(ctx) end,
}
