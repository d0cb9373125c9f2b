/* STUB: to be implemented (see core/server.h / core/cmk.h). */
#include "cmk.h"

int luaopen_cmkflow_core_server(lua_State *L)
{
    lua_newtable(L);
    return 1;
}
