-- cmkflow.core.json: the jansson binding keeps [] vs {} and null, and refuses what JSON cannot say.
local json = require("cmkflow.core").json

describe("json.decode", function()
  it("keeps empty arrays, empty objects and null apart", function()
    local v = assert(json.decode('{"a":[],"b":{},"c":null}'))
    assert.is_true(json.is_array(v.a))
    assert.is_false(json.is_array(v.b))
    assert.is_true(json.is_object(v.b))
    assert.equals(json.null, v.c)
    assert.equals(json.array_mt, getmetatable(v.a))
    assert.equals(json.object_mt, getmetatable(v))
  end)

  it("round-trips byte for byte with sorted keys", function()
    local text = '{"a":[],"b":{},"c":null}'
    assert.equals(text, json.encode(json.decode(text)))
    local nested = '{"k":[1,2.5,"x",true,false,null,[],{}],"z":{"y":{"x":[{}]}}}'
    assert.equals(nested, json.encode(json.decode(nested)))
  end)

  it("keeps integers as integers and reals as floats", function()
    local v = json.decode('{"i":42,"r":42.0,"big":9007199254740993}')
    assert.equals("integer", math.type(v.i))
    assert.equals("float", math.type(v.r))
    assert.equals(9007199254740993, v.big)
    assert.equals('{"big":9007199254740993,"i":42,"r":42.0}', json.encode(v))
  end)

  it("accepts any top-level value", function()
    assert.equals(12, json.decode("12"))
    assert.equals("s", json.decode('"s"'))
    assert.equals(json.null, json.decode("null"))
    assert.equals(false, json.decode("false"))
  end)

  it("keeps NUL bytes inside strings", function()
    assert.equals("a\0b", json.decode('"a\\u0000b"'))
  end)

  it("reports the line and column of invalid JSON", function()
    local v, err = json.decode('{\n  "a": 1,\n  "b": }')
    assert.is_nil(v)
    assert.matches("line 3, column %d+", err)
    v, err = json.decode("")
    assert.is_nil(v)
    assert.is_string(err)
    v, err = json.decode('{"a":1} trailing')
    assert.is_nil(v)
    assert.matches("line 1", err)
  end)

  it("rejects invalid UTF-8 in the input", function()
    local v, err = json.decode('"\255"')
    assert.is_nil(v)
    assert.matches("0xff", err)
  end)

  it("raises when given something that is not text", function()
    assert.has_error(function() json.decode({}) end)
  end)
end)

describe("json.encode", function()
  it("encodes plain tables: keys 1..n as array, empty as object", function()
    assert.equals("[1,2,3]", json.encode({1, 2, 3}))
    assert.equals("{}", json.encode({}))
    assert.equals('{"a":1,"b":"x"}', json.encode({b = "x", a = 1}))
  end)

  it("honours json.array and json.object even when empty", function()
    assert.equals("[]", json.encode(json.array()))
    assert.equals("{}", json.encode(json.object()))
    assert.equals('{"list":[],"map":{}}', json.encode({list = json.array({}), map = json.object({})}))
    local t = {}
    assert.equals(t, json.array(t))
    assert.is_true(json.is_array(t))
  end)

  it("writes json.null as null, including inside arrays", function()
    assert.equals("[1,null,3]", json.encode({1, json.null, 3}))
    assert.equals('{"x":null}', json.encode({x = json.null}))
    assert.equals("null", json.encode(json.null))
  end)

  it("prints reals so they read back exactly, without noise digits", function()
    assert.equals("[0.1,2.5,1.0]", json.encode({0.1, 2.5, 1.0}))
    assert.equals(1 / 3, json.decode(json.encode(1 / 3)))
  end)

  it("pretty-prints on request", function()
    assert.equals('{\n  "a": [\n    1\n  ]\n}', json.encode({a = {1}}, {pretty = true}))
  end)

  it("refuses sparse arrays", function()
    local s, err = json.encode({1, nil, 3})
    assert.is_nil(s)
    assert.matches("sparse", err)
  end)

  it("refuses tables mixing integer and string keys, naming where", function()
    local s, err = json.encode({outer = {1, 2, x = 3}})
    assert.is_nil(s)
    assert.matches("integer and string keys", err)
    assert.matches("%$%.outer", err)
  end)

  it("refuses invalid UTF-8 and names the path", function()
    local s, err = json.encode({a = {b = {"ok", "\255"}}})
    assert.is_nil(s)
    assert.matches("UTF%-8", err)
    assert.matches("$.a.b[1]", err, 1, true)
  end)

  it("refuses NaN, infinity, functions and cycles", function()
    assert.is_nil(json.encode(0 / 0))
    assert.is_nil(json.encode({x = math.huge}))
    local s, err = json.encode({f = print})
    assert.is_nil(s)
    assert.matches("function", err)
    local t = {}
    t.self = t
    s, err = json.encode(t)
    assert.is_nil(s)
    assert.matches("cycle", err)
  end)

  it("refuses nesting deeper than 200 levels", function()
    local t = {}
    local cur = t
    for _ = 1, 250 do
      local n = {}
      cur[1] = n
      cur = n
    end
    local s, err = json.encode(t)
    assert.is_nil(s)
    assert.matches("200", err)
    -- 150 levels are fine
    local ok = {}
    cur = ok
    for _ = 1, 150 do
      local n = {}
      cur[1] = n
      cur = n
    end
    assert.is_string(json.encode(ok))
  end)

  it("refuses non-string object keys in json.object tables", function()
    local s, err = json.encode(json.object({[1] = "x"}))
    assert.is_nil(s)
    assert.matches("not a string", err)
  end)
end)

describe("json.pack and json.unpack", function()
  local DICT = '{"id":"/subscriptions/x/resourceGroups/rg","properties":{"provisioningState":"Succeeded"}}'

  it("round-trip a value with arrays, objects, null, integers and reals kept apart", function()
    local v = { id = "/subscriptions/x/resourceGroups/rg-1", n = 1.5, i = 3, whole = 2.0, arr = json.array(),
                obj = json.object(), null = json.null, list = { 1, "two", { three = 3 } }, utf8 = "grüße" }
    local packed = assert(json.pack(v, DICT))
    assert.equal(1, packed:byte(1)) -- the format's version byte
    local back = assert(json.unpack(packed, DICT))
    assert.equal(json.encode(v), json.encode(back))
    assert.equal("integer", math.type(back.i))
    assert.equal("float", math.type(back.whole))
    assert.is_true(json.is_array(back.arr))
    assert.is_true(json.is_object(back.obj))
    assert.equal(json.null, back.null)
    assert.equal(json.encode(v), json.unpack(packed, DICT, true)) -- the text, sorted and compact
  end)

  it("packs text the dictionary knows into a fraction of its size", function()
    local v = { id = "/subscriptions/x/resourceGroups/rg", properties = { provisioningState = "Succeeded" } }
    local with, without = assert(json.pack(v, DICT)), assert(json.pack(v, ""))
    assert.is_true(#with < #without / 2, #with .. " vs " .. #without)
    assert.is_true(#with < #json.encode(v) / 4)
  end)

  it("refuses what it cannot encode, and data it did not pack, with another dictionary or damaged", function()
    local nothing, why = json.pack({ f = print }, DICT)
    assert.is_nil(nothing)
    assert.matches("function", why)
    local packed = assert(json.pack({ a = ("x"):rep(5000), b = "/subscriptions/x" }, DICT))
    for _, bad in ipairs { "", "x", '{"a":1}', packed:sub(1, #packed // 2), "\2" .. packed:sub(2) } do
      local v, err = json.unpack(bad, DICT)
      assert.is_nil(v, ("%q"):format(bad:sub(1, 20)))
      assert.is_string(err)
    end
    local v = json.unpack(packed, "another dictionary")
    assert.is_true(v == nil or v.a ~= ("x"):rep(5000)) -- never the packed value
  end)

  -- A raw DEFLATE stream (RFC 1951, fixed Huffman codes) of one literal "a" and then `matches`
  -- copies of 258 bytes at distance 1: a few hundred KB that inflate to 258 x matches bytes.
  local function bomb(matches)
    local out, acc, nbits = {}, 0, 0
    local function bit(b)
      acc = acc | (b << nbits)
      nbits = nbits + 1
      if nbits == 8 then
        out[#out + 1] = string.char(acc)
        acc, nbits = 0, 0
      end
    end
    local function code(v, n) for i = n - 1, 0, -1 do bit((v >> i) & 1) end end -- Huffman codes: MSB first
    bit(1) bit(1) bit(0) -- the last block, fixed codes (BTYPE 01, LSB first)
    code(0x30 + 0x61, 8) -- literal "a"
    for _ = 1, matches do
      code(0xC0 + 5, 8) -- length 258 (symbol 285)
      code(0, 5) -- distance 1
    end
    code(0, 7) -- end of block
    if nbits > 0 then out[#out + 1] = string.char(acc) end
    return "\1" .. table.concat(out)
  end

  it("unpacks a stream it did not make when it is well-formed, and stops at 64 MiB of output", function()
    assert.equal(1 + 258 * 10, #assert(json.unpack(bomb(10), DICT, true)))
    local v, err = json.unpack(bomb(270000), DICT) -- 69.7 MB
    assert.is_nil(v)
    assert.matches("more than", err)
    assert.equal(1 + 258 * 10, #assert(json.unpack(bomb(10), DICT, true))) -- and works after it
  end)

  it("refuses to pack what unpack would refuse, saying why", function()
    local v, err = json.pack(("a"):rep(64 * 1024 * 1024), DICT)
    assert.is_nil(v)
    assert.matches("64 MiB", err)
  end)
end)
