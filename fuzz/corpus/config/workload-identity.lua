return {
  cloud = "china",
  isv = { tenant = "7f0d6a2e-5b1c-4c8e-9a3d-1e2f3a4b5c6d", subscription = 1, enabled = true, ratio = 0.5,
          credential = { kind = "workload_identity", client_id = "5e6f7a8b-0000-4000-8000-00000000a0d1", federated_token_file = "token.jwt" } },
  customer = { tenant = "3c9e1b7d-2a4f-4e6b-8c0d-9f8e7d6c5b4a", credential = { kind = "managed_identity", identity_resource_id = "/subscriptions/x/resourceGroups/y/providers/Microsoft.ManagedIdentity/userAssignedIdentities/z" } },
}
