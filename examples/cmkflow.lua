-- A cmkflow configuration (docs/configuration.md): which cloud, the ISV's and the customer's
-- tenant with a credential for each, and the policy file. Select it with `--config FILE` or
-- CMKFLOW_CONFIG=FILE. Secrets come from the environment, never from this file. The ids below are
-- the emulator demo seed's (lua/cmkflow/emulator/demo_seed.lua): put your tenants' ids there.
--
--   export ISV_SECRET=... CUSTOMER_SECRET=...
--   cmkflow plan onboard --config examples/cmkflow.lua --param customer=contoso
--   cmkflow run  onboard --config examples/cmkflow.lua --param customer=contoso
return {
  -- "azure" (public cloud), "usgov" or "china"; or an emulator:
  --   cloud = { emulator = "https://127.0.0.1:8443", ca_cert = "/path/to/ca.pem" },
  cloud = "azure",

  -- The ISV's tenant (T1): the multi-tenant app, the user-assigned identity and the storage
  -- accounts live here. Needs Graph Application.ReadWrite.All and Owner (or Contributor + Managed
  -- Identity Operator) on the subscription.
  isv = {
    tenant = "7f0d6a2e-5b1c-4c8e-9a3d-1e2f3a4b5c6d",
    subscription = "1a2b3c4d-0000-4000-8000-00000000a001",
    credential = { client_id = "5e6f7a8b-0000-4000-8000-00000000a0d1", client_secret = os.getenv("ISV_SECRET") },
    -- or a certificate:        { client_id = "...", certificate_path = "/etc/cmkflow/isv.pem" }
    -- or workload identity:     { client_id = "...", federated_token_file = os.getenv("AZURE_FEDERATED_TOKEN_FILE") }
    -- or a managed identity:    { identity_client_id = "..." }
    -- or the AZURE_* variables: { kind = "environment" }
  },

  -- The customer's tenant (T2): the ISV app's service principal, the key vault, the key and the
  -- role assignment live here. Needs Graph Application.ReadWrite.All (or Cloud Application
  -- Administrator) and Owner (or Contributor + User Access Administrator) on the subscription.
  -- Leave it out when the customer runs its part itself: `onboard` then stops at the handoff gate.
  customer = {
    tenant = "3c9e1b7d-2a4f-4e6b-8c0d-9f8e7d6c5b4a",
    subscription = "9d8c7b6a-0000-4000-8000-00000000c001",
    credential = { client_id = "2b3c4d5e-0000-4000-8000-00000000c0d1", client_secret = os.getenv("CUSTOMER_SECRET") },
  },

  -- Names, tags, location, key size, role scope, approval gates and hooks (docs/customizing.md);
  -- a relative path is read next to this file.
  policy = "policy.lua",
}
