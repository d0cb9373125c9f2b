-- Steps on the ISV's storage account: a new account encrypted with the customer's key, an
-- existing account switched to it, following a rotated key, and back to Microsoft-managed keys
-- (https://learn.microsoft.com/azure/storage/common/customer-managed-keys-configure-cross-tenant-existing-account;
-- Storage Accounts REST API: https://learn.microsoft.com/rest/api/storagerp/storage-accounts).
local json = require("cmkflow.core").json
local async = require "cmkflow.async"
local base = require "cmkflow.workflow.steps.base"
local isv_steps = require "cmkflow.workflow.steps.isv"

local M = {}

local fail, remote_fail, fact, names = base.fail, base.remote_fail, base.fact, base.names

local GRANT = "the customer's grant to the ISV app (federated credential, service principal or role)"

function M.storage_resource_group(ctx)
  return isv_steps.resource_group(ctx, "isv", ctx.params.resource_group or names(ctx).storage_account_resource_group,
    ctx.params.subscription, ctx.params.location)
end

-- The account's `encryption`: the customer's key (versionless unless key_version pins one), reached
-- as the ISV's identity through the federated application (federatedIdentityClientId).
function M.encryption(ctx)
  return {
    keySource = "Microsoft.Keyvault",
    keyvaultproperties = { keyvaulturi = fact(ctx, "key_vault", "vaultUri", "key_vault_uri"),
                           keyname = fact(ctx, "key", "name", "key_name"),
                           keyversion = ctx.params.key_version or "" },
    identity = { userAssignedIdentity = base.identity_id(ctx),
                 federatedIdentityClientId = fact(ctx, "app", "appId", "app_id") },
    services = { blob = { enabled = true, keyType = "Account" }, file = { enabled = true, keyType = "Account" } },
  }
end

-- The encryption of an account as ARM returns it: encryption, keyvaultproperties, identity.
local function encryption_of(account)
  local enc = (account.properties or {}).encryption or {}
  return enc, enc.keyvaultproperties or {}, enc.identity or {}
end
M.encryption_of = encryption_of

local function uses_key_vault(enc) return tostring(enc.keySource):lower() == "microsoft.keyvault" end

-- Sends send() (a PUT or PATCH of the account) until Storage accepts it: while an earlier attempt's
-- operation still runs (StorageAccountOperationInProgress, a run killed mid-create) every second for
-- at most 60 s, and while the customer's grant propagates (base.until_visible). Returns the account.
-- The customer's vault and key came from the values approved at onboard's handoff gate (this run
-- has no customer credentials): the customer's side was done and checked on their machine before
-- they handed them back, so nothing is left to propagate and a failure is not waited out.
local function handed_over(ctx)
  local h = rawget(ctx.outputs, "handoff")
  return type(h) == "table" and h.key_vault_uri ~= nil and not ctx.has_context("customer")
end

local function send_until_accepted(ctx, what, send, party)
  local function attempt()
    local res, e
    for _ = 1, 60 do
      res, e = send()
      if res ~= nil or not (e and e.code == "StorageAccountOperationInProgress") then return res, e end
      ctx.log("  waiting 1 s for the storage account's earlier operation to finish")
      async.sleep(1000)
    end
    return res, e
  end
  if handed_over(ctx) then
    local account, err = attempt()
    if account then return account end
    local h = ctx.outputs.handoff
    remote_fail(what, err, base.party_of(err, party), ("Storage cannot reach key %s in %s as approved at the "
      .. "handoff: if these are not the values the customer handed back, correct them (cmkflow approve %s handoff "
      .. "--param key_vault_uri=URI --param key_name=NAME) and resume; if they are, the customer's grant is "
      .. "missing: the customer runs customer-authorize again or verify"):format(h.key_name, h.key_vault_uri,
        tostring(ctx.run_id)))
  end
  local account, err = base.until_visible(ctx, GRANT, attempt, party)
  if not account then remote_fail(what, err, base.party_of(err, party), "run verify: it names the broken link") end
  return account
end

-- verify reads this container's blob list to see whether Storage can use the customer's key (a
-- data operation: Azure Storage reports a key it cannot reach on data requests, not through ARM;
-- https://learn.microsoft.com/azure/storage/common/customer-managed-keys-overview#revoke-access-to-a-key-vault-or-key).
-- An empty private container, created by new-account and existing-account when absent
-- (Blob Containers - Create, https://learn.microsoft.com/rest/api/storagerp/blob-containers/create).
M.PROBE_CONTAINER = "cmkflow-verify"

local function ensure_probe_container(ctx, account_id)
  base.converge(ctx, { arm = ctx.context("isv").arm, api = base.API.storage, party = "isv",
    path = account_id .. "/blobServices/default/containers/" .. M.PROBE_CONTAINER,
    body = { properties = { publicAccess = "None" } }, what = "container " .. M.PROBE_CONTAINER .. " of " .. account_id,
    type = "blob container", name = M.PROBE_CONTAINER })
end

-- A new StorageV2 account with the ISV's identity attached and the customer's key (Storage Accounts
-- - Create, https://learn.microsoft.com/rest/api/storagerp/storage-accounts/create). An account that
-- exists already (a re-run) is not sent a PUT, which would replace its tags and settings: it gets a
-- PATCH of what it lacks (identity, encryption, our tags), or nothing.
function M.storage_account(ctx)
  local isv = ctx.context("isv")
  local identity_id = base.identity_id(ctx)
  local path = base.account_id(ctx)
  local existing = M.get_account(ctx, path)
  local changes
  if existing then
    changes = M.account_changes(ctx, existing)
    local tags = base.merged_tags(existing.tags, base.tags(ctx))
    if tags then changes = changes or {} changes.tags = tags end
  end
  local name = path:match("([^/]+)$")
  base.record(ctx, not existing and "create" or (changes and "update" or "unchanged"), { type = "storage account",
    name = name, party = "isv", id = path, changes = changes and base.changed_fields(existing, changes) })
  if ctx.plan then
    if existing then
      ensure_probe_container(ctx, existing.id)
      return { account = existing, id = existing.id, name = existing.name }
    end
    base.record(ctx, "create", { type = "blob container", name = M.PROBE_CONTAINER, party = "isv",
      id = path .. "/blobServices/default/containers/" .. M.PROBE_CONTAINER })
    return { id = path }
  end
  if existing then
    ensure_probe_container(ctx, existing.id)
    if not changes then return { account = existing, id = existing.id, name = existing.name } end
    local account = send_until_accepted(ctx, "storage account " .. name,
      function() return isv.arm:patch(path, changes, { api_version = base.API.storage }) end, "isv")
    return { account = account, id = account.id, name = account.name }
  end
  local body = {
    location = ctx.params.location or ctx.policy.location, kind = "StorageV2", sku = { name = "Standard_LRS" },
    tags = base.tags(ctx),
    identity = { type = "UserAssigned", userAssignedIdentities = { [identity_id] = json.object() } },
    properties = { minimumTlsVersion = "TLS1_2", allowBlobPublicAccess = false, encryption = M.encryption(ctx) },
  }
  local account = send_until_accepted(ctx, "storage account " .. name,
    function() return isv.arm:put(path, body, { api_version = base.API.storage,
      on_wait = base.log_waits(ctx, "storage account " .. name .. " to be created") }) end, "isv")
  ensure_probe_container(ctx, account.id)
  return { account = account, id = account.id, name = account.name }
end

function M.plan_storage_account(ctx)
  local rg, name = base.account_id(ctx)
    :match("/resourceGroups/([^/]+)/providers/Microsoft%.Storage/storageAccounts/([^/]+)$")
  return ("create or update storage account %s in resource group %s encrypted with key %s in %s as app %s (ISV)")
    :format(name, rg, fact(ctx, "key", "name", "key_name"), fact(ctx, "key_vault", "vaultUri", "key_vault_uri"),
            fact(ctx, "app", "appId", "app_id"))
end

-- ---- existing-account -----------------------------------------------------------------------------

-- The account | false (absent) (Storage Accounts - Get Properties,
-- https://learn.microsoft.com/rest/api/storagerp/storage-accounts/get-properties).
function M.get_account(ctx, id)
  local arm = ctx.context("isv").arm
  return base.get_or_absent(arm, id, { api_version = base.API.storage }, "storage account " .. id, "isv")
end

local function must_exist(id, account)
  if account then return account end
  fail { code = "StorageAccountNotFound", tenant = "isv", message = "storage account " .. id .. " does not exist",
    hint = "check --param storage_account_id (or storage_account and resource_group), or create it with new-account" }
end

-- What PATCH makes `account` use the customer's key through this identity and app: the identity
-- attached (a system-assigned identity and other user-assigned ones kept) and the encryption; nil
-- when it already does exactly that.
function M.account_changes(ctx, account)
  local identity_id = base.identity_id(ctx)
  local identity = type(account.identity) == "table" and account.identity or {}
  local uais, has = json.object(), false
  for id in pairs(type(identity.userAssignedIdentities) == "table" and identity.userAssignedIdentities or {}) do
    uais[id] = json.object()
    if base.same_id(id, identity_id) then has = true end
  end
  if not has then uais[identity_id] = json.object() end
  local system = tostring(identity.type or "None"):lower():find("systemassigned", 1, true) ~= nil
  local enc, kvp, eid = encryption_of(account)
  local want = M.encryption(ctx)
  local wkvp = want.keyvaultproperties
  local same = has and uses_key_vault(enc)
    and base.same_id(kvp.keyvaulturi, wkvp.keyvaulturi) and kvp.keyname == wkvp.keyname
    and (kvp.keyversion or "") == (wkvp.keyversion or "")
    and base.same_id(eid.userAssignedIdentity, identity_id)
    and (eid.federatedIdentityClientId or ""):lower() == tostring(want.identity.federatedIdentityClientId):lower()
  if same then return nil end
  want.services = nil -- keyType is create-only; blob and file are always covered
  local kind = system and "SystemAssigned,UserAssigned" or "UserAssigned"
  return { identity = { type = kind, userAssignedIdentities = uais }, properties = { encryption = want } }
end

-- existing-account, read-only: the account as it is and whether it is up to date.
function M.read_account(ctx)
  local id = base.account_id(ctx)
  local account = must_exist(id, M.get_account(ctx, id))
  local enc = encryption_of(account)
  return { id = account.id, keySource = enc.keySource, identityType = account.identity and account.identity.type,
           uptodate = M.account_changes(ctx, account) == nil }
end

-- existing-account: PATCH the account to the customer's key, unless it uses it already (Storage
-- Accounts - Update, https://learn.microsoft.com/rest/api/storagerp/storage-accounts/update).
function M.switch_encryption(ctx)
  local isv = ctx.context("isv")
  local id = ctx.outputs.account.id
  local current = must_exist(id, M.get_account(ctx, id))
  ensure_probe_container(ctx, current.id)
  local changes = M.account_changes(ctx, current)
  if not changes then return { account = current, id = current.id, changed = false } end
  local account = send_until_accepted(ctx, "storage account " .. id,
    function() return isv.arm:patch(id, changes, { api_version = base.API.storage }) end, "isv")
  return { account = account, id = account.id, changed = true }
end

function M.plan_switch_encryption(ctx)
  return ("attach identity %s and PATCH encryption of %s to key %s in %s as app %s (ISV)"):format(base.identity_id(ctx),
    base.account_id(ctx), ctx.params.key_name, ctx.params.key_vault_uri, ctx.params.app_id)
end

-- ---- offboard ---------------------------------------------------------------------------------------

-- offboard: the account back to Microsoft-managed keys (a PATCH with keySource Microsoft.Storage,
-- which needs the customer's key one last time to re-wrap), or with delete_account=true deleted
-- (Storage Accounts - Delete, https://learn.microsoft.com/rest/api/storagerp/storage-accounts/delete).
function M.release_account(ctx)
  local isv = ctx.context("isv")
  local id = base.account_id(ctx)
  local account = M.get_account(ctx, id)
  if not account then return { absent = true } end
  if ctx.params.delete_account then
    base.delete(isv.arm, id, base.API.storage, "storage account " .. id, "isv")
    return { deleted = true }
  end
  local enc = encryption_of(account)
  if not uses_key_vault(enc) then return { keySource = enc.keySource } end
  local res, err = isv.arm:patch(id, { properties = { encryption = { keySource = "Microsoft.Storage",
    services = { blob = { enabled = true }, file = { enabled = true } } } } }, { api_version = base.API.storage })
  if not res then
    -- Storage unwraps the account key with the customer's key one last time; after a revoke (role
    -- gone, key disabled or expired) it cannot: the customer must restore that access first
    local _, kvp = encryption_of(account)
    local party = base.party_of(err, "isv")
    remote_fail(("storage account %s: switching to Microsoft-managed keys"):format(id), err, party,
      party == "customer" and ("the customer must first restore the ISV app's use of key %s in %s (role Key Vault "
        .. "Crypto Service Encryption User, key enabled and unexpired), then offboard again; or pass "
        .. "delete_account=true"):format(tostring(kvp.keyname), tostring(kvp.keyvaulturi))
      or "Storage needs the customer's key once more to re-wrap; offboard before revoke, or pass delete_account=true")
  end
  return { keySource = res.properties.encryption.keySource, reverted = true }
end

function M.plan_release_account(ctx)
  local what = ctx.params.delete_account and "delete storage account %s (ISV)"
    or "switch storage account %s to Microsoft-managed keys if it uses the customer's key (ISV)"
  return what:format(base.account_id(ctx))
end

-- ---- rotate-key -------------------------------------------------------------------------------------

-- rotate-key, read-only: the account's key now; it must use a customer-managed key. The customer
-- alone cannot read the ISV's account: nothing to read.
function M.account_key(ctx)
  if not ctx.has_context("isv") then return { done_by = "isv" } end
  local id = base.account_id(ctx)
  local account = must_exist(id, M.get_account(ctx, id))
  local enc, kvp, eid = encryption_of(account)
  if not uses_key_vault(enc) then
    fail { code = "NotCustomerManaged", tenant = "isv",
      message = "storage account " .. account.name .. " does not use a customer-managed key",
      hint = "run new-account or existing-account first" }
  end
  return { id = account.id, userAssignedIdentity = eid.userAssignedIdentity,
           federatedIdentityClientId = eid.federatedIdentityClientId, keyvaulturi = kvp.keyvaulturi,
           keyname = kvp.keyname, keyversion = kvp.keyversion or "",
           currentVersionedKeyIdentifier = kvp.currentVersionedKeyIdentifier }
end

-- Azure Storage checks a versionless key for a new version once a day and then uses it
-- (https://learn.microsoft.com/azure/storage/common/customer-managed-keys-overview#update-the-key-version).
local PICKUP = "Azure Storage picks up a new version of a versionless key within 24 hours "
  .. "(https://learn.microsoft.com/azure/storage/common/customer-managed-keys-overview#update-the-key-version)"

-- The account's currentVersionedKeyIdentifier, polled every policy.key_pickup_poll_s (default 600 s)
-- until it names `version` or wait_s seconds passed. Returns the account, picked-up?.
local function wait_for_version(ctx, id, version, wait_s)
  local poll = ctx.policy.key_pickup_poll_s or 600
  local waited = 0
  while true do
    local account = must_exist(id, M.get_account(ctx, id))
    local _, kvp = encryption_of(account)
    if base.key_version_of(kvp.currentVersionedKeyIdentifier) == version then return account, true end
    if waited >= wait_s then return account, false end
    local d = math.min(poll, wait_s - waited)
    ctx.log("  waiting %d s for Azure Storage to pick up key version %s (its daily check)", d, version)
    async.sleep(d * 1000)
    waited = waited + d
  end
end

-- rotate-key, the ISV's side: the account uses the new version. A versionless account (keyversion
-- "") follows it by itself within a day: status "pending" until Storage's check ran (wait_s polls
-- for it, within that bound); one pinned to a version (tracking=versioned, or a keyversion already
-- set) is PATCHed to it (status "updated"). The customer alone: the ISV's command to run next.
function M.follow_key_version(ctx)
  local new = ctx.outputs.rotate
  if not ctx.has_context("isv") then
    return { tracking = ctx.params.tracking, status = "isv_next", new_version = new.version,
      isvCommand = ("cmkflow run rotate-key --config isv.lua --param customer=%s --param key_version=%s%s")
        :format(ctx.params.customer, tostring(new.version),
          ctx.params.tracking == "versioned" and " --param tracking=versioned" or "") }
  end
  local isv = ctx.context("isv")
  local before = ctx.outputs.before
  local version = new.version
  local pinned = ctx.params.tracking == "versioned" or (before.keyversion or "") ~= ""
  if not version then
    if pinned then
      fail { code = "MissingInput", tenant = "isv", message = "the account is pinned to a key version and no new "
        .. "version was given", hint = "pass --param key_version=VERSION (what the customer's rotate-key printed)" }
    end
    return { old = before.currentVersionedKeyIdentifier, new = before.currentVersionedKeyIdentifier,
             tracking = "versionless", status = "unknown",
             note = PICKUP .. "; pass --param key_version=VERSION (from the customer's rotate-key) to check for it" }
  end
  if pinned then
    local encryption = { keySource = "Microsoft.Keyvault",
      keyvaultproperties = { keyvaulturi = before.keyvaulturi, keyname = before.keyname, keyversion = version },
      identity = { userAssignedIdentity = before.userAssignedIdentity,
                   federatedIdentityClientId = before.federatedIdentityClientId } }
    send_until_accepted(ctx, "storage account " .. before.id, function()
      return isv.arm:patch(before.id, { properties = { encryption = encryption } }, { api_version = base.API.storage })
    end, "isv")
  end
  local account, picked = wait_for_version(ctx, before.id, version, pinned and 0 or (ctx.params.wait_s or 0))
  local _, kvp = encryption_of(account)
  local current = kvp.currentVersionedKeyIdentifier
  if not picked and (pinned or (ctx.params.wait_s or 0) > 0) then
    fail { code = "KeyVersionNotInUse", tenant = pinned and "isv" or nil,
      message = ("storage account %s still uses %s, not the new version %s"):format(account.name, tostring(current),
        version),
      hint = not pinned and (PICKUP .. ": run again later, or with a larger wait_s") or nil }
  end
  return { old = before.currentVersionedKeyIdentifier, new = current, tracking = pinned and "versioned" or "versionless",
           status = picked and (pinned and "updated" or "current") or "pending",
           note = not picked and (PICKUP .. "; it uses " .. tostring(current) .. " until then") or nil }
end

function M.plan_follow_key_version(ctx)
  if ctx.params.tracking ~= "versioned" then
    return "none: a versionless account follows the new version (ISV, read-only check)"
  end
  return ("PATCH %s keyversion to the new version (ISV)"):format(base.account_id(ctx))
end

return M
