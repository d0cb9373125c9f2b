-- The built-in demo seed: an ISV tenant and a customer tenant, each with a subscription and a
-- deployer principal that may do everything the cross-tenant CMK onboarding needs. The secrets
-- are the emulator's own and well known: never reuse them anywhere else.
return {
  random_seed = 7,
  tenants = {
    {
      id = "7f0d6a2e-5b1c-4c8e-9a3d-1e2f3a4b5c6d", name = "isv", domain = "isv.example",
      subscriptions = { { id = "1a2b3c4d-0000-4000-8000-00000000a001", name = "isv-prod" } },
      principals = { {
        name = "isv-deployer", appId = "5e6f7a8b-0000-4000-8000-00000000a0d1", secret = "emulator-isv-deployer-secret",
        -- Storage Blob Data Reader: verify's key_access check reads a container of the account
        roles = { { role = "Owner", scope = "/subscriptions/1a2b3c4d-0000-4000-8000-00000000a001" },
                  { role = "Storage Blob Data Reader", scope = "/subscriptions/1a2b3c4d-0000-4000-8000-00000000a001" } },
        graph_roles = { "Application.ReadWrite.All" },
      } },
    },
    {
      id = "3c9e1b7d-2a4f-4e6b-8c0d-9f8e7d6c5b4a", name = "customer", domain = "customer.example",
      subscriptions = { { id = "9d8c7b6a-0000-4000-8000-00000000c001", name = "customer-prod" } },
      principals = { {
        name = "customer-admin", appId = "2b3c4d5e-0000-4000-8000-00000000c0d1", secret = "emulator-customer-admin-secret",
        roles = { { role = "Owner", scope = "/subscriptions/9d8c7b6a-0000-4000-8000-00000000c001" },
                  { role = "Key Vault Crypto Officer", scope = "/subscriptions/9d8c7b6a-0000-4000-8000-00000000c001" } },
        graph_roles = { "Application.ReadWrite.All" },
      } },
    },
  },
}
