-- The customer kit (`cmkflow handoff RUN --out DIR`): a self-contained folder for the customer's
-- administrator, from a waiting onboard run's handoff (cmk.handoff_details): a README in plain
-- language, the admin-consent link, an az CLI script doing the customer's side for people who do not
-- use cmkflow, and a customer.lua template with the customer-authorize command for those who do.
-- Every route ends by printing the ISV's exact continuation command (run id, vault URI, key name).
local base = require "cmkflow.workflow.steps.base"
local core = require "cmkflow.core"

local M = {}

-- az's names of the clouds (az cloud list)
local AZ_CLOUD = { azure = "AzureCloud", emulator = "AzureCloud", usgov = "AzureUSGovernment", china = "AzureChinaCloud" }

local function bullets(items)
  local out = {}
  for _, i in ipairs(items or {}) do out[#out + 1] = "- " .. i end
  return table.concat(out, "\n")
end

-- The values the kit's texts are made of.
local function facts(h, ctx)
  local names = base.names(ctx)
  local cloud = ctx.cloud_info().name or "azure"
  return {
    run_id = h.runId, app_id = h.appId, isv_tenant = h.isvTenant, customer = h.customer,
    consent = h.consentUrl, consent_note = h.consentUrlNote, cloud = cloud, az_cloud = AZ_CLOUD[cloud] or "AzureCloud",
    resource_group = names.customer_resource_group, vault = names.key_vault, key = names.key,
    location = ctx.policy.location, key_size = ctx.params.key_size or ctx.policy.key_size,
    role_scope = ctx.policy.role_scope == "vault" and "vault" or "key",
    retention = ctx.policy.soft_delete_retention_days or 90,
    customer_command = h.customerCommand,
    approve = ("cmkflow approve %s handoff --param key_vault_uri=VAULT_URI --param key_name=KEY_NAME"):format(h.runId),
    -- the role assignment's name, stable for this kit: running the script again PUTs the same one
    assignment = base.role_assignment_name(h.runId or "", base.ROLE.crypto_service_encryption_user, h.appId),
    role = base.ROLE.crypto_service_encryption_user,
  }
end

local function readme(h, f)
  return table.concat({
    ("# Your key for %s's storage: what we ask of you"):format(f.customer),
    "",
    ("Your service provider (Microsoft Entra tenant %s) keeps your data in an Azure storage account in its"):format(
      f.isv_tenant),
    "own tenant. You asked that this data be encrypted with a key that **you** own and control: a key in a",
    "key vault in **your** tenant. Azure Storage then uses your key through your provider's application,",
    "and only as long as you allow it",
    "(https://learn.microsoft.com/azure/storage/common/customer-managed-keys-overview).",
    "",
    "## What you do (about 10 minutes, once)",
    "",
    bullets(h.customerMustCreate),
    "",
    "You need these roles in your tenant for that:",
    "",
    bullets(h.customerOperatorRoles),
    "",
    "### 1. Install the provider's application: open the admin-consent link",
    "",
    "    " .. f.consent,
    f.consent_note and ("\n(" .. f.consent_note .. ")") or "",
    "",
    ("The application id is %s. Consenting creates its service principal (an \"enterprise"):format(f.app_id),
    "application\") in your tenant; it gets no access to anything until step 2 grants it your key.",
    "",
    "### 2. Create the vault and key and grant the application the key: pick one route",
    "",
    "- **Azure CLI** (no cmkflow needed): sign in to your tenant (`az login --tenant YOUR_TENANT`),",
    "  select your subscription (`az account set --subscription ...`) and run `sh customer.sh`.",
    "- **cmkflow**: fill in `customer.lua` (your tenant, subscription and a credential of your own) and run",
    "",
    "      " .. f.customer_command,
    "",
    "Both are safe to run again. Both end by printing the two values to send back and the exact",
    "commands your provider runs with them.",
    "",
    "### 3. Send the two values back",
    "",
    "The vault URI (`https://....vault.azure.net/`) and the key name. Nothing secret: they only say",
    "where your key is. Your provider then finishes with:",
    "",
    "    " .. f.approve,
    "    cmkflow resume " .. f.run_id,
    "",
    "## What will exist in your tenant afterwards",
    "",
    ("- resource group %s with key vault %s (soft delete, purge protection: the key cannot be"):format(
      f.resource_group, f.vault),
    "  destroyed by mistake), and key " .. f.key .. " in it;",
    ("- the provider's application (%s) as an enterprise application;"):format(f.app_id),
    ("- one role assignment: Key Vault Crypto Service Encryption User for that application on the %s."):format(
      f.role_scope),
    "",
    "## How to revoke later",
    "",
    "Delete that role assignment (or disable the key). Azure Storage then can no longer unwrap the",
    "account's data key, and the data becomes unreadable for everyone, your provider included, until",
    "you grant access again. With cmkflow:",
    "",
    ("    cmkflow run revoke --config customer.lua --param customer=%s --param app_id=%s"):format(f.customer, f.app_id),
    "",
    "and `cmkflow run verify --config customer.lua --param customer=" .. f.customer .. " --param app_id=" .. f.app_id
      .. "` shows the state of your side at any time.",
    "",
  }, "\n")
end

-- The customer's steps with the real az CLI, as customer-authorize does them: the service
-- principal (az ad sp create), the resource group, the vault (soft delete, purge protection,
-- RBAC), the key through ARM (Keys - Create If Not Exist, so a rerun makes no second version:
-- https://learn.microsoft.com/rest/api/keyvault/keyvault/keys/create-if-not-exist) and the role
-- (https://learn.microsoft.com/azure/key-vault/general/rbac-guide).
local function az_script(f)
  return table.concat({
    "#!/bin/sh",
    ("# The customer's side of the cross-tenant key for %s, with the Azure CLI. Run it signed in to"):format(f.customer),
    "# your own tenant with your subscription selected. Safe to run again. Override the names with",
    "# RG=... VAULT=... KEY=... LOCATION=... in the environment.",
    "set -eu",
    ("APP_ID=%s"):format(f.app_id),
    ("RG=${RG:-%s}"):format(f.resource_group),
    ("VAULT=${VAULT:-%s}"):format(f.vault),
    ("KEY=${KEY:-%s}"):format(f.key),
    ("LOCATION=${LOCATION:-%s}"):format(f.location),
    ("KEY_SIZE=%d"):format(f.key_size),
    ("ROLE_SCOPE=%s"):format(f.role_scope),
    ("RUN=%s"):format(f.run_id),
    "# the provider's cloud is " .. f.az_cloud .. ": az must be set to it (az cloud set --name " .. f.az_cloud .. ")",
    'CLOUD=$(az cloud show --query name -o tsv)',
    ('[ "$CLOUD" = %s ] || echo "note: az is set to cloud $CLOUD; your provider uses %s" >&2'):format(f.az_cloud,
      f.az_cloud),
    "",
    "# 1. the provider's application in this tenant (what the admin-consent link does)",
    'SP_ID=$(az ad sp show --id "$APP_ID" --query id -o tsv 2>/dev/null || true)',
    'if [ -z "$SP_ID" ]; then SP_ID=$(az ad sp create --id "$APP_ID" --query id -o tsv); fi',
    "",
    "# 2. resource group and key vault: soft delete, purge protection, Azure RBAC",
    'az group create --name "$RG" --location "$LOCATION" -o none',
    'if ! az keyvault show --name "$VAULT" --resource-group "$RG" -o none 2>/dev/null; then',
    '  az keyvault create --name "$VAULT" --resource-group "$RG" --location "$LOCATION" \\',
    ("    --enable-purge-protection true --enable-rbac-authorization true --retention-days %d -o none"):format(
      f.retention),
    "fi",
    'VAULT_ID=$(az keyvault show --name "$VAULT" --resource-group "$RG" --query id -o tsv)',
    'VAULT_URI=$(az keyvault show --name "$VAULT" --resource-group "$RG" --query properties.vaultUri -o tsv)',
    "",
    "# 3. the RSA key, through ARM: created if missing, never a second version",
    'az rest --method put --url "$VAULT_ID/keys/$KEY?api-version=2023-07-01" \\',
    '  --body "{\\"properties\\":{\\"kty\\":\\"RSA\\",\\"keySize\\":$KEY_SIZE,\\"keyOps\\":[\\"wrapKey\\",\\"unwrapKey\\"]}}" -o none',
    "",
    "# 4. Key Vault Crypto Service Encryption User for the application, on the key (or the vault),",
    "# through ARM (Role Assignments - Create; a stable name, so a rerun changes nothing)",
    'SUB=$(az account show --query id -o tsv)',
    'SCOPE="$VAULT_ID/keys/$KEY"',
    'if [ "$ROLE_SCOPE" = vault ]; then SCOPE="$VAULT_ID"; fi',
    ('az rest --method put --url "$SCOPE/providers/Microsoft.Authorization/roleAssignments/%s?api-version=2022-04-01" \\')
      :format(f.assignment),
    ('  --body "{\\"properties\\":{\\"roleDefinitionId\\":\\"/subscriptions/$SUB/providers/Microsoft.Authorization/'
      .. 'roleDefinitions/%s\\",\\"principalId\\":\\"$SP_ID\\",\\"principalType\\":\\"ServicePrincipal\\"}}" -o none')
      :format(f.role),
    "",
    'echo "key_vault_uri: $VAULT_URI"',
    'echo "key_name: $KEY"',
    'echo "hand these two values back to your provider, who runs:"',
    'echo "  cmkflow approve $RUN handoff --param key_vault_uri=$VAULT_URI --param key_name=$KEY"',
    'echo "  cmkflow resume $RUN"',
    "",
  }, "\n")
end

local function config_template(f)
  local cloud = f.cloud == "emulator" and '{ emulator = "https://127.0.0.1:PORT", ca_cert = "PATH/ca.pem" }'
    or ('"' .. f.cloud .. '"')
  return table.concat({
    ("-- cmkflow configuration for your side of %s's onboarding (docs/configuration.md). Only your"):format(f.customer),
    "-- tenant's credential goes here: your provider never sees this file. Fill in the three values.",
    "return {",
    ("  cloud = %s,   -- your provider's cloud"):format(cloud),
    "  customer = {",
    '    tenant = "YOUR-TENANT-ID",',
    '    subscription = "YOUR-SUBSCRIPTION-ID",',
    '    credential = { client_id = "YOUR-APP-ID", client_secret = os.getenv("CUSTOMER_SECRET") },',
    "  },",
    "}",
    "",
  }, "\n")
end

-- Writes the kit into dir (created); returns the list of files written | nil, message.
function M.write(dir, h, ctx)
  local made, merr = core.fs.mkdir_p(dir, tonumber("700", 8))
  if not made then return nil, merr end
  local f = facts(h, ctx)
  local files = {
    { "README.md", readme(h, f) },
    { "consent-link.txt", f.consent .. "\n" .. (f.consent_note and (f.consent_note .. "\n") or "") },
    { "customer.sh", az_script(f) },
    { "customer.lua", config_template(f) },
    { "customer-authorize.txt", f.customer_command .. "\n" },
  }
  local written = {}
  for _, entry in ipairs(files) do
    local path = dir .. "/" .. entry[1]
    -- the az script is executable (it is run as ./customer.sh), created so by C, no chmod
    local ok, err = core.fs.write(path, entry[2], tonumber(entry[1] == "customer.sh" and "755" or "644", 8))
    if not ok then return nil, ("cannot write %s: %s"):format(path, tostring(err)) end
    written[#written + 1] = path
  end
  return written
end

return M
