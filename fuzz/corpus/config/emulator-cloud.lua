return {
  cloud = { emulator = "https://127.0.0.1:8443", ca_cert = "ca.pem" },
  policy = "policy.lua",
  isv = { tenant = "7f0d6a2e-5b1c-4c8e-9a3d-1e2f3a4b5c6d", subscription = "1a2b3c4d-0000-4000-8000-00000000a001",
          location = "westeurope", tags = { team = "platform", cost = { center = 42 } },
          credential = { client_id = "5e6f7a8b-0000-4000-8000-00000000a0d1", client_secret = os.getenv("ISV_SECRET") } },
  customer = { tenant = "3c9e1b7d-2a4f-4e6b-8c0d-9f8e7d6c5b4a", subscription = "9d8c7b6a-0000-4000-8000-00000000c001",
               credential = { client_id = "2b3c4d5e-0000-4000-8000-00000000c0d1", client_secret = os.getenv("CUSTOMER_SECRET") } },
}
