return { isv = { tenant = "t", client_secret = os.getenv("ISV_SECRET") } }
