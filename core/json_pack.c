/* json.pack / json.unpack: a Lua value as compact JSON compressed with raw DEFLATE (zlib) against a
 * preset dictionary, and back. For data kept in memory in large numbers that is rarely read (the
 * emulator's ARM records at rest: about a tenth of their Lua tables, docs/performance.md).
 *
 *   packed = json.pack(value, dictionary)             -> string | nil, err
 *   value  = json.unpack(packed, dictionary [, text]) -> value (text: the JSON text) | nil, err
 *
 * Keys are sorted (as in the dictionary one would build from encoded samples: longer matches).
 * The packed form is one version byte (PACK_VERSION) and a raw DEFLATE stream (RFC 1951; zlib's
 * deflateSetDictionary, https://www.zlib.net/manual.html). The dictionary is part of the format:
 * unpack needs the one pack used. Each Lua state keeps one compressor and one decompressor (a
 * registry userdata), reset per call: a zlib stream costs ~300 KB to set up. */
#include <stdlib.h>
#include <string.h>
#include <lauxlib.h>
#include <zlib.h>
#include "json.h"

#define PACK_VERSION '\1'
#define PACKER_KEY "cmkflow.json.packer"
#define UNPACK_MAX (64u << 20) /* a packed value never unpacks to more (a damaged or hostile file) */
#define UNPACK_KEEP (1u << 20)  /* unpack's buffer is kept between calls up to this size */

struct packer {
    z_stream def, inf;
    int def_ok, inf_ok;
    char *buf; /* unpack's output, kept between calls (up to UNPACK_KEEP) */
    size_t cap;
};

/* [-0, +0, -] __gc of the packer */
static int packer_gc(lua_State *L)
{
    struct packer *p = lua_touserdata(L, 1);
    if (p->def_ok)
        deflateEnd(&p->def);
    if (p->inf_ok)
        inflateEnd(&p->inf);
    p->def_ok = p->inf_ok = 0;
    free(p->buf);
    p->buf = NULL;
    p->cap = 0;
    return 0;
}

/* [-0, +0, m] This state's packer (made on first use). */
static struct packer *get_packer(lua_State *L)
{
    struct packer *p;
    if (lua_getfield(L, LUA_REGISTRYINDEX, PACKER_KEY) == LUA_TUSERDATA) {
        p = lua_touserdata(L, -1);
        lua_pop(L, 1);
        return p;
    }
    lua_pop(L, 1);
    p = lua_newuserdatauv(L, sizeof *p, 0);
    memset(p, 0, sizeof *p);
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, packer_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_setfield(L, LUA_REGISTRYINDEX, PACKER_KEY);
    return p;
}

/* [-2, +1|2, m] json.pack(value, dictionary) -> packed | nil, err */
static int l_pack(lua_State *L)
{
    luaL_checkany(L, 1);
    size_t dlen;
    const char *dict = luaL_checklstring(L, 2, &dlen);
    lua_settop(L, 2);
    struct packer *p = get_packer(L);
    if (!p->def_ok) {
        /* raw DEFLATE (negative window bits: no zlib header or checksum), 32 KiB window */
        if (deflateInit2(&p->def, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK)
            return luaL_error(L, "json.pack: cannot start zlib");
        p->def_ok = 1;
    }
    struct json_box *b = json_push_encoded(L, 1, JSON_ENCODE_ANY | JSON_COMPACT | JSON_SORT_KEYS);
    if (!b)
        return 2;
    size_t n = strlen(b->text);
    if (n + 1024 > UNPACK_MAX) { /* what unpack would refuse is refused here */
        lua_pushnil(L);
        lua_pushliteral(L, "the value's JSON is larger than json.unpack takes (64 MiB)");
        return 2;
    }
    z_stream *z = &p->def;
    if (deflateReset(z) != Z_OK || deflateSetDictionary(z, (const Bytef *)dict, (uInt)dlen) != Z_OK)
        return luaL_error(L, "json.pack: zlib refused the dictionary");
    uLong bound = deflateBound(z, (uLong)n);
    luaL_Buffer lb;
    char *out = luaL_buffinitsize(L, &lb, (size_t)bound + 1);
    out[0] = PACK_VERSION;
    z->next_in = (Bytef *)b->text;
    z->avail_in = (uInt)n;
    z->next_out = (Bytef *)out + 1;
    z->avail_out = (uInt)bound;
    if (deflate(z, Z_FINISH) != Z_STREAM_END)
        return luaL_error(L, "json.pack: zlib could not compress");
    luaL_pushresultsize(&lb, 1 + (size_t)z->total_out);
    return 1;
}

/* [-(2|3), +1|2, m] json.unpack(packed, dictionary [, as_text]) -> value | text | nil, err */
static int l_unpack(lua_State *L)
{
    size_t len, dlen;
    const char *in = luaL_checklstring(L, 1, &len);
    const char *dict = luaL_checklstring(L, 2, &dlen);
    int as_text = lua_toboolean(L, 3);
    lua_settop(L, 3);
    if (len < 2 || in[0] != PACK_VERSION) {
        lua_pushnil(L);
        lua_pushliteral(L, "not packed by json.pack (or by another version)");
        return 2;
    }
    struct packer *p = get_packer(L);
    if (!p->inf_ok) {
        if (inflateInit2(&p->inf, -15) != Z_OK)
            return luaL_error(L, "json.unpack: cannot start zlib");
        p->inf_ok = 1;
    }
    z_stream *z = &p->inf;
    if (inflateReset(z) != Z_OK || inflateSetDictionary(z, (const Bytef *)dict, (uInt)dlen) != Z_OK)
        return luaL_error(L, "json.unpack: zlib refused the dictionary");
    z->next_in = (Bytef *)in + 1;
    z->avail_in = (uInt)(len - 1);
    size_t used = 0;
    int rc;
    for (;;) {
        if (p->cap - used < 1024) {
            size_t cap = p->cap ? p->cap * 2 : 16384;
            char *nb = cap <= UNPACK_MAX ? realloc(p->buf, cap) : NULL;
            if (!nb) {
                lua_pushnil(L);
                lua_pushliteral(L, "packed data unpacks to more than json.unpack takes");
                return 2;
            }
            p->buf = nb;
            p->cap = cap;
        }
        z->next_out = (Bytef *)p->buf + used;
        z->avail_out = (uInt)(p->cap - used);
        rc = inflate(z, Z_NO_FLUSH);
        used = p->cap - z->avail_out;
        if (rc != Z_OK && rc != Z_BUF_ERROR)
            break; /* the end, or damage */
        if (z->avail_in == 0 && z->avail_out > 0)
            break; /* all input read, room left, no end: truncated */
    }
    if (rc != Z_STREAM_END) {
        lua_pushnil(L);
        lua_pushfstring(L, "packed data is damaged (zlib: %s)", z->msg ? z->msg : "truncated");
        return 2;
    }
    int results;
    if (as_text) {
        lua_pushlstring(L, p->buf, used);
        results = 1;
    } else {
        results = json_push_decoded(L, p->buf, used);
    }
    if (p->cap > UNPACK_KEEP) { /* a large value's buffer is not kept for the life of the state */
        free(p->buf);
        p->buf = NULL;
        p->cap = 0;
    }
    return results;
}

void json_pack_register(lua_State *L)
{
    lua_pushcfunction(L, l_pack);
    lua_setfield(L, -2, "pack");
    lua_pushcfunction(L, l_unpack);
    lua_setfield(L, -2, "unpack");
}
