-- verify's checks, read-only, one per link of the cross-tenant chain in the order Azure Storage
-- walks it (https://learn.microsoft.com/azure/storage/common/customer-managed-keys-overview): each
-- returns good{...} (ok = true), broken(link, tenant, problem, fix) or unverified(why, who); `verdict`
-- names the first broken link and the tenant that must fix it, and the links nobody checked with
-- the party that can check them. Each party checks what its own credentials can see: the ISV its
-- app, identity, federated credential and the storage account's encryption; the customer the
-- service principal, vault, key and grant. Exit 0 only when every link was checked and holds.
local base = require "cmkflow.workflow.steps.base"
local isv_steps = require "cmkflow.workflow.steps.isv"
local customer_steps = require "cmkflow.workflow.steps.customer"
local storage = require "cmkflow.workflow.steps.storage"

local M = {}

local function good(t) t.ok = true return t end
local function broken(link, tenant, problem, fix)
  return { ok = false, link = link, tenant = tenant, problem = problem, fix = fix }
end
-- not checked: why, and who can check it ("isv" | "customer"; nil: fix the broken link first)
local function unverified(why, who) return { ok = "unverified", why = why, who = who } end
local function usable(out) return out and out.ok == true end

local CHECKS = {}

-- The application exists and is multi-tenant (signInAudience).
function CHECKS.app(ctx)
  local app = isv_steps.get_app(ctx)
  local what = ctx.params.app_id or ("uniqueName=" .. base.names(ctx).app_unique_name)
  if not app then
    return broken("app", "ISV", "application " .. what .. " does not exist",
      "run isv-setup (it creates the multi-tenant application)")
  end
  if app.signInAudience ~= "AzureADMultipleOrgs" and app.signInAudience ~= "AzureADandPersonalMicrosoftAccount" then
    local audience = tostring(app.signInAudience)
    return broken("app", "ISV", ("application %s is single-tenant (%s)"):format(app.appId, audience),
      "set signInAudience to AzureADMultipleOrgs (run isv-setup)")
  end
  return good { appId = app.appId, objectId = app.id }
end

-- The user-assigned identity exists.
function CHECKS.identity(ctx)
  local uami, id = isv_steps.get_identity(ctx)
  if not uami then
    return broken("identity", "ISV", "user-assigned identity " .. id .. " does not exist", "run isv-setup")
  end
  return good { id = uami.id, principalId = uami.properties.principalId, clientId = uami.properties.clientId }
end

local function has_audience(f, audience)
  for _, a in ipairs(f.audiences or {}) do if a == audience then return true end end
  return false
end

-- A federated credential on the application for the identity: subject its principalId, issuer the
-- ISV tenant, audience its cloud's token-exchange audience.
function CHECKS.federated_credential(ctx)
  local app, identity = ctx.outputs.app, ctx.outputs.identity
  if not usable(identity) then return identity end
  if not usable(app) then return unverified("the application is broken") end
  local isv = ctx.context("isv")
  local issuer, audience = isv_steps.fic_issuer(isv), isv_steps.fic_audience(isv)
  local near
  for _, f in ipairs(isv_steps.federated_credentials_of(isv, app)) do
    if f.subject == identity.principalId then
      if f.issuer == issuer and has_audience(f, audience) then
        return good { name = f.name, subject = f.subject, issuer = f.issuer }
      end
      near = f
    end
  end
  if near then
    return broken("federated_credential", "ISV",
      ("federated credential %s does not match: issuer %s (want %s), audiences %s (want %s)"):format(near.name,
        tostring(near.issuer), issuer, table.concat(near.audiences or {}, ","), audience),
      "run isv-setup (it rewrites the federated credential)")
  end
  return broken("federated_credential", "ISV",
    ("no federated credential on application %s for identity %s (subject %s)")
      :format(app.appId, identity.id, identity.principalId), "run isv-setup (it adds the federated credential)")
end

-- The application's service principal exists in the customer tenant and is enabled.
function CHECKS.service_principal(ctx)
  local app = ctx.outputs.app
  local app_id = usable(app) and app.appId or ctx.params.app_id
  if not app_id then return unverified("no application id") end
  local sp = customer_steps.get_service_principal(ctx.context("customer"), app_id)
  if not sp then
    return broken("service_principal", "customer",
      "the ISV application " .. app_id .. " has no service principal in the customer tenant",
      "the customer runs customer-authorize (or grants admin consent) to install the application")
  end
  if sp.accountEnabled == false then
    return broken("service_principal", "customer",
      "the ISV application's service principal " .. sp.id .. " is disabled",
      "the customer re-enables the enterprise application (accountEnabled = true)")
  end
  return good { id = sp.id, appId = sp.appId }
end

local function norm_uri(u) return type(u) == "string" and u:lower():gsub("/+$", "") or u end

-- The vault exists with soft delete and purge protection, at the URI given.
function CHECKS.key_vault(ctx)
  local customer = ctx.context("customer")
  local id = base.vault_id(ctx)
  local vault = base.get_or_absent(customer.arm, id, { api_version = base.API.vaults }, "key vault " .. id, "customer")
  if not vault then
    return broken("key_vault", "customer", "key vault " .. id .. " does not exist",
      "the customer runs customer-authorize")
  end
  local p = vault.properties or {}
  if p.enableSoftDelete == false or p.enablePurgeProtection ~= true then
    return broken("key_vault", "customer", ("key vault %s: soft delete %s, purge protection %s"):format(vault.name,
      tostring(p.enableSoftDelete ~= false), tostring(p.enablePurgeProtection == true)),
      "the customer enables soft delete and purge protection on the vault (irreversible; run customer-authorize)")
  end
  if ctx.params.key_vault_uri and norm_uri(ctx.params.key_vault_uri) ~= norm_uri(p.vaultUri) then
    return broken("key_vault", "customer", ("vault %s has URI %s, not %s"):format(vault.name, p.vaultUri,
      ctx.params.key_vault_uri), "pass the vault's key_vault_id or fix key_vault_uri")
  end
  return good { id = vault.id, vaultUri = p.vaultUri }
end

-- The key exists, is enabled, and is RSA of at least 2048 bits (what Storage accepts).
function CHECKS.key(ctx)
  local vault = ctx.outputs.key_vault
  if not usable(vault) then return unverified("the vault is missing or misconfigured") end
  local name = base.key_name(ctx)
  local key = base.get_or_absent(ctx.context("customer").arm, vault.id .. "/keys/" .. name,
    { api_version = base.API.keys }, "key " .. name, "customer")
  if not key then
    return broken("key", "customer", "key " .. name .. " does not exist in " .. vault.vaultUri,
      "the customer recovers the deleted key or runs customer-authorize")
  end
  local p = key.properties or {}
  if p.attributes and p.attributes.enabled == false then
    return broken("key", "customer", "key " .. name .. " is disabled",
      "the customer re-enables the key (its current version)")
  end
  if not tostring(p.kty):match("^RSA") or (tonumber(p.keySize) or 0) < 2048 then
    return broken("key", "customer", ("key %s is %s %s; Storage needs RSA of at least 2048 bits")
      :format(name, tostring(p.kty), tostring(p.keySize)), "the customer creates an RSA key of 2048, 3072 or 4096 bits")
  end
  return good { id = key.id, name = key.name, keyUriWithVersion = p.keyUriWithVersion }
end

-- A role of base.KEY_ACCESS_ROLES for the service principal at the key, the vault or above.
function CHECKS.role_assignment(ctx)
  local sp, key, vault = ctx.outputs.service_principal, ctx.outputs.key, ctx.outputs.key_vault
  if not usable(sp) then return unverified("no service principal") end
  if not usable(vault) then return unverified("no usable vault") end
  local key_id = usable(key) and key.id or (vault.id .. "/keys/" .. base.key_name(ctx))
  for _, ra in ipairs(customer_steps.role_assignments_of(ctx.context("customer"), vault.id, sp.id) or {}) do
    local scope = tostring((ra.properties or {}).scope)
    local covers = base.same_id(scope, vault.id) or base.same_id(scope, key_id)
      or vault.id:lower():find(scope:lower() .. "/", 1, true) == 1
    if covers and base.KEY_ACCESS_ROLES[base.role_of(ra)] then return good { id = ra.id, scope = scope } end
  end
  local where = ctx.policy.role_scope == "vault" and ("vault " .. vault.id) or ("key " .. key_id)
  return broken("role_assignment", "customer",
    ("the ISV app's service principal %s has no Key Vault Crypto Service Encryption User role on the %s")
      :format(sp.id, where),
    "the customer runs customer-authorize (it assigns the role)")
end

-- The account encrypts with this vault's key, through this identity and application, and Storage
-- reached the key (currentVersionedKeyIdentifier).
function CHECKS.storage_account(ctx)
  local id = base.account_id(ctx)
  local account = storage.get_account(ctx, id)
  if not account then
    return broken("storage_account", "ISV", "storage account " .. id .. " does not exist", "run new-account")
  end
  local enc, kvp, eid = storage.encryption_of(account)
  local app, vault, identity = ctx.outputs.app, ctx.outputs.key_vault, ctx.outputs.identity
  local function bad(problem)
    return broken("storage_account", "ISV", "storage account " .. account.name .. ": " .. problem,
      "run existing-account (it points the account's encryption at the customer's key)")
  end
  if tostring(enc.keySource):lower() ~= "microsoft.keyvault" then
    return bad("keySource is " .. tostring(enc.keySource) .. ", not Microsoft.Keyvault")
  end
  if usable(vault) and norm_uri(kvp.keyvaulturi) ~= norm_uri(vault.vaultUri) then
    return bad(("keyvaulturi is %s, not %s"):format(tostring(kvp.keyvaulturi), vault.vaultUri))
  end
  local key = base.key_name(ctx)
  if kvp.keyname ~= key then return bad(("keyname is %s, not %s"):format(tostring(kvp.keyname), key)) end
  local client_id = tostring(eid.federatedIdentityClientId)
  if usable(app) and client_id:lower() ~= app.appId:lower() then
    return bad(("federatedIdentityClientId is %s, not the app id %s"):format(client_id, app.appId))
  end
  if usable(identity) and not base.same_id(eid.userAssignedIdentity, identity.id) then
    return bad(("encryption identity is %s, not %s"):format(tostring(eid.userAssignedIdentity), identity.id))
  end
  if not kvp.currentVersionedKeyIdentifier then
    return bad("no currentVersionedKeyIdentifier (Storage could not reach the key)")
  end
  return good { id = account.id, currentVersionedKeyIdentifier = kvp.currentVersionedKeyIdentifier }
end

-- Storage can use the key now: a data read that needs it (List Blobs with include=metadata on a
-- container of the account; Azure Storage reports a key it cannot reach on such requests, with
-- KeyVaultEncryptionKeyNotFound, KeyVaultAccessTokenCannotBeAcquired or KeyVaultVaultNotFound,
-- https://learn.microsoft.com/azure/storage/common/customer-managed-keys-overview#revoke-access-to-a-key-vault-or-key),
-- as the principal running verify, which needs Storage Blob Data Reader on the account for it
-- (without it the link is unverified, naming the role). This is how the ISV alone sees a revoke.
local KEY_ERRORS = { KeyVaultEncryptionKeyNotFound = true, KeyVaultAccessTokenCannotBeAcquired = true,
                     KeyVaultVaultNotFound = true }
local BLOB_API = "2021-08-06" -- x-ms-version (OAuth needs 2017-11-09 or later)

local function probe_container(ctx, account)
  local arm = ctx.context("isv").arm
  local list = arm:list(account.id .. "/blobServices/default/containers", { api_version = base.API.storage })
  if not list then return nil end
  local first
  for _, c in ipairs(list) do
    if c.name == storage.PROBE_CONTAINER then return c.name end
    first = first or c.name
  end
  return first
end

function CHECKS.key_access(ctx)
  local acct = ctx.outputs.storage_account
  if not usable(acct) then return unverified("the storage account's encryption is not in place") end
  local isv = ctx.context("isv")
  local account = storage.get_account(ctx, acct.id)
  if not account then return unverified("the storage account is gone") end
  local container = probe_container(ctx, account)
  if not container then
    return unverified(("storage account %s has no blob container to read through (new-account and existing-account "
      .. "create %s)"):format(account.name, storage.PROBE_CONTAINER), "isv")
  end
  local url = ("%s/%s?restype=container&comp=list&include=metadata&maxresults=1")
    :format(isv.cloud:blob_endpoint(account.name), container)
  local resp, err = isv.http:request { method = "GET", url = url, credential = isv.credential,
    scope = "https://storage.azure.com/.default", headers = { ["x-ms-version"] = BLOB_API } }
  if not resp then
    return unverified(("the Blob endpoint of %s did not answer: %s"):format(account.name,
      tostring(err and err.message or err)), "isv")
  end
  local code = resp.headers and resp.headers["x-ms-error-code"]
  if resp.status == 200 then return good { account = account.name, container = container } end
  if resp.status == 403 and KEY_ERRORS[code] then
    return broken("key_access", "customer", ("Azure Storage cannot use the customer's key for %s: %s")
      :format(account.name, code),
      "the customer restores the key, the vault or the ISV app's grant (verify with the customer's config names which)")
  end
  if resp.status == 403 or resp.status == 401 then
    return unverified(("the principal running verify may not read blobs of %s (%s): grant it Storage Blob Data Reader "
      .. "on the account to check that Storage can use the key"):format(account.name, tostring(code or resp.status)),
      "isv")
  end
  return unverified(("reading container %s of %s answered %d %s"):format(container, account.name, resp.status,
    tostring(code or "")), "isv")
end

-- The step running check `name`; a check of the other party's side is unverified without that
-- party's credentials, naming who can check it.
local SIDE = { app = "isv", identity = "isv", federated_credential = "isv", storage_account = "isv", key_access = "isv",
               service_principal = "customer", key_vault = "customer", key = "customer", role_assignment = "customer" }
function M.check(name, title, needs)
  local check = assert(CHECKS[name], name)
  return { name = name, title = title, needs = needs, mutates = false, tenant = SIDE[name], run = function(ctx)
    local side = SIDE[name]
    if side and not ctx.has_context(side) then
      return unverified(("no credentials for the %s tenant here: the %s checks it (cmkflow run verify with the %s's "
        .. "config)"):format(side == "isv" and "ISV" or "customer", side == "isv" and "ISV" or "customer",
        side == "isv" and "ISV" or "customer"), side)
    end
    return check(ctx)
  end }
end

local ORDER = { "app", "identity", "federated_credential", "service_principal", "role_assignment", "key", "key_vault",
                "storage_account", "key_access" }

-- {ok, checks = {link = "ok" | "broken" | "unverified" | "not run"}, links = [{link, side, status}]
-- (the same, in the order Storage walks the chain), broken = {link, tenant, problem, fix},
-- unverified = [{link, who, why}]}; ok only when every link was checked and holds.
function M.verdict(ctx)
  local json = require("cmkflow.core").json
  local out = { ok = true, checks = {}, links = json.array(), unverified = json.array() }
  for _, name in ipairs(ORDER) do
    local c = ctx.outputs[name]
    out.checks[name] = c and (c.ok == true and "ok" or c.ok == false and "broken" or "unverified") or "not run"
    out.links[#out.links + 1] = { link = name, side = SIDE[name], status = out.checks[name] }
    if c and c.ok == false and not out.broken then
      out.broken = { link = c.link, tenant = c.tenant, problem = c.problem, fix = c.fix }
    end
    if not c or (c.ok ~= true and c.ok ~= false) then
      out.unverified[#out.unverified + 1] = { link = name, who = c and c.who, why = c and c.why or "not run" }
    end
  end
  out.ok = out.broken == nil and #out.unverified == 0
  return out
end

-- The verdict step: fails the run (BrokenLink, the tenant that must fix it, exit 1) when a link is
-- broken; else (Unverified, exit 7: docs/exit-codes.md) when a link could not be checked here.
function M.require_whole_chain(ctx)
  local v = M.verdict(ctx)
  if v.broken then
    local b = v.broken
    base.fail { code = "BrokenLink", tenant = b.tenant:lower(), hint = b.fix,
      message = ("broken link: %s — %s. Fix (%s tenant): %s"):format(b.link, b.problem, b.tenant, b.fix) }
  end
  if not v.ok then
    local links, who = {}, nil
    for _, u in ipairs(v.unverified) do
      links[#links + 1] = u.link
      who = who or u.who
    end
    -- nobody must fix anything: the other party must look (who), so no `tenant`
    local party = who == "isv" and "ISV" or who
    base.fail { code = "Unverified", kind = "unverified", who = who,
      message = ("no link is broken among those checked, but %d could not be checked here: %s")
        :format(#links, table.concat(links, ", ")),
      hint = party and ("the %s checks them: cmkflow run verify with the %s's config"):format(party, party) or nil }
  end
  return v
end

return M
