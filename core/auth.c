/* STUB: to be implemented (see core/auth.h). */
#include "auth.h"

void auth_push_credential(lua_State *L, const struct auth_spec *spec)
{
    (void)spec;
    luaL_error(L, "credentials not implemented yet");
}

int luaopen_cmkflow_core_auth(lua_State *L)
{
    lua_newtable(L);
    return 1;
}
