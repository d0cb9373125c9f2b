return { isv = { tenant = "7f0d6a2e-5b1c-4c8e-9a3d-1e2f3a4b5c6d",
                 credentials = { client_id = "5e6f7a8b-0000-4000-8000-00000000a0d1", client_secret = os.getenv("ISV_SECRET") } } }
