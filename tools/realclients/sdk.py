#!/usr/bin/python3
"""The cross-tenant CMK scenario with Debian's Azure SDK for Python (python3-azure), run with
/usr/bin/python3 (not a pyenv shim, which cannot see dist-packages).

Run by tools/realclients/run; needs LAYOUT (public: Azure's own host names through the emulator's
HTTPS proxy, HTTPS_PROXY; single-origin: BASE in a namespace), BASE CA VAULT_SUFFIX PY_VAULT and the
ISV_*/CUSTOMER_* variables (TENANT SUB APP SECRET) it exports. Prints "PASS sdk: <step>" per step;
on the first failure "FAIL sdk: <step>: <why>" and exits 1. Secrets and tokens are never printed.
"""
import os
import sys
import uuid

import requests
from azure.identity import ClientSecretCredential
from azure.keyvault.keys import KeyClient
from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.authorization.v2022_04_01 import models as am
from azure.mgmt.keyvault import KeyVaultManagementClient
from azure.mgmt.keyvault.v2022_07_01 import models as km
from azure.mgmt.msi import ManagedServiceIdentityClient
from azure.mgmt.msi.v2018_11_30 import models as mm
from azure.mgmt.resource import ResourceManagementClient
from azure.mgmt.storage import StorageManagementClient
from azure.mgmt.storage.v2022_09_01 import models as sm

E = os.environ
BASE, CA, VAULT, VAULT_SUFFIX = E["BASE"], E["CA"], E["PY_VAULT"], E["VAULT_SUFFIX"]
PUBLIC = E["LAYOUT"] == "public"
os.environ["REQUESTS_CA_BUNDLE"] = CA  # the caller may carry the system bundle here
if PUBLIC:
    # Azure's own endpoints, every default unchanged: the clients reach them through HTTPS_PROXY
    ARM_SCOPE, GRAPH_RESOURCE, GRAPH = ("https://management.azure.com/.default", "https://graph.microsoft.com",
                                        "https://graph.microsoft.com/v1.0")
    CRED_KW, MGMT_KW = {}, {}
else:
    # The authority is the single origin; instance_discovery=False (1.13.0b2's spelling) keeps MSAL
    # away from login.microsoftonline.com. MSAL then reads {BASE}/{tenant}/v2.0/.well-known/….
    ARM_SCOPE, GRAPH_RESOURCE, GRAPH = BASE + "/.default", BASE + "/graph", BASE + "/graph/v1.0"
    CRED_KW = dict(authority=BASE, instance_discovery=False)
    MGMT_KW = dict(base_url=BASE, credential_scopes=[ARM_SCOPE])
LOC = "westeurope"
RG_ISV, RG_CUST = "rc-py-isv", "rc-py-customer"
APP_NAME, UAMI, FIC, KEY, SA = "rc-py-cmk-app", "rc-py-uami", "rc-py-fic", "rc-py-cmk", "rcpysa"
KV_ROLE_NAME = "Key Vault Crypto Service Encryption User"
KV_ROLE_ID = "e147488a-f6f5-4113-8e2d-b22465e65bf6"


class StepFailed(Exception):
    pass


def check(cond, why):
    if not cond:
        raise StepFailed(why)


def step(name, fn):
    """Runs fn(); prints PASS, or FAIL with the error's first line and exits 1."""
    try:
        result = fn()
    except Exception as e:  # noqa: BLE001 - every failure ends the run with its reason
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"FAIL sdk: {name}: {type(e).__name__}: {msg}", flush=True)
        sys.exit(1)
    print(f"PASS sdk: {name}", flush=True)
    return result


class Tenant:
    def __init__(self, prefix):
        self.name = prefix.lower()
        self.tenant, self.sub = E[prefix + "_TENANT"], E[prefix + "_SUB"]
        self.cred = ClientSecretCredential(self.tenant, E[prefix + "_APP"], E[prefix + "_SECRET"], **CRED_KW)
        kw = MGMT_KW
        self.rm = ResourceManagementClient(self.cred, self.sub, **kw)
        self.msi = ManagedServiceIdentityClient(self.cred, self.sub, **kw)
        self.kv = KeyVaultManagementClient(self.cred, self.sub, **kw)
        self.auth = AuthorizationManagementClient(self.cred, self.sub, **kw)
        self.storage = StorageManagementClient(self.cred, self.sub, **kw)

    def graph(self, method, path, body=None, ok=(200, 201)):
        token = self.cred.get_token(GRAPH_RESOURCE + "/.default").token
        r = requests.request(method, GRAPH + path, json=body, timeout=60,
                             headers={"Authorization": "Bearer " + token, "Accept": "application/json"})
        if r.status_code not in ok:
            try:
                err = r.json()["error"]
                detail = f"{err.get('code')}: {err.get('message')}"
            except Exception:  # noqa: BLE001
                detail = r.text[:200]
            raise StepFailed(f"{method} {path} -> {r.status_code} {detail}")
        return r.json() if r.content else None


def login(t):
    tok = t.cred.get_token(ARM_SCOPE)
    check(tok.token and tok.expires_on > 0, "the token response has no token")
    # The subscription through ARM proves the token is accepted there.
    from azure.mgmt.resource import SubscriptionClient
    subs = [s.subscription_id for s in SubscriptionClient(t.cred, **MGMT_KW).subscriptions.list()]
    check(subs == [t.sub], f"subscriptions of the {t.name} tenant are {subs}, expected [{t.sub}]")


def group_create(t, rg):
    g = t.rm.resource_groups.create_or_update(rg, {"location": LOC})
    check(g.properties.provisioning_state == "Succeeded", f"provisioningState is {g.properties.provisioning_state}")
    check(g.name == rg, f"name is {g.name}")


isv, customer = Tenant("ISV"), Tenant("CUSTOMER")
ctx = {}

# ---- ISV tenant ------------------------------------------------------------------------------------
step("isv login", lambda: login(isv))
step("isv group create", lambda: group_create(isv, RG_ISV))


def app_create():
    app = isv.graph("POST", "/applications", {"displayName": APP_NAME, "signInAudience": "AzureADMultipleOrgs"})
    check(app.get("appId") and app.get("id"), "the application has no appId or id")
    check(app.get("signInAudience") == "AzureADMultipleOrgs", f"signInAudience is {app.get('signInAudience')}")
    found = isv.graph("GET", f"/applications?$filter=appId eq '{app['appId']}'")["value"]
    check([a["id"] for a in found] == [app["id"]], f"$filter=appId found {found}")
    ctx["app_id"], ctx["app_oid"] = app["appId"], app["id"]


step("isv app create (Graph REST)", app_create)


def identity_create():
    u = isv.msi.user_assigned_identities.create_or_update(RG_ISV, UAMI, mm.Identity(location=LOC))
    check(u.principal_id and u.client_id, "the identity has no principalId or clientId")
    check(u.tenant_id == isv.tenant, f"tenantId is {u.tenant_id}")
    check(u.id.lower() == (f"/subscriptions/{isv.sub}/resourceGroups/{RG_ISV}/providers/"
                           f"Microsoft.ManagedIdentity/userAssignedIdentities/{UAMI}").lower(), f"id is {u.id}")
    ctx["uami_id"], ctx["uami_pid"] = u.id, u.principal_id


step("isv identity create", identity_create)


def fic_create():
    body = {"name": FIC, "issuer": f"https://login.microsoftonline.com/{isv.tenant}/v2.0",
            "subject": ctx["uami_pid"], "audiences": ["api://AzureADTokenExchange"]}
    f = isv.graph("POST", f"/applications/{ctx['app_oid']}/federatedIdentityCredentials", body)
    check(f.get("subject") == ctx["uami_pid"] and f.get("name") == FIC, f"the credential reads back {f}")
    listed = isv.graph("GET", f"/applications/{ctx['app_oid']}/federatedIdentityCredentials")["value"]
    check([x["name"] for x in listed] == [FIC], f"listed credentials: {[x.get('name') for x in listed]}")


step("isv federated-credential create (Graph REST)", fic_create)

# ---- customer tenant -------------------------------------------------------------------------------
step("customer login", lambda: login(customer))


def sp_create():
    sp = customer.graph("POST", "/servicePrincipals", {"appId": ctx["app_id"]})
    check(sp.get("appId") == ctx["app_id"] and sp.get("id"), f"the service principal reads back {sp}")
    ctx["sp_oid"] = sp["id"]


step("customer sp create (Graph REST)", sp_create)
step("customer group create", lambda: group_create(customer, RG_CUST))


def vault_create():
    params = km.VaultCreateOrUpdateParameters(location=LOC, properties=km.VaultProperties(
        tenant_id=customer.tenant, sku=km.Sku(family="A", name="standard"), access_policies=[],
        enable_soft_delete=True, soft_delete_retention_in_days=7, enable_purge_protection=True,
        enable_rbac_authorization=True))
    v = customer.kv.vaults.begin_create_or_update(RG_CUST, VAULT, params).result()
    want = f"https://{VAULT}.{VAULT_SUFFIX}/"
    check(v.properties.vault_uri == want, f"vaultUri is {v.properties.vault_uri}, expected {want}")
    check(v.properties.enable_purge_protection is True, "enablePurgeProtection is not true")
    check(v.properties.enable_rbac_authorization is True, "enableRbacAuthorization is not true")
    ctx["vault_id"], ctx["vault_uri"] = v.id, v.properties.vault_uri


step("customer keyvault create", vault_create)


def key_create():
    # Challenge flow: an unauthenticated POST, the 401 naming the vault's tenant and resource, a token
    # for {resource}/.default, the POST again.
    k = KeyClient(vault_url=ctx["vault_uri"], credential=customer.cred).create_rsa_key(KEY, size=2048)
    prefix = f"{ctx['vault_uri']}keys/{KEY}/"
    check(k.id.startswith(prefix) and len(k.id) > len(prefix), f"kid is {k.id}")
    check(str(k.key_type) in ("RSA", "KeyType.rsa"), f"kty is {k.key_type}")
    check(len(k.key.n) == 256, f"the modulus has {len(k.key.n)} bytes, expected 256")


step("customer key create (KeyClient)", key_create)


def role_assign():
    scope = ctx["vault_id"]
    defs = list(customer.auth.role_definitions.list(scope, filter=f"roleName eq '{KV_ROLE_NAME}'"))
    check(len(defs) == 1 and defs[0].name == KV_ROLE_ID,
          f"role definitions named '{KV_ROLE_NAME}': {[d.name for d in defs]}")
    ra = customer.auth.role_assignments.create(scope, str(uuid.uuid4()), am.RoleAssignmentCreateParameters(
        role_definition_id=defs[0].id, principal_id=ctx["sp_oid"], principal_type="ServicePrincipal"))
    check(ra.principal_id == ctx["sp_oid"], f"principalId is {ra.principal_id}")
    check(ra.role_definition_id.lower().endswith(KV_ROLE_ID), f"roleDefinitionId is {ra.role_definition_id}")


step("customer role assignment", role_assign)

# ---- ISV tenant: the storage account ---------------------------------------------------------------


def storage_create():
    params = sm.StorageAccountCreateParameters(
        sku=sm.Sku(name="Standard_LRS"), kind="StorageV2", location=LOC,
        identity=sm.Identity(type="UserAssigned", user_assigned_identities={ctx["uami_id"]: sm.UserAssignedIdentity()}),
        encryption=sm.Encryption(
            key_source="Microsoft.Keyvault",
            key_vault_properties=sm.KeyVaultProperties(key_name=KEY, key_vault_uri=ctx["vault_uri"]),
            encryption_identity=sm.EncryptionIdentity(encryption_user_assigned_identity=ctx["uami_id"],
                                                      encryption_federated_identity_client_id=ctx["app_id"])))
    a = isv.storage.storage_accounts.begin_create(RG_ISV, SA, params).result()
    check(a.provisioning_state == "Succeeded", f"provisioningState is {a.provisioning_state}")


step("isv storage account create", storage_create)


def storage_show():
    a = isv.storage.storage_accounts.get_properties(RG_ISV, SA)
    enc = a.encryption
    check(enc is not None and enc.key_source == "Microsoft.Keyvault", f"keySource is {enc and enc.key_source}")
    ident = enc.encryption_identity
    check(ident is not None and ident.encryption_federated_identity_client_id == ctx["app_id"],
          f"federatedIdentityClientId is {ident and ident.encryption_federated_identity_client_id}")
    cur = (enc.key_vault_properties and enc.key_vault_properties.current_versioned_key_identifier) or ""
    prefix = f"{ctx['vault_uri']}keys/{KEY}/"
    check(cur.startswith(prefix) and len(cur) > len(prefix),
          f"currentVersionedKeyIdentifier is {cur!r}, expected a version under {prefix}")


step("isv storage account show", storage_show)
print("sdk: all steps passed", flush=True)
