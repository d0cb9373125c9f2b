-- Fuzz harness: the JSON codec (core/json.c) through cmkflow.core.json, as every module uses it.
-- Any text either fails to decode with a message, or decodes to a value that encodes (unless it
-- nests deeper than the encoder's 200 levels), and encoding is a fixed point: decode(encode(v))
-- encodes to the same text, compact or pretty, sorted or not.
local json = require("cmkflow.core").json

local function check(cond, what, ...)
  if not cond then error(what .. ": " .. table.concat({ ... }, " | "), 2) end
end

return function(text)
  local v, err = json.decode(text)
  if v == nil then
    check(type(err) == "string" and err:match("^invalid JSON at line %d+, column %-?%d+: "), "decode failed without a message", tostring(err))
    return
  end
  local e1, eerr = json.encode(v)
  if e1 == nil then
    check(type(eerr) == "string" and eerr:match("^nesting deeper than 200 levels"), "a decoded value does not encode", tostring(eerr))
    return
  end
  local v2, derr = json.decode(e1)
  check(v2 ~= nil, "encoded text does not decode", e1, tostring(derr))
  local e2 = json.encode(v2)
  check(e2 == e1, "encode is not a fixed point", e1, tostring(e2))
  local pretty = json.encode(v, { pretty = true, sort_keys = false })
  check(pretty ~= nil, "pretty encode failed")
  check(json.encode(json.decode(pretty)) == e1, "pretty text decodes to another value", e1, pretty)
end
