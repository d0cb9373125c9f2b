/* STUB: to be implemented (see core/http.h / core/cmk.h). */
#include "cmk.h"

int luaopen_cmkflow_core_http(lua_State *L)
{
    lua_newtable(L);
    return 1;
}
