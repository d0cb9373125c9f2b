-- JSON for workflows and the Lua library: the core's jansson binding, which keeps [] vs {} and
-- null (json.null) through decode and encode.
return require("cmkflow.core").json
