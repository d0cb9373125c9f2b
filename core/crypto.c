/* STUB: to be implemented (see core/crypto.h / core/cmk.h). */
#include "cmk.h"

int luaopen_cmkflow_core_crypto(lua_State *L)
{
    lua_newtable(L);
    return 1;
}
