/*
 * fs.c: the few file-system operations the host needs for its own state, done through the C
 * library so that the host never builds a shell command (docs/configuration.md, "State").
 *
 * Lua view (cmkflow.core.fs; not offered to workflows):
 *   fs.mkdir_p(path [, mode = 0700]) -> true | nil, message
 *   fs.write(path, content [, mode = 0600]) -> true | nil, message   (created with mode, replaced)
 *   fs.pid() -> this process's id
 *   fs.list(dir) -> array of the names in dir (no "." or ".."; in no order) | nil, message
 *   fs.lock(path, holder) -> lock | false, holder_of_the_lock | nil, message
 *       an exclusive flock(2) on path, kept until lock:release(), its __close/__gc or the process
 *       ends (the kernel drops it even on SIGKILL); holder is written into the file for the next
 *       one to name.
 */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include "cmk.h"

#define LOCK_MT "cmkflow.fs.lock"
#define DIR_MT "cmkflow.fs.dir"

/* [-0, +2, m] nil, "what path: strerror(err)" */
static int fs_fail(lua_State *L, const char *what, const char *path, int err)
{
    lua_pushnil(L);
    lua_pushfstring(L, "%s %s: %s", what, path, strerror(err));
    return 2;
}

/* [-2, +1|2, m] mkdir_p(path [, mode]) */
static int fs_mkdir_p(lua_State *L)
{
    size_t len;
    const char *path = luaL_checklstring(L, 1, &len);
    mode_t mode = (mode_t)luaL_optinteger(L, 2, 0700);
    luaL_argcheck(L, len > 0, 1, "empty path");
    luaL_Buffer b;
    char *p = luaL_buffinitsize(L, &b, len + 1);
    memcpy(p, path, len + 1);
    /* each prefix ending before a '/', then the whole path */
    for (size_t i = 1; i <= len; i++) {
        if (i < len && p[i] != '/')
            continue;
        char c = p[i];
        p[i] = '\0';
        if (mkdir(p, mode) != 0 && errno != EEXIST) {
            int err = errno;
            p[i] = c;
            return fs_fail(L, "cannot create directory", path, err);
        }
        p[i] = c;
    }
    struct stat st;
    if (stat(path, &st) != 0)
        return fs_fail(L, "cannot create directory", path, errno);
    if (!S_ISDIR(st.st_mode))
        return fs_fail(L, "cannot create directory", path, ENOTDIR);
    lua_pushboolean(L, 1);
    return 1;
}

/* [-3, +1|2, m] write(path, content [, mode]): the file is created with mode before any byte is
 * written, so a private file is never readable by others, even for a moment. */
static int fs_write(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    size_t len;
    const char *content = luaL_checklstring(L, 2, &len);
    mode_t mode = (mode_t)luaL_optinteger(L, 3, 0600);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0)
        return fs_fail(L, "cannot write", path, errno);
    size_t done = 0;
    while (done < len) {
        ssize_t n = write(fd, content + done, len - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int err = errno;
            close(fd);
            return fs_fail(L, "cannot write", path, err);
        }
        done += (size_t)n;
    }
    if (close(fd) != 0)
        return fs_fail(L, "cannot write", path, errno);
    lua_pushboolean(L, 1);
    return 1;
}

struct fs_lock {
    int fd; /* -1 once released */
};

/* [-0, +0, -] lock:release(), __close and __gc */
static int lock_release(lua_State *L)
{
    struct fs_lock *k = luaL_checkudata(L, 1, LOCK_MT);
    if (k->fd >= 0) {
        close(k->fd); /* closing the last descriptor drops the flock */
        k->fd = -1;
    }
    return 0;
}

/* [-0, +1|2, m] cwd(): the process's working directory (getcwd(3)), never from a shell */
static int fs_cwd(lua_State *L)
{
    char buf[PATH_MAX];
    if (!getcwd(buf, sizeof buf))
        return fs_fail(L, "cannot read the working directory", ".", errno);
    lua_pushstring(L, buf);
    return 1;
}

/* [-2, +1|2, m] lock(path, holder): false and the holder's text when another process holds it */
static int fs_lock(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    size_t hlen;
    const char *holder = luaL_checklstring(L, 2, &hlen);
    /* the owning userdata first: from here on __gc closes the descriptor whatever raises */
    struct fs_lock *k = lua_newuserdatauv(L, sizeof *k, 0);
    k->fd = -1;
    luaL_setmetatable(L, LOCK_MT);
    k->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (k->fd < 0)
        return fs_fail(L, "cannot open lock file", path, errno);
    if (flock(k->fd, LOCK_EX | LOCK_NB) != 0) {
        int err = errno;
        if (err != EWOULDBLOCK)
            return fs_fail(L, "cannot lock", path, err);
        char buf[512];
        ssize_t n = pread(k->fd, buf, sizeof buf - 1, 0);
        lua_pushboolean(L, 0);
        lua_pushlstring(L, buf, n > 0 ? (size_t)n : 0);
        return 2;
    }
    if (ftruncate(k->fd, 0) != 0 || pwrite(k->fd, holder, hlen, 0) != (ssize_t)hlen)
        return fs_fail(L, "cannot write lock file", path, errno);
    return 1;
}

/* [-0, +0, -] __gc of a directory being listed */
static int dir_close(lua_State *L)
{
    DIR **d = luaL_checkudata(L, 1, DIR_MT);
    if (*d) {
        closedir(*d);
        *d = NULL;
    }
    return 0;
}

/* [-1, +1|2, m] list(dir): the names in dir, in no order (local workflows: `cmkflow workflows`) */
static int fs_list(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    lua_settop(L, 1);
    /* the owning userdata first: from here on __gc closes the directory whatever raises */
    DIR **d = lua_newuserdatauv(L, sizeof *d, 0); /* 2 */
    *d = NULL;
    if (luaL_newmetatable(L, DIR_MT)) {
        lua_pushcfunction(L, dir_close);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    *d = opendir(path);
    if (!*d)
        return fs_fail(L, "cannot list directory", path, errno);
    lua_newtable(L); /* 3 */
    lua_Integer n = 0;
    const struct dirent *e;
    while ((e = readdir(*d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        lua_pushstring(L, e->d_name);
        lua_rawseti(L, 3, ++n);
    }
    closedir(*d);
    *d = NULL;
    return 1;
}

/* [-0, +1, -] pid(): this process's id (a lock's holder names it) */
static int fs_pid(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)getpid());
    return 1;
}

int luaopen_cmkflow_core_fs(lua_State *L)
{
    static const luaL_Reg fns[] = {{"mkdir_p", fs_mkdir_p}, {"write", fs_write}, {"lock", fs_lock},
                                   {"pid", fs_pid},         {"cwd", fs_cwd},   {"list", fs_list},
                                   {NULL, NULL}};
    static const luaL_Reg lock_methods[] = {{"release", lock_release}, {NULL, NULL}};
    if (luaL_newmetatable(L, LOCK_MT)) {
        luaL_newlib(L, lock_methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, lock_release);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, lock_release);
        lua_setfield(L, -2, "__close");
        lua_pushliteral(L, "locked");
        lua_setfield(L, -2, "__metatable");
    }
    lua_pop(L, 1);
    luaL_newlib(L, fns);
    return 1;
}
