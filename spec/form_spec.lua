-- cmkflow.form: application/x-www-form-urlencoded bodies as Entra's token endpoint reads them.
local form = require "cmkflow.form"

describe("form.unescape", function()
  it("turns + into a space and %XX (either case) into its byte", function()
    assert.equals("x+y z", form.unescape("x%2By+z"))
    assert.equals("a/b\0c\255", form.unescape("a%2fb%00c%FF"))
  end)

  it("leaves a % that is not followed by two hex digits as it is", function()
    assert.equals("100% %zz %4", form.unescape("100%+%zz+%4"))
  end)
end)

describe("form.escape", function()
  it("keeps RFC 3986's unreserved characters and encodes every other byte in upper-case hex", function()
    assert.equals("AZaz09-._~", form.escape("AZaz09-._~"))
    assert.equals("a%20b%2Bc%26d%3De%2Ff%25%3F%23", form.escape("a b+c&d=e/f%?#"))
    assert.equals("caf%C3%A9", form.escape("café"))
  end)
end)

describe("form.decode", function()
  it("reads fields, a field without '=' as empty and a value with '=' in it whole", function()
    assert.same({ a = "1", b = "x+y z", c = "" }, form.decode("a=1&b=x%2By+z&c"))
    assert.same({ k = "v=w", e = "" }, form.decode("k=v=w&e="))
  end)

  it("skips empty names and empty pairs; the last of repeated names wins", function()
    assert.same({ a = "2" }, form.decode("&a=1&&=orphan&a=2&"))
    assert.same({}, form.decode(""))
    assert.same({}, form.decode(nil))
  end)

  it("reads an OAuth client-credentials body", function()
    local f = form.decode("grant_type=client_credentials&client_id=0a1b2c3d-0000-4000-8000-000000000001"
                          .. "&scope=https%3A%2F%2Fmanagement.azure.com%2F.default")
    assert.equals("client_credentials", f.grant_type)
    assert.equals("0a1b2c3d-0000-4000-8000-000000000001", f.client_id)
    assert.equals("https://management.azure.com/.default", f.scope)
  end)
end)

describe("form.encode", function()
  it("writes fields in sorted name order, escaped", function()
    assert.equals("a=1&b=x%2By%20z&grant_type=client_credentials",
                  form.encode { grant_type = "client_credentials", b = "x+y z", a = "1" })
    assert.equals("", form.encode {})
  end)

  it("round-trips values with &, =, +, /, %, spaces and UTF-8", function()
    local fields = { client_secret = "s3cr3t~Value.With-Specials&=+/%", ["name with space"] = "Grüße, 東京 ✓",
                     empty = "" }
    local body = form.encode(fields)
    assert.is_nil(body:find("[^%w%-._~%%&=]"))
    assert.same(fields, form.decode(body))
  end)
end)
