/* STUB: to be implemented (see core/jose.h / core/cmk.h). */
#include "cmk.h"

int luaopen_cmkflow_core_jose(lua_State *L)
{
    lua_newtable(L);
    return 1;
}
