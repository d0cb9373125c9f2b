-- Steps in the ISV tenant: its resource group, the multi-tenant application, the user-assigned
-- identity and the federated credential that lets the identity act as the application
-- (https://learn.microsoft.com/azure/storage/common/customer-managed-keys-configure-cross-tenant-new-account),
-- the handoff to the customer, and offboard's lookups and deletions.
local json = require("cmkflow.core").json
local base = require "cmkflow.workflow.steps.base"

local M = {}

local fail, remote_fail, fact, names = base.fail, base.remote_fail, base.fact, base.names

-- Creates resource group `name` in the subscription of the tenant context `context` ("isv" or
-- "customer"), in the policy's location (ARM Resource Groups - Create Or Update,
-- https://learn.microsoft.com/rest/api/resources/resource-groups/create-or-update); an existing one
-- keeps its tags and gets ours added (Resource Groups - Update). subscription and location, when
-- given, replace the context's subscription and the policy's location; shared: a group every
-- customer uses, whose tag values stay those of its creation (no write per customer).
function M.resource_group(ctx, context, name, subscription, location, shared)
  local tenant = ctx.context(context)
  local path = ("/subscriptions/%s/resourcegroups/%s"):format(subscription or tenant.subscription, name)
  local rg = base.converge(ctx, { arm = tenant.arm, path = path, body = { location = location or ctx.policy.location,
    tags = base.tags(ctx) }, api = base.API.groups, what = "resource group " .. name, party = context,
    type = "resource group", name = name, wanted = shared and { only_missing_tags = true } or nil })
  return rg and { id = rg.id, name = rg.name } or { id = path, name = name }
end

function M.isv_resource_group(ctx)
  return M.resource_group(ctx, "isv", names(ctx).isv_resource_group, nil, nil, base.shared(ctx, "isv_resource_group"))
end

local MULTI_TENANT = { AzureADMultipleOrgs = true, AzureADandPersonalMicrosoftAccount = true }

-- The multi-tenant application, found again by its uniqueName (GET /applications(uniqueName='...'),
-- https://learn.microsoft.com/graph/api/application-get); when absent or different, Graph's upsert
-- PATCH /applications(uniqueName='...') with Prefer: create-if-missing
-- (https://learn.microsoft.com/graph/api/application-upsert). A single-tenant application of that
-- name cannot be installed in the customer tenant: refused. In a plan: the read alone.
function M.app(ctx)
  local isv = ctx.context("isv")
  local n = names(ctx)
  local want = { displayName = n.app, signInAudience = "AzureADMultipleOrgs" }
  local key = "uniqueName='" .. n.app_unique_name .. "'"
  local app = base.get_or_absent(isv.graph, "/applications(" .. key .. ")", nil, "application " .. n.app, "isv")
  local fields = app and base.changed_fields(app, want)
  local action = not app and "create" or (#fields > 0 and "update" or "unchanged")
  base.record(ctx, action, { type = "application", name = n.app, party = "isv", changes = fields })
  if ctx.plan then return app and { appId = app.appId, objectId = app.id, displayName = app.displayName } or {} end
  if action ~= "unchanged" then
    local err
    app, err = isv.graph:find_or_create_application(n.app_unique_name, want)
    if not app then remote_fail("multi-tenant application " .. n.app, err, "isv") end
  end
  if app.signInAudience and not MULTI_TENANT[app.signInAudience] then
    fail { code = "SingleTenantApplication", tenant = "isv",
      message = ("application %s is single-tenant (%s): the customer cannot install it")
        :format(n.app, app.signInAudience),
      hint = "set signInAudience to AzureADMultipleOrgs" }
  end
  return { appId = app.appId, objectId = app.id, displayName = app.displayName }
end

-- The user-assigned identity the storage account presents (Managed Identity - User Assigned
-- Identities - Create Or Update, https://learn.microsoft.com/rest/api/managedidentity/user-assigned-identities).
function M.identity(ctx)
  local isv = ctx.context("isv")
  local path = base.identity_id(ctx)
  local id = base.converge(ctx, { arm = isv.arm, path = path, body = { location = ctx.policy.location,
    tags = base.tags(ctx) }, api = base.API.identities, what = "user-assigned identity " .. names(ctx).identity,
    party = "isv", type = "user-assigned identity", name = names(ctx).identity,
    wanted = base.shared(ctx, "identity") and { only_missing_tags = true } or nil })
  if not id then return { id = path } end
  return { id = id.id, principalId = id.properties.principalId, clientId = id.properties.clientId }
end

-- The issuer and audience a federated credential names for the managed identity tokens of the
-- tenant context `tc` (ctx.context("isv")): both come from its cloud (public, US Government, China:
-- https://learn.microsoft.com/entra/workload-id/workload-identity-federation-config-app-trust-managed-identity).
function M.fic_issuer(tc) return tc.cloud:fic_issuer(tc.tenant) end
function M.fic_audience(tc) return tc.cloud.token_exchange_audience end

-- The federated credential on the application whose subject is the identity's principalId: the
-- identity's token, exchanged, becomes the application's token in the customer tenant (Graph
-- federatedIdentityCredential, https://learn.microsoft.com/graph/api/resources/federatedidentitycredentials-overview).
-- What a federated credential's comparison looks at: issuer, subject, audiences.
local function fic_view(f)
  return { issuer = f.issuer, subject = f.subject,
           audiences = table.concat(type(f.audiences) == "table" and f.audiences or {}, " ") }
end

function M.federated_credential(ctx)
  local isv = ctx.context("isv")
  local n = names(ctx)
  local subject = fact(ctx, "identity", "principalId", "identity_principal_id")
  local object_id = fact(ctx, "app", "objectId")
  local body = { name = n.federated_credential, issuer = M.fic_issuer(isv),
    subject = subject, audiences = json.array { M.fic_audience(isv) },
    description = "cmkflow: lets Azure Storage use the customer's key as this app" }
  -- what the application has already (List federatedIdentityCredentials): the same issuer,
  -- subject and audience need no write
  local existing
  if not base.unknown(object_id) then
    for _, f in ipairs(M.federated_credentials_of(isv, { objectId = object_id, appId = fact(ctx, "app", "appId") })) do
      if f.name == n.federated_credential then existing = f end
    end
  end
  local fields = existing and base.changed_fields(fic_view(existing), fic_view(body))
  local action = not existing and "create" or (#fields > 0 and "update" or "unchanged")
  base.record(ctx, action, { type = "federated credential", name = n.federated_credential, party = "isv",
    changes = fields })
  if ctx.plan or action == "unchanged" then
    return { name = n.federated_credential, issuer = body.issuer, subject = subject }
  end
  -- the subject (the identity's principal) must have replicated to Entra first: wait while Graph
  -- says it does not exist (SubjectNotFound)
  local fic, err = base.until_visible(ctx, "the identity's service principal " .. subject, function()
    return isv.graph:upsert_federated_credential(object_id, n.federated_credential, body)
  end, "isv")
  if not fic then remote_fail("federated credential " .. n.federated_credential, err, "isv") end
  return { name = n.federated_credential, issuer = body.issuer, subject = subject }
end

-- The admin-consent link that installs the ISV application in the customer's tenant (creates its
-- service principal there), on the run's cloud's sign-in authority: the v2 endpoint
-- https://learn.microsoft.com/entra/identity-platform/v2-admin-consent, whose `scope` asks for the
-- application's statically configured permissions (`.default`; this application needs none).
-- Without the customer's tenant the link keeps the placeholder {customer-tenant}.
function M.consent_url(ctx, app_id, customer_tenant)
  -- the cloud of the ISV context (its clients know it), else what the run was configured for
  local ok, isv = pcall(ctx.context, "isv")
  local cloud = ok and type(isv) == "table" and isv.cloud or (ctx.cloud_info and ctx.cloud_info()) or {}
  local authority = (cloud.authority or "https://login.microsoftonline.com"):gsub("/+$", "")
  local graph = (cloud.graph or "https://graph.microsoft.com"):gsub("/+$", "")
  return ("%s/%s/v2.0/adminconsent?client_id=%s&scope=%s/.default"):format(authority,
    customer_tenant or "{customer-tenant}", app_id, graph)
end

-- The roles the customer's administrator needs for their side (admin consent:
-- https://learn.microsoft.com/entra/identity/enterprise-apps/grant-admin-consent; Key Vault roles:
-- https://learn.microsoft.com/azure/key-vault/general/rbac-guide).
M.CUSTOMER_OPERATOR_ROLES = {
  "Cloud Application Administrator or Application Administrator (Microsoft Entra ID): to install the ISV "
    .. "application through the admin-consent link",
  "Contributor on the subscription or resource group: to create the resource group, the key vault and the key",
  "Role Based Access Control Administrator, User Access Administrator or Owner on the key vault: to grant the "
    .. "ISV application the key",
  "Key Vault Crypto Officer on the key vault: later, to rotate or disable the key (revoke)",
}

-- What the customer must create in their tenant for this ISV application (the policy's key size
-- and role scope).
function M.customer_must_create(ctx, app_id)
  return {
    "the ISV application " .. app_id .. " installed in your tenant (its service principal): open the consent link",
    "a key vault with soft delete and purge protection enabled and Azure RBAC authorization",
    ("an RSA key of %d bits (2048, 3072 or 4096) in that vault, for wrapKey and unwrapKey")
      :format(ctx.params.key_size or ctx.policy.key_size),
    ("the role Key Vault Crypto Service Encryption User for the ISV application's service principal at the %s "
      .. "scope"):format(ctx.policy.role_scope == "vault" and "vault" or "key"),
  }
end

-- What the ISV gives the customer (no API call): the ISV tenant, the app id, the admin-consent link
-- for the customer's tenant (customer_tenant when given), what the customer creates and the roles
-- that needs, the commands for the customer, and the ISV's command that continues this run.
-- waits: the run waits at a gate for the customer's values (onboard); else the ISV goes on with
-- new-account (isv-setup). done: the run did the rest itself (a finished onboard): no ISV command.
function M.handoff_details(ctx, waits, done)
  local isv = ctx.context_info("isv")
  local app_id = fact(ctx, "app", "appId", "app_id")
  local tenant = ctx.params.customer_tenant
  -- the cloud of the ISV context (its clients know it), else what the run was configured for
  local ok, isv = pcall(ctx.context, "isv")
  local cloud = ok and type(isv) == "table" and isv.cloud or (ctx.cloud_info and ctx.cloud_info()) or {}
  -- the customer's tool must talk to the ISV's cloud: name it unless it is the public cloud
  local cloud_opt = (cloud.name and cloud.name ~= "azure" and cloud.name ~= "emulator")
    and (" --cloud " .. cloud.name) or ""
  local h = {
    isvTenant = isv.tenant,
    appId = app_id,
    customer = ctx.params.customer,
    consentUrl = M.consent_url(ctx, app_id, tenant),
    customerMustCreate = M.customer_must_create(ctx, app_id),
    customerOperatorRoles = M.CUSTOMER_OPERATOR_ROLES,
    customerCommand = ("cmkflow run customer-authorize --config customer.lua --param customer=%s --param app_id=%s%s")
      :format(ctx.params.customer, app_id, waits and ctx.run_id and (" --param isv_run=" .. ctx.run_id) or "")
      .. cloud_opt,
  }
  if not tenant then
    h.consentUrlNote = "replace {customer-tenant} with the customer's tenant id (GUID) or verified domain "
      .. "(contoso.onmicrosoft.com), or start the run with --param customer_tenant=..."
  end
  local handed = "--param key_vault_uri=<the customer's vault URI> --param key_name=<the customer's key name>"
  if waits and ctx.run_id then
    h.runId = ctx.run_id
    h.isvCommand = ("cmkflow resume %s %s"):format(ctx.run_id, handed)
  elseif not done then
    h.isvCommand = ("cmkflow run new-account%s --param customer=%s --param app_id=%s %s"):format(
      ctx.config_path and (" --config " .. ctx.config_path) or "", ctx.params.customer, app_id, handed)
  end
  return h
end

-- isv-setup's last step: the handoff, with the consent link for customer_tenant when given; logged.
function M.handoff(ctx)
  local h = M.handoff_details(ctx, false)
  ctx.log("handoff for %s: app id %s\n  consent: %s\n  the customer runs: %s",
    ctx.params.customer, h.appId, h.consentUrl, h.customerCommand)
  return h
end

-- ---- lookups (read-only) ------------------------------------------------------------------------

-- smoke: the subscriptions the ISV context sees, one authenticated ARM call with paging
-- (Subscriptions - List, https://learn.microsoft.com/rest/api/resources/subscriptions/list).
function M.list_subscriptions(ctx)
  local isv = ctx.context("isv")
  local subscriptions, err = isv.arm:list("/subscriptions", { api_version = "2022-12-01" })
  if not subscriptions then remote_fail("subscriptions of the ISV context", err, "isv") end
  local names = {}
  for _, s in ipairs(subscriptions) do names[#names + 1] = s.displayName end
  ctx.log("found %d subscription(s) in tenant %s", #subscriptions, isv.tenant)
  return { tenant = isv.tenant, subscriptions = subscriptions,
           summary = ("%d subscription(s): %s"):format(#subscriptions, table.concat(names, ", ")) }
end

-- The ISV application: by app_id (GET /applications(appId='...')) or the policy's uniqueName
-- (GET /applications(uniqueName='...')), https://learn.microsoft.com/graph/api/application-get.
-- Returns app | false (absent).
function M.get_app(ctx)
  local isv = ctx.context("isv")
  local app_id = rawget(ctx.outputs, "app") and ctx.outputs.app.appId or ctx.params.app_id
  local key = app_id and ("appId='" .. app_id .. "'") or ("uniqueName='" .. names(ctx).app_unique_name .. "'")
  return base.get_or_absent(isv.graph, "/applications(" .. key .. ")", nil, "application " .. key, "isv")
end

-- The user-assigned identity for this customer | false (absent).
function M.get_identity(ctx)
  local id = base.identity_id(ctx)
  local arm = ctx.context("isv").arm
  return base.get_or_absent(arm, id, { api_version = base.API.identities }, "identity " .. id, "isv"), id
end

-- The application's federated credentials (Graph List federatedIdentityCredentials,
-- https://learn.microsoft.com/graph/api/application-list-federatedidentitycredentials).
function M.federated_credentials_of(isv, app)
  local list, err = isv.graph:list("/applications/" .. app.objectId .. "/federatedIdentityCredentials")
  if list == nil then remote_fail("federated credentials of " .. app.appId, err, "isv") end
  return list
end

-- offboard: the application, if any.
function M.find_app(ctx)
  local app = M.get_app(ctx)
  return app and { appId = app.appId, objectId = app.id } or { absent = true }
end

-- offboard: the identity, if any.
function M.find_identity(ctx)
  local uami, id = M.get_identity(ctx)
  return uami and { id = uami.id, principalId = uami.properties.principalId } or { id = id, absent = true }
end

-- ---- offboard: deletions (only what the policy gave this customer alone) ------------------------

local SHARED = "shared by every customer"

-- Deletes this customer's federated credentials (by the policy's name, or whose subject is this
-- customer's identity) when the policy gives each customer its own; a shared one stays.
function M.delete_federated_credential(ctx)
  local app, identity = ctx.outputs.app, ctx.outputs.identity
  if not ctx.policy.identity_per_customer then return { deleted = json.array(), kept = SHARED } end
  if app.absent then return { deleted = json.array() } end
  local isv = ctx.context("isv")
  local name = names(ctx).federated_credential
  local deleted = json.array()
  for _, f in ipairs(M.federated_credentials_of(isv, app)) do
    if f.name == name or (not identity.absent and f.subject == identity.principalId) then
      local ok, err = isv.graph:delete("/applications/" .. app.objectId .. "/federatedIdentityCredentials/" .. f.id)
      if not ok then remote_fail("delete federated credential " .. f.name, err, "isv") end
      deleted[#deleted + 1] = f.name
    end
  end
  return { deleted = deleted }
end

function M.plan_delete_federated_credential(ctx)
  if not ctx.policy.identity_per_customer then return "keep the shared federated credential (ISV)" end
  return ("delete federated credential %s (ISV)"):format(names(ctx).federated_credential)
end

-- Deletes this customer's user-assigned identity when the policy gives each customer its own.
function M.delete_identity(ctx)
  local identity = ctx.outputs.identity
  if not ctx.policy.identity_per_customer then return { deleted = false, kept = SHARED } end
  if identity.absent then return { deleted = false } end
  base.delete(ctx.context("isv").arm, identity.id, base.API.identities, "identity " .. identity.id, "isv")
  return { deleted = true, id = identity.id }
end

function M.plan_delete_identity(ctx)
  if not ctx.policy.identity_per_customer then return "keep the shared user-assigned identity (ISV)" end
  return "delete user-assigned identity " .. base.identity_id(ctx) .. " (ISV)"
end

return M
