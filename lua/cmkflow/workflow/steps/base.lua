-- What every step of the step library (lua/cmkflow/workflow/cmk.lua) shares: API versions, the
-- built-in role ids, failures as error tables, the run's facts and names, the propagation wait,
-- and the ARM ids the steps derive from parameters or the policy's names.
local core = require "cmkflow.core"
local json = core.json
local async = require "cmkflow.async"
local errors = require "cmkflow.azure.errors"
local probe_delay_s = require("cmkflow.azure.client").probe_delay_s

local M = {}

-- The api-version of each ARM resource type the steps touch (Azure/azure-rest-api-specs,
-- specification/<provider>/resource-manager/.../stable/<version>).
M.API = { groups = "2021-04-01", identities = "2023-01-31", vaults = "2023-07-01", keys = "2023-07-01",
          roles = "2022-04-01", storage = "2023-01-01" }

-- Built-in Azure roles by id (https://learn.microsoft.com/azure/role-based-access-control/built-in-roles):
-- "Key Vault Crypto Service Encryption User" reads keys and wraps/unwraps with them, all Azure
-- Storage needs of the customer's key; "Key Vault Crypto Officer" manages keys, and also lets its
-- holder wrap and unwrap, so revoke and verify count it as access too.
M.ROLE = {
  crypto_service_encryption_user = "e147488a-f6f5-4113-8e2d-b22465e65bf6",
  crypto_officer = "14b46e9e-c2b7-41b4-b07b-48a6ebf60603",
}
-- The roles that give the ISV application the use of the customer's key.
M.KEY_ACCESS_ROLES = { [M.ROLE.crypto_service_encryption_user] = true, [M.ROLE.crypto_officer] = true }

-- ---- failures --------------------------------------------------------------------------------

-- Raises a failure as an error table: t = {code, message, tenant = "isv" | "customer" (the party
-- that must act; nil when neither), hint}. The engine journals it; no traceback (that stays for bugs).
function M.fail(t) error(errors.new(t), 0) end

-- Which party acts on a remote error when a step cannot tell by itself (a storage account that cannot
-- reach the customer's key): by its code, as docs/workflows.md's table of failures says.
local PARTY_BY_CODE = {
  AADSTS700016 = "customer", AADSTS7000112 = "customer", ForbiddenByRbac = "customer",
  KeyVaultAccessForbidden = "customer", KeyVaultPolicyError = "customer", KeyVaultKeyDisabled = "customer",
  KeyDisabled = "customer", KeyNotFound = "customer", KeyVaultEncryptionKeyNotFound = "customer",
  KeyVaultKeyTypeNotSupported = "customer", PrincipalNotFound = "customer", KeyVaultKeyExpired = "customer",
  KeyVaultKeyNotYetValid = "customer", KeyExpired = "customer", KeyNotYetValid = "customer",
  AADSTS70021 = "isv", AADSTS700211 = "isv", AADSTS700212 = "isv", AADSTS700213 = "isv",
  KeyVaultAccessTokenCannotBeAcquired = "isv",
}
-- A transport failure (no answer: a reset or refused connection, a TLS handshake, a timeout) is no
-- tenant's to fix, whoever the call was for.
local TRANSPORT = { network = true, tls = true, timeout = true }
function M.party_of(err, default)
  if type(err) ~= "table" then return default end
  if TRANSPORT[err.kind] then return nil end
  return PARTY_BY_CODE[err.detail_code] or PARTY_BY_CODE[err.inner_code] or PARTY_BY_CODE[err.code] or default
end

-- Raises the remote failure `err` of the call `what`: its code, status and request id, the hint
-- cmkflow.azure.errors knows for it, and `party`, who must act.
function M.remote_fail(what, err, party, hint)
  local e = type(err) == "table" and err or { message = tostring(err) }
  local transport = TRANSPORT[e.kind] and e.kind or nil -- a local network problem blames no party
  M.fail { code = e.code or "Error", message = ("%s: %s"):format(what, tostring(e.message or e)),
           tenant = not transport and party or nil,
           hint = hint or e.hint or errors.explain(e), status = e.status, request_id = e.request_id,
           retryable = e.retryable, kind = e.kind, target = e.target, detail_code = e.detail_code,
           inner_code = e.inner_code, challenge_tenant = e.challenge_tenant, azure_tenant = e.tenant }
end

-- bulk-onboard's only step: the CLI runs bulk definitions itself (lua/cmkflow/app/bulk.lua).
function M.only_through_cli()
  M.fail { code = "BulkThroughCLI",
    message = "bulk-onboard runs through the cmkflow CLI: cmkflow run bulk-onboard --param file=FILE" }
end

-- ---- the run's facts ---------------------------------------------------------------------------

-- A value an earlier step produced, or the workflow parameter that stands in for it (a workflow
-- that starts half-way: the customer's or the ISV's part alone).
function M.fact(ctx, step, field, param)
  local out = rawget(ctx.outputs, step)
  if out and out[field] ~= nil then return out[field] end
  if param and ctx.params[param] ~= nil then return ctx.params[param] end
  if ctx.plan then return ("<%s.%s>"):format(step, field) end
  M.fail { code = "MissingInput", message = ("step '%s' needs %s.%s (or --param %s)")
    :format(ctx.step or "?", step, field, param or field) }
end

-- Names from the policy, given the run's facts.
function M.names(ctx)
  local isv, customer = ctx.context_info("isv"), ctx.context_info("customer")
  local c = { customer = ctx.params.customer, isv_tenant = isv.tenant or "", customer_tenant = customer.tenant or "",
              identity_per_customer = ctx.policy.identity_per_customer == true }
  local out = {}
  for k, fn in pairs(ctx.policy.names) do out[k] = fn(c) end
  return out, c
end

-- Is the policy's name `key` the same whatever the customer (one object all customers share: the
-- ISV's resource group, the default identity)?
function M.shared(ctx, key)
  local n, c = M.names(ctx)
  local other = {}
  for k, v in pairs(c) do other[k] = v end
  other.customer = tostring(c.customer or "") .. "-other"
  local ok, v = pcall(ctx.policy.names[key], other)
  return ok and v == n[key]
end

-- The policy's tags for this run's customer.
function M.tags(ctx) return ctx.policy.tags({ customer = ctx.params.customer }) end

-- ---- propagation -------------------------------------------------------------------------------

-- Codes that mean "created moments ago, not replicated yet" (Entra ID and Azure RBAC replicate
-- within minutes: https://learn.microsoft.com/azure/role-based-access-control/troubleshooting).
local PROPAGATION = {
  PrincipalNotFound = true, KeyVaultAccessForbidden = true, KeyVaultAuthenticationFailure = true,
  Request_ResourceNotFound = true, ForbiddenByRbac = true, AADSTS70021 = true, AADSTS700016 = true,
  AADSTS700211 = true, AADSTS700213 = true, NoBackingApplicationObject = true, VaultRegisteringDns = true,
  SubjectNotFound = true,
}
local function propagating(err)
  return type(err) == "table" and (PROPAGATION[err.code] or PROPAGATION[err.detail_code] or PROPAGATION[err.inner_code])
end

-- Runs fn() until it succeeds or fails with something other than a propagation delay, probing
-- again after client.probe_delay_s of the time waited (1 s, then a tenth of the wait, at most
-- 30 s: what becomes visible after W s is seen at most max(1, W/10) s late; docs/performance.md)
-- up to the policy's bound (default 600 s). Logs the first wait and then at least every 30 s, so
-- a waiting run says what it waits for. `what` names what is not yet visible, `party` who must
-- act when it never becomes visible. Returns fn's result | nil, err.
function M.until_visible(ctx, what, fn, party)
  local bound = ctx.policy.propagation_timeout_s or 600
  local waited, logged = 0, nil
  while true do
    local res, err = fn()
    if res ~= nil then return res end
    if not propagating(err) then return nil, err end
    if waited >= bound then
      M.fail { code = "PropagationTimeout", tenant = M.party_of(err, party), hint = errors.explain(err),
        message = ("%s is still not visible after %d s of waiting: %s"):format(what, waited, tostring(err)),
        cause_code = err.code, status = err.status, request_id = err.request_id }
    end
    local d = math.min(probe_delay_s(waited), bound - waited)
    if not logged or waited - logged >= 30 then
      ctx.log("  waiting %d s for %s to propagate (%s; waited %d s so far)", d, what, err.code or "not visible yet",
        waited)
      logged = waited
    end
    async.sleep(d * 1000)
    waited = waited + d
  end
end

-- ---- reads ----------------------------------------------------------------------------------------

-- GET that tells "absent" (404) apart: returns doc | false (absent); raises on other failures.
function M.get_or_absent(client, path, opts, what, party)
  local doc, err = client:get(path, opts)
  if doc ~= nil then return doc end
  if err and err.status == 404 then return false end
  M.remote_fail(what, err, party)
end

-- An ARM client on_wait hook that logs each wait of a long-running operation (ctx.log), so a
-- waiting run says what it waits for at least every 30 s.
function M.log_waits(ctx, what)
  return function(_, seconds, state)
    ctx.log("  waiting %d s for %s (%s)", seconds, what, tostring(state or "InProgress"))
  end
end

-- PUT of a whole ARM resource (idempotent), raising on failure. on_wait: see log_waits.
function M.put(arm, path, body, api, what, party, on_wait)
  local res, err = arm:put(path, body, { api_version = api, on_wait = on_wait })
  if res == nil then M.remote_fail(what, err, party) end
  return res
end

-- The tags a resource should carry: its own (anyone's) with ours added; nil when it has ours already.
-- only_missing: add the tags it lacks, keep the values it has (an object every customer shares keeps
-- the tags of the customer that created it, rather than being rewritten by each customer in turn).
local function merged_tags(have, ours, only_missing)
  local out, missing = {}, false
  for k, v in pairs(type(have) == "table" and have or {}) do out[k] = v end
  for k, v in pairs(ours or {}) do
    if out[k] ~= v and not (only_missing and out[k] ~= nil) then out[k], missing = v, true end
  end
  return missing and out or nil
end
M.merged_tags = merged_tags

-- What PATCH (a merge) an existing ARM resource needs to have what this step owns: our tags
-- (theirs kept) and `wanted.properties` whose values differ; nil when it has them all.
function M.ensure_patch(existing, body, wanted)
  local patch, props = {}, nil
  local tags = merged_tags(existing.tags, body.tags, wanted and wanted.only_missing_tags)
  if tags then patch.tags = tags end
  local have = type(existing.properties) == "table" and existing.properties or {}
  for k, v in pairs(wanted and wanted.properties or {}) do
    if have[k] ~= v then props = props or {} props[k] = v end
  end
  if props then patch.properties = props end
  return next(patch) ~= nil and patch or nil
end

-- The current state of an ARM resource and what ensure would do to it, with reads only: existing
-- (false when absent), "create" | "update" | "unchanged", the patch (for "update").
function M.ensure_plan(arm, path, body, api, what, party, wanted)
  local existing = M.get_or_absent(arm, path, { api_version = api }, what, party)
  if not existing then return false, "create" end
  local patch = M.ensure_patch(existing, body, wanted)
  return existing, patch and "update" or "unchanged", patch
end

-- Create-or-keep of an ARM resource that others may change after us. ARM's PUT replaces a
-- resource whole (what the body leaves out is reset:
-- https://github.com/Azure/azure-resource-manager-rpc/blob/master/v1.0/resource-api-reference.md),
-- so a PUT goes out only when the resource is absent; an existing one gets a PATCH (a merge) of
-- just what this step owns and finds missing (ensure_patch). Nothing is sent when it has them all.
-- Returns the resource, what was done ("create" | "update" | "unchanged") and the fields changed.
function M.ensure(arm, path, body, api, what, party, wanted, on_wait)
  local existing, action, patch = M.ensure_plan(arm, path, body, api, what, party, wanted)
  if action == "create" then return M.put(arm, path, body, api, what, party, on_wait), action end
  if action == "unchanged" then return existing, action end
  local res, err = arm:patch(path, patch, { api_version = api, on_wait = on_wait })
  if res == nil then M.remote_fail(what, err, party) end
  return res, action, M.changed_fields(existing, patch)
end

-- ---- change records ---------------------------------------------------------------------------

-- A value a plan does not know yet (the output of a step whose resource does not exist):
-- "<step.field>" (fact, and the engine's placeholders).
function M.unknown(v) return type(v) == "string" and v:match("^<[%w_]+%.[%w_]+>$") ~= nil end

local function is_array(t) return type(t) == "table" and (t[1] ~= nil or getmetatable(t) == json.array_mt) end

-- The leaves of `want` that differ from `have`, for people: [{field = "tags.team", from, to}].
-- Tables are walked (objects only) up to a few levels; an empty object stands for itself.
function M.changed_fields(have, want)
  local out = json.array()
  local function walk(prefix, w, h, depth)
    local keys = {}
    for k in pairs(w) do keys[#keys + 1] = tostring(k) end
    table.sort(keys)
    for _, k in ipairs(keys) do
      local v, old = w[k], type(h) == "table" and h[k] or nil
      local field = prefix == "" and k or (prefix .. "." .. k)
      if type(v) == "table" and not is_array(v) and next(v) ~= nil and depth < 4 then
        walk(field, v, old, depth + 1)
      elseif type(v) == "table" then
        if old == nil then out[#out + 1] = { field = field, to = json.encode(v) } end
      elseif old ~= v then
        out[#out + 1] = { field = field, from = type(old) == "table" and json.encode(old) or old, to = v }
      end
    end
  end
  walk("", want, have, 0)
  return out
end

-- The subscription and resource group an ARM id names (nil for what it does not name).
function M.arm_scope(id)
  if type(id) ~= "string" then return nil end
  local sub = id:match("^/subscriptions/([^/]+)")
  local rg = id:match("^/subscriptions/[^/]+/[Rr]esource[Gg]roups/([^/]+)")
  return sub, rg
end

local PAST = { create = "created", update = "updated", unchanged = "unchanged" }

-- Records what this step did (or, in a plan, would do) to one resource: action "create" |
-- "update" | "unchanged"; r = {type, name, party = "isv" | "customer", id (an ARM id names the
-- subscription and resource group), changes = changed_fields(...), note}. The engine journals the
-- records with the step's outputs and returns them as the run's `changes`
-- (docs/exit-codes.md#json-output).
function M.record(ctx, action, r)
  local list = ctx.changes
  if type(list) ~= "table" then return end
  local info = r.party and ctx.context_info(r.party) or {}
  local id = not M.unknown(r.id) and r.id or nil
  local sub, rg = M.arm_scope(id)
  list[#list + 1] = { action = ctx.plan and action or PAST[action], type = r.type, name = r.name, party = r.party,
    tenant = info.tenant, subscription = sub or r.subscription, resource_group = rg or r.resource_group, id = id,
    changes = r.changes and #r.changes > 0 and r.changes or nil, note = r.note }
end

-- The ARM counterpart of ensure for a step that also plans (ctx.plan: reads only, nothing sent):
-- spec = {arm, path, body, api, what, party, wanted, on_wait, type, name}. Records what was (or
-- would be) done; returns the resource, or in a plan the existing one | false.
function M.converge(ctx, spec)
  local res, action, fields
  if ctx.plan then
    local patch
    res, action, patch = M.ensure_plan(spec.arm, spec.path, spec.body, spec.api, spec.what, spec.party, spec.wanted)
    fields = patch and M.changed_fields(res, patch)
  else
    res, action, fields = M.ensure(spec.arm, spec.path, spec.body, spec.api, spec.what, spec.party, spec.wanted,
      spec.on_wait)
  end
  M.record(ctx, action, { type = spec.type, name = spec.name, party = spec.party, id = spec.path, changes = fields })
  return res
end

-- DELETE of an ARM resource; an absent one (404) counts as deleted.
function M.delete(arm, id, api, what, party)
  local ok, err = arm:delete(id, { api_version = api })
  if not ok and not (err and err.status == 404) then M.remote_fail("delete " .. what, err, party) end
end

function M.same_id(a, b)
  return type(a) == "string" and type(b) == "string" and a:lower():gsub("/+$", "") == b:lower():gsub("/+$", "")
end

-- The version of a key identifier https://NAME.vault.azure.net/keys/KEY/VERSION (nil without one).
function M.key_version_of(kid) return type(kid) == "string" and kid:match("/keys/[^/]+/([^/?]+)") or nil end

-- The role definition id of a role assignment's properties, lower-case GUID.
function M.role_of(assignment)
  return tostring((assignment.properties or {}).roleDefinitionId):lower():match("([^/]+)$")
end

-- ---- ARM ids (a parameter wins; else the policy's names) --------------------------------------------

-- /subscriptions/SUB/resourceGroups/RG/providers/PROVIDER/NAME
local function arm_path(sub, rg, provider, name)
  return ("/subscriptions/%s/resourceGroups/%s/providers/%s/%s"):format(sub, rg, provider, name)
end
M.arm_id = arm_path

-- The ARM id of the ISV's user-assigned identity for this customer.
function M.identity_id(ctx)
  local out = rawget(ctx.outputs, "identity")
  if out and out.id then return out.id end
  if ctx.params.identity_id then return ctx.params.identity_id end
  return arm_path(ctx.context_info("isv").subscription, M.names(ctx).isv_resource_group,
    "Microsoft.ManagedIdentity/userAssignedIdentities", M.names(ctx).identity)
end

-- The ARM id of the customer's storage account: storage_account_id, or storage_account (+
-- resource_group), or the policy's names (in the subscription parameter, else the ISV context's).
function M.account_id(ctx)
  local p = ctx.params
  if p.storage_account_id then return p.storage_account_id end
  local names = M.names(ctx)
  return arm_path(p.subscription or ctx.context_info("isv").subscription,
    p.resource_group or names.storage_account_resource_group,
    "Microsoft.Storage/storageAccounts", p.storage_account or names.storage_account)
end

-- The ARM id of the customer's key vault (key_vault_id or the policy's names).
function M.vault_id(ctx)
  local out = rawget(ctx.outputs, "key_vault")
  if out and out.id then return out.id end
  if ctx.params.key_vault_id then return ctx.params.key_vault_id end
  local names = M.names(ctx)
  return arm_path(ctx.context_info("customer").subscription, names.customer_resource_group,
    "Microsoft.KeyVault/vaults", names.key_vault)
end

function M.key_name(ctx)
  local out = rawget(ctx.outputs, "key")
  if out and out.name then return out.name end
  return ctx.params.key_name or M.names(ctx).key
end

-- A role assignment's name: UUIDv5 of (scope, role, principal), so a rerun PUTs the same one.
function M.role_assignment_name(scope, role, principal)
  return core.crypto.uuid5("6ba7b811-9dad-11d1-80b4-00c04fd430c8", (scope .. "|" .. role .. "|" .. principal):lower())
end

return M
