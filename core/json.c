/* STUB: to be implemented (see core/json.h / core/cmk.h). */
#include "cmk.h"

int luaopen_cmkflow_core_json(lua_State *L)
{
    lua_newtable(L);
    return 1;
}
