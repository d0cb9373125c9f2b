/* json.c: JSON <-> Lua over jansson, keeping [] vs {} and null. */
#ifndef CMKFLOW_JSON_H
#define CMKFLOW_JSON_H
#include <stddef.h>
#include <jansson.h>
#include <lua.h>

/* Registry names of the metatables given to decoded objects and arrays. */
#define JSON_OBJECT_MT "cmkflow.json.object"
#define JSON_ARRAY_MT "cmkflow.json.array"
/* Nesting limit for encoding (also catches cycles). */
#define JSON_MAX_DEPTH 200

/* [-0, +0, -] Convert the Lua value at idx to a new jansson reference (caller json_decref's).
 * Tables with JSON_ARRAY_MT encode as arrays, with JSON_OBJECT_MT as objects; plain tables with
 * keys 1..n (n >= 1) as arrays, an empty plain table as {}; the lightuserdata NULL (json.null) as
 * null. On failure returns NULL and writes the problem and its path ("$.a[2]") to err; never
 * raises (except Lua's own memory errors). */
json_t *json_from_lua(lua_State *L, int idx, char *err, size_t errlen);

/* [-0, +1, m] Push v as a Lua value (objects/arrays get the metatables above, null is json.null).
 * v stays owned by the caller. Returns 1. */
int json_to_lua(lua_State *L, json_t *v);


/* [-0, +1, m] A userdata that owns a jansson value and a dumped string while Lua calls that may
 * raise are made (its __gc/__close free them; set a field NULL to keep it). */
struct json_box {
    json_t *value;
    char *text;
};
struct json_box *json_push_box(lua_State *L);

/* [-0, +1|3, m] Push a box holding the Lua value at idx (an absolute index) and its JSON text
 * (json_dumps with flags, reals printed so they read back exactly), or push a box, nil and the
 * reason and return NULL (the caller returns 2). */
struct json_box *json_push_encoded(lua_State *L, int idx, size_t flags);

/* [-0, +1|3, m] Decode text[0..len) and push the value (returns 1), or push a box, nil and
 * "invalid JSON at line L, column C: problem" (returns 2: the caller's results are the top two). */
int json_push_decoded(lua_State *L, const char *text, size_t len);

/* [-0, +0, e] Adds pack and unpack (json_pack.c) to the module table on top of the stack. */
void json_pack_register(lua_State *L);

/* [-0, +0, -] 1 when s[0..len) is well-formed UTF-8 (no overlongs, surrogates or > U+10FFFF). */
int json_utf8_valid(const char *s, size_t len);

#endif
