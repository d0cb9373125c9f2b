#!/bin/bash
# The cross-tenant CMK scenario with Debian's az CLI 2.45, one az profile per tenant.
# Run by tools/realclients/run; needs LAYOUT (public: Azure's names through the emulator's proxy;
# single-origin: BASE in a namespace), BASE PORT CA WORK ARM VAULT_SUFFIX KV_RESOURCE AZ_VAULT and the
# ISV_*/CUSTOMER_* variables (TENANT SUB APP SECRET) it exports.
# Prints "PASS az: <step>" per step; on the first failure "FAIL az: <step>: <why>" and exits 1.
set -u

: "${LAYOUT:?} ${BASE:?} ${PORT:?} ${CA:?} ${WORK:?} ${ARM:?} ${VAULT_SUFFIX:?} ${KV_RESOURCE:?} ${AZ_VAULT:?}"
: "${ISV_TENANT:?} ${ISV_SUB:?} ${ISV_APP:?} ${ISV_SECRET:?}"
: "${CUSTOMER_TENANT:?} ${CUSTOMER_SUB:?} ${CUSTOMER_APP:?} ${CUSTOMER_SECRET:?}"

export REQUESTS_CA_BUNDLE="$CA" AZURE_CORE_COLLECT_TELEMETRY=false AZURE_CORE_SURVEY_MESSAGE=false \
       AZURE_CORE_NO_COLOR=true AZURE_CORE_ONLY_SHOW_ERRORS=true
PY=/usr/bin/python3
RG_ISV=rc-az-isv RG_CUST=rc-az-customer LOC=westeurope
APP_NAME=rc-az-cmk-app UAMI=rc-az-uami FIC=rc-az-fic KEY=rc-az-cmk SA=rcazsa
KV_ROLE=e147488a-f6f5-4113-8e2d-b22465e65bf6 # Key Vault Crypto Service Encryption User

fail() { echo "FAIL az: $1: $2"; exit 1; }
pass() { echo "PASS az: $1"; }

# az_in PROFILE STEP ARGS...: runs az in the profile's config dir; its stdout lands in $OUT.
# On failure the step fails with az's last error lines (az's errors carry no secrets).
az_in() {
    local profile=$1 step=$2
    shift 2
    if ! OUT=$(AZURE_CONFIG_DIR="$WORK/az-$profile" timeout 120 az "$@" 2>"$WORK/az.last.err"); then
        fail "$step" "az $1 $2 failed: $(grep -v '^$' "$WORK/az.last.err" | tail -n 3 | tr '\n' ' ')"
    fi
    cat "$WORK/az.last.err" >&2
}

# az_until PROFILE STEP ARGS...: az_in, tried again every 5 s while it fails, for at most
# $AZ_RETRY_S seconds (default 0: once). Against an Azure that propagates (the emulator's
# realistic profile) a script must wait out what it just created (the federated credential's
# subject, the role assignment): az has no wait of its own for these, so it retries.
az_until() {
    local profile=$1 step=$2 deadline=$((SECONDS + ${AZ_RETRY_S:-0}))
    shift 2
    until OUT=$(AZURE_CONFIG_DIR="$WORK/az-$profile" timeout 120 az "$@" 2>"$WORK/az.last.err"); do
        [ "$SECONDS" -lt "$deadline" ] ||
            fail "$step" "az $1 $2 failed: $(grep -v '^$' "$WORK/az.last.err" | tail -n 3 | tr '\n' ' ')"
        sleep 5
    done
    cat "$WORK/az.last.err" >&2
}

# expect STEP WHAT ACTUAL EXPECTED
expect() { [ "$3" = "$4" ] || fail "$1" "$2 is '$3', expected '$4'"; }
# expect_id STEP WHAT ACTUAL EXPECTED: ARM ids compare case-insensitively (MSI answers "resourcegroups")
expect_id() { [ "${3,,}" = "${4,,}" ] || fail "$1" "$2 is '$3', expected '$4'"; }
# nonempty STEP WHAT VALUE
nonempty() { [ -n "$3" ] && [ "$3" != None ] && [ "$3" != null ] || fail "$1" "$2 is empty"; }

# A fresh profile per tenant: no update probe (versionCheck.json); then its cloud: with the proxy,
# az's own AzureCloud unchanged; in the namespace, the single-origin cloud with an ADFS-style
# authority (docs/realclients.md: MSAL skips instance discovery for it). Then a service-principal login.
profile() {
    local name=$1 tenant=$2 app=$3 secret=$4 sub=$5 dir="$WORK/az-$1"
    mkdir -p "$dir"
    printf '{"versions": {"azure-cli": {"local": "2.45.0"}, "core": {"local": "2.45.0"}, "telemetry": {"local": "1.0.8"}}, "update_time": "%s"}' \
        "$(date '+%Y-%m-%d %H:%M:%S.000000')" >"$dir/versionCheck.json"
    if [ "$LAYOUT" = public ]; then
        az_in "$name" "$name cloud" cloud set -n AzureCloud
        az_in "$name" "$name cloud" cloud show --query endpoints.resourceManager -o tsv
        expect "$name cloud" "the cloud's ARM endpoint" "$OUT" "https://management.azure.com/"
    else
        cat >"$WORK/cloud.json" <<EOF
{"endpoints": {"resourceManager": "$BASE/", "management": "$BASE/", "activeDirectory": "$BASE/adfs",
  "activeDirectoryResourceId": "$BASE/", "activeDirectoryGraphResourceId": "$BASE/aadgraph/",
  "microsoftGraphResourceId": "$BASE/graph"},
 "suffixes": {"keyvaultDns": ".vault.localhost:$PORT", "storageEndpoint": "localhost"}}
EOF
        az_in "$name" "$name cloud" cloud register -n CmkflowEmulator --cloud-config "@$WORK/cloud.json"
        az_in "$name" "$name cloud" cloud set -n CmkflowEmulator
    fi
    pass "$name cloud"
    az_in "$name" "$name login" login --service-principal -u "$app" -p "$secret" --tenant "$tenant" -o none
    az_in "$name" "$name login" account show --query "{a:id, b:tenantId}" -o tsv
    expect "$name login" "the account's subscription and tenant" "$OUT" "$sub	$tenant"
    pass "$name login"
}

# ---- ISV tenant: app, identity, federated credential ------------------------------------------------
profile isv "$ISV_TENANT" "$ISV_APP" "$ISV_SECRET" "$ISV_SUB"

az_in isv "isv group create" group create -n "$RG_ISV" -l "$LOC" --query properties.provisioningState -o tsv
expect "isv group create" provisioningState "$OUT" Succeeded
pass "isv group create"

az_in isv "isv app create" ad app create --display-name "$APP_NAME" --sign-in-audience AzureADMultipleOrgs \
    --query "{a:appId, b:id, c:signInAudience}" -o tsv
IFS=$'\t' read -r APP_ID APP_OID APP_AUD <<<"$OUT"
nonempty "isv app create" appId "$APP_ID"
nonempty "isv app create" "the application's object id" "$APP_OID"
expect "isv app create" signInAudience "$APP_AUD" AzureADMultipleOrgs
pass "isv app create"

az_in isv "isv identity create" identity create -n "$UAMI" -g "$RG_ISV" -l "$LOC" --query "{a:id, b:principalId, c:clientId, d:tenantId}" -o tsv
IFS=$'\t' read -r UAMI_ID UAMI_PID UAMI_CID UAMI_TID <<<"$OUT"
expect_id "isv identity create" id "$UAMI_ID" \
    "/subscriptions/$ISV_SUB/resourceGroups/$RG_ISV/providers/Microsoft.ManagedIdentity/userAssignedIdentities/$UAMI"
nonempty "isv identity create" principalId "$UAMI_PID"
nonempty "isv identity create" clientId "$UAMI_CID"
expect "isv identity create" tenantId "$UAMI_TID" "$ISV_TENANT"
pass "isv identity create"

cat >"$WORK/fic.json" <<EOF
{"name": "$FIC", "issuer": "https://login.microsoftonline.com/$ISV_TENANT/v2.0", "subject": "$UAMI_PID",
 "description": "cmkflow real-client check", "audiences": ["api://AzureADTokenExchange"]}
EOF
az_until isv "isv federated-credential create" ad app federated-credential create --id "$APP_ID" \
    --parameters "@$WORK/fic.json" --query "{a:name, b:subject}" -o tsv
expect "isv federated-credential create" "name and subject" "$OUT" "$FIC	$UAMI_PID"
az_in isv "isv federated-credential create" ad app federated-credential list --id "$APP_ID" --query "[].name" -o tsv
expect "isv federated-credential create" "the listed credentials" "$OUT" "$FIC"
pass "isv federated-credential create"

# ---- customer tenant: service principal, vault, key, role assignment --------------------------------
profile customer "$CUSTOMER_TENANT" "$CUSTOMER_APP" "$CUSTOMER_SECRET" "$CUSTOMER_SUB"

az_in customer "customer sp create" ad sp create --id "$APP_ID" --query "{a:id, b:appId}" -o tsv
IFS=$'\t' read -r SP_OID SP_APP <<<"$OUT"
nonempty "customer sp create" "the service principal's object id" "$SP_OID"
expect "customer sp create" appId "$SP_APP" "$APP_ID"
pass "customer sp create"

az_in customer "customer group create" group create -n "$RG_CUST" -l "$LOC" --query properties.provisioningState -o tsv
expect "customer group create" provisioningState "$OUT" Succeeded
pass "customer group create"

az_in customer "customer keyvault create" keyvault create -n "$AZ_VAULT" -g "$RG_CUST" -l "$LOC" \
    --enable-purge-protection --enable-rbac-authorization --retention-days 7 \
    --query "{a:id, b:properties.vaultUri, c:properties.enablePurgeProtection, d:properties.enableRbacAuthorization}" -o tsv
IFS=$'\t' read -r KV_ID VAULT_URI KV_PP KV_RBAC <<<"$OUT"
expect_id "customer keyvault create" id "$KV_ID" \
    "/subscriptions/$CUSTOMER_SUB/resourceGroups/$RG_CUST/providers/Microsoft.KeyVault/vaults/$AZ_VAULT"
expect "customer keyvault create" vaultUri "$VAULT_URI" "https://$AZ_VAULT.$VAULT_SUFFIX/"
expect "customer keyvault create" enablePurgeProtection "$KV_PP" True
expect "customer keyvault create" enableRbacAuthorization "$KV_RBAC" True
pass "customer keyvault create"

# `az keyvault key create` is broken in Debian's package set (docs/realclients.md, "Known deviations"): the data plane via az rest.
az_until customer "customer key create (az rest)" rest --method post --url "${VAULT_URI}keys/$KEY/create?api-version=7.4" \
    --resource "$KV_RESOURCE" --body '{"kty":"RSA","key_size":2048}' --query "{a:key.kid, b:key.kty}" -o tsv
IFS=$'\t' read -r KID KTY <<<"$OUT"
case "$KID" in "${VAULT_URI}keys/$KEY/"?*) ;; *) fail "customer key create (az rest)" "kid '$KID' is not under ${VAULT_URI}keys/$KEY/" ;; esac
expect "customer key create (az rest)" kty "$KTY" RSA
pass "customer key create (az rest)"

# `az role assignment create` is broken likewise (docs/realclients.md): the ARM PUT via az rest.
RA_NAME=$(cat /proc/sys/kernel/random/uuid)
ROLE_DEF="/subscriptions/$CUSTOMER_SUB/providers/Microsoft.Authorization/roleDefinitions/$KV_ROLE"
az_in customer "customer role assignment (az rest)" rest --method put \
    --url "$ARM$KV_ID/providers/Microsoft.Authorization/roleAssignments/$RA_NAME?api-version=2022-04-01" \
    --body "{\"properties\":{\"roleDefinitionId\":\"$ROLE_DEF\",\"principalId\":\"$SP_OID\",\"principalType\":\"ServicePrincipal\"}}" \
    --query "{a:name, b:properties.principalId, c:properties.roleDefinitionId, d:properties.scope}" -o tsv
expect "customer role assignment (az rest)" "name, principalId, roleDefinitionId, scope" "$OUT" \
    "$RA_NAME	$SP_OID	$ROLE_DEF	$KV_ID"
pass "customer role assignment (az rest)"

# ---- ISV tenant: the storage account encrypted with the customer's key ------------------------------
az_until isv "isv storage account create" storage account create -n "$SA" -g "$RG_ISV" -l "$LOC" --sku Standard_LRS \
    --kind StorageV2 --identity-type UserAssigned --user-identity-id "$UAMI_ID" \
    --encryption-key-source Microsoft.Keyvault --encryption-key-vault "$VAULT_URI" --encryption-key-name "$KEY" \
    --key-vault-user-identity-id "$UAMI_ID" --key-vault-federated-client-id "$APP_ID" \
    --query provisioningState -o tsv
expect "isv storage account create" provisioningState "$OUT" Succeeded
pass "isv storage account create"

az_in isv "isv storage account show" storage account show -n "$SA" -g "$RG_ISV" -o json
printf '%s' "$OUT" >"$WORK/az-storage.json"
if ! why=$("$PY" - "$WORK/az-storage.json" "$APP_ID" "$UAMI_ID" "${VAULT_URI}keys/$KEY/" <<'EOF'
import json, sys
acct, app, uami, key_prefix = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3], sys.argv[4]
enc = acct.get("encryption") or {}
kvp, ident = enc.get("keyVaultProperties") or {}, enc.get("encryptionIdentity") or {}
checks = [("encryption.keySource", enc.get("keySource"), "Microsoft.Keyvault"),
          ("encryption.encryptionIdentity.encryptionFederatedIdentityClientId",
           ident.get("encryptionFederatedIdentityClientId"), app),
          ("encryption.encryptionIdentity.encryptionUserAssignedIdentity",
           (ident.get("encryptionUserAssignedIdentity") or "").lower(), uami.lower())]
for what, got, want in checks:
    if got != want:
        print(f"{what} is {got!r}, expected {want!r}")
        sys.exit(1)
cur = kvp.get("currentVersionedKeyIdentifier") or ""
if not cur.startswith(key_prefix) or len(cur) == len(key_prefix):
    print(f"encryption.keyVaultProperties.currentVersionedKeyIdentifier is {cur!r}, expected a version under {key_prefix}")
    sys.exit(1)
EOF
); then
    fail "isv storage account show" "$why"
fi
pass "isv storage account show"
echo "az: all steps passed"
