/* ldurable.c: cmkflow.core.durable - files replaced so that a crash at any instant leaves either
 * the old or the new content, and the new content is on disk once the call returns (the
 * emulator's state file: docs/emulator.md "Persistence"). The sequence is SQLite's and ext4's
 * documented one: write a temporary file in the same directory, fsync it, rename it over the
 * target, fsync the directory (rename(2), fsync(2)). No shell, no stdio. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include "cmk.h"

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* fsync the directory holding path (the rename itself is then durable). */
static int sync_dir(const char *path)
{
    char dir[4096];
    const char *slash = strrchr(path, '/');
    if (!slash) {
        dir[0] = '.';
        dir[1] = '\0';
    } else {
        size_t n = slash == path ? 1 : (size_t)(slash - path);
        if (n >= sizeof dir) {
            errno = ENAMETOOLONG;
            return -1;
        }
        memcpy(dir, path, n);
        dir[n] = '\0';
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    errno = e;
    return rc;
}

static int fail_errno(lua_State *L, const char *what, const char *path)
{
    char msg[4300];
    snprintf(msg, sizeof msg, "%s %s: %s", what, path, strerror(errno));
    struct cmk_error e = {.code = "StateWriteFailed", .message = msg, .kind = "internal"};
    return cmk_fail(L, &e);
}

/* [-2|3, +1|2, e] durable.replace(path, text [, mode = 0600]) -> true | nil, err
 * path's content becomes text atomically and durably (fsync of the file, rename, fsync of the
 * directory). The temporary file is path .. ".tmp" (removed on failure). */
static int l_replace(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    size_t len;
    const char *text = luaL_checklstring(L, 2, &len);
    lua_Integer mode = luaL_optinteger(L, 3, 0600);
    luaL_argcheck(L, mode >= 0 && mode <= 0777, 3, "must be a file mode (0..0777)");
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp)
        return luaL_argerror(L, 1, "path too long");
    unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, (mode_t)mode);
    if (fd < 0)
        return fail_errno(L, "cannot create", tmp);
    if (write_all(fd, text, len) != 0 || fsync(fd) != 0) {
        int e = errno;
        close(fd);
        unlink(tmp);
        errno = e;
        return fail_errno(L, "cannot write", tmp);
    }
    if (close(fd) != 0) {
        unlink(tmp);
        return fail_errno(L, "cannot write", tmp);
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        errno = e;
        return fail_errno(L, "cannot rename onto", path);
    }
    if (sync_dir(path) != 0)
        return fail_errno(L, "cannot sync the directory of", path);
    lua_pushboolean(L, 1);
    return 1;
}

static const luaL_Reg durable_funcs[] = {
    {"replace", l_replace},
    {NULL, NULL},
};

/* [-0, +1, m] cmkflow.core.durable */
int luaopen_cmkflow_core_durable(lua_State *L)
{
    luaL_newlib(L, durable_funcs);
    return 1;
}
