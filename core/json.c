/* cmkflow.core.json: JSON <-> Lua over jansson.
 *
 * Debian's lua-cjson cannot keep [] apart from {} nor carry null through a round trip, and ARM
 * payloads need all three, so decoded objects and arrays carry a metatable that says what they
 * were and null is a sentinel (the lightuserdata NULL, usable as a table value). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lauxlib.h>
#include "cmk.h"
#include "json.h"

#define JSON_BOX_MT "cmkflow.json.box"

/* ---- UTF-8 ----------------------------------------------------------------------- */

int json_utf8_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    while (p < end) {
        unsigned c = *p++;
        if (c < 0x80)
            continue;
        int more;
        unsigned cp, min;
        if (c >= 0xC2 && c <= 0xDF) {
            more = 1, cp = c & 0x1F, min = 0x80;
        } else if (c >= 0xE0 && c <= 0xEF) {
            more = 2, cp = c & 0x0F, min = 0x800;
        } else if (c >= 0xF0 && c <= 0xF4) {
            more = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return 0;
        }
        if (end - p < more)
            return 0;
        for (int i = 0; i < more; i++) {
            if ((p[i] & 0xC0) != 0x80)
                return 0;
            cp = (cp << 6) | (p[i] & 0x3F);
        }
        p += more;
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
    }
    return 1;
}

/* ---- Lua -> jansson -------------------------------------------------------------- */

struct tojson {
    lua_State *L;
    char *err;
    size_t errlen;
    int depth;
    const void *seen[JSON_MAX_DEPTH + 1]; /* tables on the current path, for cycle detection */
    const char *key[JSON_MAX_DEPTH + 1];  /* path segment: object key, or NULL for an index */
    size_t keylen[JSON_MAX_DEPTH + 1];
    lua_Integer index[JSON_MAX_DEPTH + 1];
};

/* Write "problem at $.a[2]" into the caller's buffer. */
static void tojson_fail(struct tojson *c, const char *problem)
{
    if (!c->err || c->errlen == 0)
        return;
    size_t n = 0;
    int w = snprintf(c->err, c->errlen, "%s at $", problem);
    n = w < 0 ? 0 : (size_t)w;
    for (int i = 0; i < c->depth && n < c->errlen; i++) {
        if (c->key[i]) {
            int klen = c->keylen[i] > 64 ? 64 : (int)c->keylen[i];
            w = snprintf(c->err + n, c->errlen - n, ".%.*s%s", klen, c->key[i],
                         c->keylen[i] > 64 ? "..." : "");
        } else {
            w = snprintf(c->err + n, c->errlen - n, "[%lld]", (long long)c->index[i]);
        }
        if (w < 0)
            break;
        n += (size_t)w;
    }
}

static int has_metatable(lua_State *L, int idx, const char *name)
{
    int is = 0;
    if (lua_getmetatable(L, idx)) {
        luaL_getmetatable(L, name);
        is = lua_rawequal(L, -1, -2);
        lua_pop(L, 2);
    }
    return is;
}

static json_t *tojson_value(struct tojson *c, int idx);

/* Keys 1..n exactly -> array. kind: 0 plain, 1 array_mt, 2 object_mt. */
static json_t *tojson_table(struct tojson *c, int idx)
{
    lua_State *L = c->L;
    int kind = has_metatable(L, idx, JSON_ARRAY_MT) ? 1 : has_metatable(L, idx, JSON_OBJECT_MT) ? 2 : 0;

    /* Classify the keys. */
    lua_Integer count = 0, max = 0;
    int strings = 0, others = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        count++;
        if (lua_type(L, -1) == LUA_TSTRING) {
            strings++;
        } else if (lua_isinteger(L, -1) && lua_tointeger(L, -1) >= 1) {
            lua_Integer k = lua_tointeger(L, -1);
            if (k > max)
                max = k;
        } else {
            others++;
        }
    }
    lua_Integer ints = count - strings - others;
    int as_array;
    if (kind == 1) {
        if (strings || others) {
            tojson_fail(c, "array (json.array) has a non-integer key");
            return NULL;
        }
        as_array = 1;
    } else if (kind == 2) {
        as_array = 0;
    } else {
        as_array = count > 0 && ints == count;
    }
    if (!as_array && !kind && ints > 0 && strings > 0) {
        tojson_fail(c, "cannot encode a table with both integer and string keys");
        return NULL;
    }
    if (others || (!as_array && ints > 0)) {
        tojson_fail(c, "cannot encode an object key that is not a string");
        return NULL;
    }
    if (as_array && max != count) {
        tojson_fail(c, "cannot encode a sparse array (holes between 1 and the largest index)");
        return NULL;
    }

    if (c->depth >= JSON_MAX_DEPTH) {
        tojson_fail(c, "nesting deeper than 200 levels");
        return NULL;
    }
    const void *self = lua_topointer(L, idx);
    for (int i = 0; i < c->depth; i++) {
        if (c->seen[i] == self) {
            tojson_fail(c, "cannot encode a table that contains itself (cycle)");
            return NULL;
        }
    }
    if (!lua_checkstack(L, 4)) {
        tojson_fail(c, "Lua stack exhausted");
        return NULL;
    }
    int d = c->depth++;
    c->seen[d] = self;

    json_t *out = as_array ? json_array() : json_object();
    if (!out) {
        c->depth--;
        tojson_fail(c, "out of memory");
        return NULL;
    }
    if (as_array) {
        for (lua_Integer i = 1; i <= count; i++) {
            c->key[d] = NULL;
            c->index[d] = i - 1;
            lua_rawgeti(L, idx, i);
            json_t *v = tojson_value(c, lua_gettop(L));
            lua_pop(L, 1);
            if (!v || json_array_append_new(out, v) != 0) {
                if (v == NULL)
                    goto fail;
                tojson_fail(c, "out of memory");
                goto fail;
            }
        }
    } else {
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            size_t klen;
            const char *k = lua_tolstring(L, -2, &klen); /* a string already: no conversion */
            c->key[d] = k;
            c->keylen[d] = klen;
            if (!json_utf8_valid(k, klen)) {
                c->depth--; /* report the path of the object holding the key */
                tojson_fail(c, "object key is not valid UTF-8");
                c->depth++;
                lua_pop(L, 2);
                goto fail;
            }
            json_t *v = tojson_value(c, lua_gettop(L));
            lua_pop(L, 1);
            if (!v) {
                lua_pop(L, 1);
                goto fail;
            }
            if (json_object_setn_new_nocheck(out, k, klen, v) != 0) {
                lua_pop(L, 1);
                tojson_fail(c, "out of memory");
                goto fail;
            }
        }
    }
    c->depth--;
    return out;
fail:
    c->depth--;
    json_decref(out);
    return NULL;
}

static json_t *tojson_value(struct tojson *c, int idx)
{
    lua_State *L = c->L;
    json_t *v = NULL;
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        v = json_null();
        break;
    case LUA_TBOOLEAN:
        v = json_boolean(lua_toboolean(L, idx));
        break;
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) {
            v = json_integer((json_int_t)lua_tointeger(L, idx));
        } else {
            lua_Number n = lua_tonumber(L, idx);
            if (!isfinite(n)) {
                tojson_fail(c, "cannot encode NaN or infinity");
                return NULL;
            }
            v = json_real((double)n);
        }
        break;
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        if (!json_utf8_valid(s, len)) {
            tojson_fail(c, "string is not valid UTF-8");
            return NULL;
        }
        v = json_stringn_nocheck(s, len);
        break;
    }
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == NULL) {
            v = json_null();
            break;
        }
        tojson_fail(c, "cannot encode a light userdata");
        return NULL;
    case LUA_TTABLE:
        return tojson_table(c, idx);
    default: {
        char what[64];
        snprintf(what, sizeof what, "cannot encode a %s", luaL_typename(L, idx));
        tojson_fail(c, what);
        return NULL;
    }
    }
    if (!v)
        tojson_fail(c, "out of memory");
    return v;
}

json_t *json_from_lua(lua_State *L, int idx, char *err, size_t errlen)
{
    struct tojson *c = calloc(1, sizeof *c);
    if (!c) {
        if (err && errlen)
            snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->L = L;
    c->err = err;
    c->errlen = errlen;
    if (err && errlen)
        err[0] = 0;
    json_t *v = tojson_value(c, lua_absindex(L, idx));
    free(c);
    return v;
}

/* ---- jansson -> Lua -------------------------------------------------------------- */

static void push_mt(lua_State *L, const char *name)
{
    if (luaL_newmetatable(L, name)) {
        lua_pushstring(L, name);
        lua_setfield(L, -2, "__name");
    }
}

int json_to_lua(lua_State *L, json_t *v)
{
    luaL_checkstack(L, 4, "JSON nesting too deep");
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        const char *k;
        size_t klen;
        json_t *item;
        lua_createtable(L, 0, (int)json_object_size(v));
        json_object_keylen_foreach(v, k, klen, item) {
            lua_pushlstring(L, k, klen);
            json_to_lua(L, item);
            lua_rawset(L, -3);
        }
        push_mt(L, JSON_OBJECT_MT);
        lua_setmetatable(L, -2);
        break;
    }
    case JSON_ARRAY: {
        size_t n = json_array_size(v);
        lua_createtable(L, n > INT32_MAX ? 0 : (int)n, 0);
        for (size_t i = 0; i < n; i++) {
            json_to_lua(L, json_array_get(v, i));
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        push_mt(L, JSON_ARRAY_MT);
        lua_setmetatable(L, -2);
        break;
    }
    case JSON_STRING:
        lua_pushlstring(L, json_string_value(v), json_string_length(v));
        break;
    case JSON_INTEGER:
        lua_pushinteger(L, (lua_Integer)json_integer_value(v));
        break;
    case JSON_REAL:
        lua_pushnumber(L, (lua_Number)json_real_value(v));
        break;
    case JSON_TRUE:
        lua_pushboolean(L, 1);
        break;
    case JSON_FALSE:
        lua_pushboolean(L, 0);
        break;
    case JSON_NULL:
    default:
        lua_pushlightuserdata(L, NULL);
        break;
    }
    return 1;
}

/* ---- the Lua module -------------------------------------------------------------- */

/* [-0, +0, -] __gc / __close of a box */
static int box_gc(lua_State *L)
{
    struct json_box *b = luaL_checkudata(L, 1, JSON_BOX_MT);
    json_decref(b->value);
    b->value = NULL;
    free(b->text);
    b->text = NULL;
    return 0;
}

struct json_box *json_push_box(lua_State *L)
{
    struct json_box *b = lua_newuserdatauv(L, sizeof *b, 0);
    memset(b, 0, sizeof *b);
    if (luaL_newmetatable(L, JSON_BOX_MT)) {
        lua_pushcfunction(L, box_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, box_gc);
        lua_setfield(L, -2, "__close");
    }
    lua_setmetatable(L, -2);
    return b;
}

int json_push_decoded(lua_State *L, const char *text, size_t len)
{
    struct json_box *b = json_push_box(L);
    json_error_t e;
    b->value = json_loadb(text, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
    if (!b->value) {
        lua_pushnil(L);
        lua_pushfstring(L, "invalid JSON at line %d, column %d: %s", e.line, e.column, e.text);
        return 2;
    }
    json_to_lua(L, b->value);
    json_decref(b->value);
    b->value = NULL;
    return 1;
}

/* [-1, +1|2, m] json.decode(text) -> value | nil, "line L, column C: problem" */
static int l_decode(lua_State *L)
{
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    lua_settop(L, 1);
    return json_push_decoded(L, text, len);
}

static int opt_flag(lua_State *L, int opts, const char *name, int dflt)
{
    if (lua_isnoneornil(L, opts))
        return dflt;
    int t = lua_getfield(L, opts, name);
    int v = t == LUA_TNIL ? dflt : lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

/* The smallest %.*g precision that prints every real in v so that it reads back exactly:
 * 0.1 stays "0.1" rather than jansson's default "0.10000000000000001". */
static int real_precision(json_t *v, int depth)
{
    int p = 1;
    if (depth > JSON_MAX_DEPTH + 1)
        return 17;
    if (json_is_real(v)) {
        double d = json_real_value(v);
        char buf[40];
        for (p = 1; p < 17; p++) {
            snprintf(buf, sizeof buf, "%.*g", p, d);
            if (strtod(buf, NULL) == d)
                break;
        }
    } else if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++) {
            int q = real_precision(json_array_get(v, i), depth + 1);
            p = q > p ? q : p;
        }
    } else if (json_is_object(v)) {
        const char *k;
        json_t *item;
        json_object_foreach(v, k, item) {
            int q = real_precision(item, depth + 1);
            p = q > p ? q : p;
        }
    }
    return p;
}

struct json_box *json_push_encoded(lua_State *L, int idx, size_t flags)
{
    struct json_box *b = json_push_box(L);
    char err[256];
    b->value = json_from_lua(L, idx, err, sizeof err);
    if (!b->value) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return NULL;
    }
    b->text = json_dumps(b->value, flags | JSON_REAL_PRECISION(real_precision(b->value, 0)));
    if (!b->text)
        luaL_error(L, "json: out of memory");
    return b;
}

/* [-(1|2), +1|2, m] json.encode(value [, {pretty=false, sort_keys=true}]) -> text | nil, err */
static int l_encode(lua_State *L)
{
    luaL_checkany(L, 1);
    if (!lua_isnoneornil(L, 2))
        luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    size_t flags = JSON_ENCODE_ANY;
    if (opt_flag(L, 2, "sort_keys", 1))
        flags |= JSON_SORT_KEYS;
    flags |= opt_flag(L, 2, "pretty", 0) ? JSON_INDENT(2) : JSON_COMPACT;
    struct json_box *b = json_push_encoded(L, 1, flags);
    if (!b)
        return 2;
    lua_pushstring(L, b->text);
    free(b->text);
    b->text = NULL;
    json_decref(b->value);
    b->value = NULL;
    return 1;
}


static int set_mt(lua_State *L, const char *name)
{
    if (lua_isnoneornil(L, 1)) {
        lua_settop(L, 0);
        lua_newtable(L);
    } else {
        luaL_checktype(L, 1, LUA_TTABLE);
        lua_settop(L, 1);
    }
    push_mt(L, name);
    lua_setmetatable(L, 1);
    return 1;
}

/* [-(0|1), +1, m] json.array([t]) -> t with the array metatable */
static int l_array(lua_State *L) { return set_mt(L, JSON_ARRAY_MT); }

/* [-(0|1), +1, m] json.object([t]) -> t with the object metatable */
static int l_object(lua_State *L) { return set_mt(L, JSON_OBJECT_MT); }

/* [-1, +1, -] json.is_array(v) -> true when v is a table marked as array */
static int l_is_array(lua_State *L)
{
    lua_pushboolean(L, lua_type(L, 1) == LUA_TTABLE && has_metatable(L, 1, JSON_ARRAY_MT));
    return 1;
}

/* [-1, +1, -] json.is_object(v) -> true when v is a table marked as object */
static int l_is_object(lua_State *L)
{
    lua_pushboolean(L, lua_type(L, 1) == LUA_TTABLE && has_metatable(L, 1, JSON_OBJECT_MT));
    return 1;
}

/* [-0, +1, e] require "cmkflow.core.json" */
int luaopen_cmkflow_core_json(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"decode", l_decode}, {"encode", l_encode},       {"array", l_array},
        {"object", l_object}, {"is_array", l_is_array},   {"is_object", l_is_object},
        {NULL, NULL},
    };
    luaL_newlib(L, fns);
    json_pack_register(L);
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
    push_mt(L, JSON_ARRAY_MT);
    lua_setfield(L, -2, "array_mt");
    push_mt(L, JSON_OBJECT_MT);
    lua_setfield(L, -2, "object_mt");
    return 1;
}
