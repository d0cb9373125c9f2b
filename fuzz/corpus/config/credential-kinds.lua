local tenant = "7f0d6a2e-5b1c-4c8e-9a3d-1e2f3a4b5c6d"
return {
  cloud = "usgov",
  isv = { tenant = tenant, credential = { client_id = "5e6f7a8b-0000-4000-8000-00000000a0d1", certificate_path = "isv.pem", certificate_password = os.getenv("ISV_SECRET") } },
  customer = { tenant = "3c9e1b7d-2a4f-4e6b-8c0d-9f8e7d6c5b4a", credential = { identity_client_id = "2b3c4d5e-0000-4000-8000-00000000c0d1", imds_endpoint = "http://169.254.169.254" } },
  default = { credential = { kind = "environment" } },
}
