/*
 * policy: compiled policy sets and the evaluation of one DittoServer in
 * the set's prepared sandbox. See policy.h for the contract.
 *
 * Each file is compiled once, as text, when the set is loaded (syntax
 * errors surface there) and dumped by the host. A set prepares one sandbox
 * on its first evaluation: the dumps are loaded into it with mode "b" and
 * kept as main functions, the codec's marker metatables are protected, the
 * policy is required once to keep the modules it loads (sandbox_keep), and
 * the state is sealed (sandbox.h). Every evaluation then requires the
 * policy afresh: its main chunk (and any module not kept) runs again under
 * a new _ENV, the kept modules are shared, and sandbox_end() checks that
 * nothing shared, kept modules included, changed. A set whose evaluations
 * change a kept module, or whose policy cannot be kept, prepares its
 * states without keeping (every module runs in every evaluation, as
 * before). Any failure (or a
 * change of limits) throws the state away; the next evaluation prepares a
 * new one from the dumps, which is cheap compared with compiling. Users
 * can only ever give us text: binary chunks are refused at load time
 * (mode "t").
 */
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <lauxlib.h>

#include "crd.h"
#include "embedded.h"
#include "ljson.h"
#include "lcodec.h"
#include "log.h"
#include "policy.h"
#include "text.h"

#define MAX_BYTECODE ((size_t)16 << 20)
#define MAX_JSON_OUT ((size_t)16 << 20)
#define MAX_MESSAGES ((size_t)1 << 20)
#define MAX_DEPTH 8

struct policy_chunk {
    char *module;    /* "dittoserver", "k8s.quantity" */
    int lib;         /* 0: the policies, 1: embedded lua/, 2: embedded policies/
                      * behind a --policies directory (its modules stay reachable) */
    char *chunkname; /* "@policies/dittoserver.lua" */
    char *code;      /* bytecode dumped by the host */
    size_t len;
};

struct policy_set {
    char *origin;
    struct policy_chunk *v;
    size_t n;
    size_t cap;
    /* the prepared sandbox (NULL until the first evaluation or after a
     * failure) and the limits it was made with */
    struct sandbox *sb;
    struct sandbox_limits lim;
    unsigned long preparations;
    int no_keep;   /* 1: prepare states without kept modules (see prepare) */
    uint64_t hash; /* sum of FNV-1a 64 of each module's name and source */
};

/* --- loading ---------------------------------------------------------------
 */

static int dump_writer(lua_State *L, const void *p, size_t sz, void *ud)
{
    (void)L;
    return dbuf_add(ud, p, sz) == DBUF_OK ? 0 : 1;
}

/* "k8s/quantity.lua" -> "k8s.quantity" (malloc'd), NULL if not *.lua. */
static char *module_name(const char *rel)
{
    size_t n = strlen(rel);
    if (n < 5 || strcmp(rel + n - 4, ".lua") != 0)
        return NULL;
    char *m = strndup(rel, n - 4);
    if (m == NULL)
        return NULL;
    for (char *p = m; *p; p++)
        if (*p == '/')
            *p = '.';
    return m;
}

/* Compiles src as text and appends its dump to the set. */
static int add_chunk(struct policy_set *ps, lua_State *L, const char *rel,
                     int lib, const char *display, const char *src, size_t len,
                     struct dbuf *err)
{
    int rc = POLICY_ENOMEM;
    struct policy_chunk c = {0};
    struct dbuf code;
    dbuf_init(&code, MAX_BYTECODE);

    c.module = module_name(rel);
    if (c.module == NULL)
        goto done;
    c.lib = lib;
    size_t cn = strlen(display) + 2;
    c.chunkname = malloc(cn);
    if (c.chunkname == NULL)
        goto done;
    snprintf(c.chunkname, cn, "@%s", display);

    int lrc = luaL_loadbufferx(L, src, len, c.chunkname, "t");
    if (lrc != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        if (msg && strncmp(msg, "attempt to load a binary chunk", 30) == 0)
            dbuf_addf(err,
                      "%s: binary chunk refused (only Lua source text "
                      "is loaded)",
                      display);
        else
            dbuf_adds(err, msg ? msg : "cannot compile");
        lua_pop(L, 1);
        rc = lrc == LUA_ERRMEM ? POLICY_ENOMEM : POLICY_ELOAD;
        goto done;
    }
    /* A sum of per-module hashes: the directory scan has no fixed order,
     * and equal sources must give an equal hash. */
    ps->hash += text_fnv1a64(
        text_fnv1a64(TEXT_FNV1A64_INIT, c.module, strlen(c.module) + 1), src,
        len);
    int drc = lua_dump(L, dump_writer, &code, 0);
    lua_pop(L, 1);
    if (drc != 0 || dbuf_len(&code) == 0)
        goto done;
    if (ps->n == ps->cap) {
        size_t cap = ps->cap ? ps->cap * 2 : 16;
        struct policy_chunk *v = realloc(ps->v, cap * sizeof(*v));
        if (v == NULL)
            goto done;
        ps->v = v;
        ps->cap = cap;
    }
    c.code = dbuf_take(&code, &c.len);
    if (c.code == NULL)
        goto done;
    ps->v[ps->n++] = c;
    return POLICY_OK;

done:
    if (rc == POLICY_ENOMEM && dbuf_len(err) == 0)
        dbuf_adds(err, "out of memory compiling policies");
    free(c.module);
    free(c.chunkname);
    dbuf_free(&code);
    return rc;
}

/* Reads a whole regular file of at most POLICY_MAX_FILE_SIZE bytes. */
static int read_file(const char *path, struct dbuf *out, struct dbuf *err)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        dbuf_addf(err, "%s: %s", path, strerror(errno));
        return POLICY_ELOAD;
    }
    char buf[8192];
    size_t n;
    int rc = POLICY_OK;
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0) {
        int r = dbuf_add(out, buf, n);
        if (r != DBUF_OK) {
            dbuf_addf(err, "%s: %s", path,
                      r == DBUF_TOOBIG ? "file too large (limit 1 MiB)"
                                       : "out of memory");
            rc = r == DBUF_TOOBIG ? POLICY_ELOAD : POLICY_ENOMEM;
            break;
        }
    }
    if (rc == POLICY_OK && ferror(f)) {
        dbuf_addf(err, "%s: read error", path);
        rc = POLICY_ELOAD;
    }
    fclose(f);
    return rc;
}

/* Compiles every *.lua under root/rel (recursively). */
static int scan_dir(struct policy_set *ps, lua_State *L, const char *root,
                    const char *rel, int depth, struct dbuf *err)
{
    char path[4096];
    if (snprintf(path, sizeof(path), "%s%s%s", root, *rel ? "/" : "", rel) >=
        (int)sizeof(path)) {
        dbuf_addf(err, "%s: path too long", root);
        return POLICY_ELOAD;
    }
    DIR *d = opendir(path);
    if (d == NULL) {
        dbuf_addf(err, "%s: %s", path, strerror(errno));
        return POLICY_ELOAD;
    }
    int rc = POLICY_OK;
    struct dirent *de;
    while (rc == POLICY_OK && (de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue; /* hidden, ".", "..", and ConfigMap "..data" links */
        char sub[2048], full[4096];
        if (snprintf(sub, sizeof(sub), "%s%s%s", rel, *rel ? "/" : "",
                     de->d_name) >= (int)sizeof(sub) ||
            snprintf(full, sizeof(full), "%s/%s", root, sub) >=
                (int)sizeof(full)) {
            dbuf_addf(err, "%s: path too long", path);
            rc = POLICY_ELOAD;
            break;
        }
        struct stat st;
        if (stat(full, &st) != 0)
            continue;
        if (S_ISDIR(st.st_mode)) {
            if (depth < MAX_DEPTH)
                rc = scan_dir(ps, L, root, sub, depth + 1, err);
            continue;
        }
        size_t nl = strlen(sub);
        if (!S_ISREG(st.st_mode) || nl < 5 || strcmp(sub + nl - 4, ".lua"))
            continue;
        if (ps->n >= POLICY_MAX_FILES) {
            dbuf_addf(err, "%s: more than %d policy files", root,
                      POLICY_MAX_FILES);
            rc = POLICY_ELOAD;
            break;
        }
        struct dbuf src;
        dbuf_init(&src, POLICY_MAX_FILE_SIZE);
        rc = read_file(full, &src, err);
        if (rc == POLICY_OK)
            rc = add_chunk(ps, L, sub, 0, full, dbuf_ptr(&src), dbuf_len(&src),
                           err);
        dbuf_free(&src);
    }
    closedir(d);
    return rc;
}

static const struct policy_chunk *find_chunk(const struct policy_set *ps,
                                             const char *module, int lib)
{
    for (size_t i = 0; i < ps->n; i++)
        if (ps->v[i].lib == lib && strcmp(ps->v[i].module, module) == 0)
            return &ps->v[i];
    return NULL;
}

int policy_set_load(const char *dir, struct policy_set **out, struct dbuf *err)
{
    int rc = POLICY_ENOMEM;
    dbuf_reset(err);
    *out = NULL;
    struct policy_set *ps = calloc(1, sizeof(*ps));
    /* A bare state only compiles: nothing is ever run in it. */
    lua_State *L = luaL_newstate();
    if (ps == NULL || L == NULL)
        goto fail;
    ps->origin = strdup(dir ? dir : "embedded");
    if (ps->origin == NULL)
        goto fail;

    for (size_t i = 0; i < embedded_files_count; i++) {
        const struct embedded_file *f = &embedded_files[i];
        int lib;
        const char *rel;
        if (strncmp(f->name, "lua/", 4) == 0) {
            lib = 1;
            rel = f->name + 4;
        } else if (strncmp(f->name, "policies/", 9) == 0) {
            lib = dir == NULL ? 0 : 2;
            rel = f->name + 9;
        } else {
            continue;
        }
        if (strlen(rel) < 5 || strcmp(rel + strlen(rel) - 4, ".lua") != 0)
            continue;
        rc = add_chunk(ps, L, rel, lib, f->name, (const char *)f->data, f->len,
                       err);
        if (rc != POLICY_OK)
            goto fail;
    }
    if (dir) {
        rc = scan_dir(ps, L, dir, "", 0, err);
        if (rc != POLICY_OK)
            goto fail;
    }
    if (find_chunk(ps, POLICY_MAIN, 0) == NULL) {
        dbuf_addf(err, "%s: no %s.lua policy", ps->origin, POLICY_MAIN);
        rc = POLICY_ELOAD;
        goto fail;
    }
    lua_close(L);
    *out = ps;
    return POLICY_OK;

fail:
    if (rc == POLICY_ENOMEM && dbuf_len(err) == 0)
        dbuf_adds(err, "out of memory loading policies");
    if (L)
        lua_close(L);
    policy_set_free(ps);
    return rc;
}

void policy_set_free(struct policy_set *ps)
{
    if (ps == NULL)
        return;
    sandbox_free(ps->sb);
    for (size_t i = 0; i < ps->n; i++) {
        free(ps->v[i].module);
        free(ps->v[i].chunkname);
        free(ps->v[i].code);
    }
    free(ps->v);
    free(ps->origin);
    free(ps);
}

const char *policy_set_origin(const struct policy_set *ps)
{
    return ps->origin;
}

void policy_set_hash(const struct policy_set *ps, char out[17])
{
    snprintf(out, 17, "%016llx", (unsigned long long)ps->hash);
}

unsigned long policy_set_preparations(const struct policy_set *ps)
{
    return ps->preparations;
}

/* --- require inside the sandbox ------------------------------------------- */

/* codec.array / codec.object (their marker metatable: upvalue 1) for
 * scripts: they refuse tables with a protected metatable, as setmetatable
 * does. Otherwise codec.array(getmetatable(codec.array({}))) would replace
 * the lock of a marker metatable (then a __gc added there would be
 * registered by the codec's own lua_setmetatable and run with hooks off),
 * and a library proxy or an _ENV could be unlocked the same way. The
 * marking is codec_set_mark, in this frame: scripts mark tables in their
 * hot paths, and a lua_call per mark cost as much as the marking. */
static int guarded_mark(lua_State *L)
{
    int t = lua_type(L, 1);
    if (t == LUA_TTABLE && lua_getmetatable(L, 1)) {
        lua_pop(L, 1); /* most tables marked are new: no metatable */
        if (luaL_getmetafield(L, 1, "__metatable") != LUA_TNIL)
            return luaL_error(L, "cannot change a protected metatable");
    }
    if (t == LUA_TTABLE && lua_gettop(L) == 1) {
        /* codec_set_mark's common case, without its checks */
        lua_pushvalue(L, lua_upvalueindex(1));
        lua_setmetatable(L, 1);
        return 1;
    }
    return codec_set_mark(L, lua_upvalueindex(1));
}

/* Protects the codec's marker metatables: they are shared by every
 * evaluation of the state (sandbox_protect_table). */
static void protect_marks(lua_State *L)
{
    codec_push_marks(L); /* [amt, omt] */
    sandbox_protect_table(L, -1);
    sandbox_protect_table(L, -2);
    lua_pop(L, 2);
}

/* The "codec" module of one evaluation: a new table each time, with the
 * marking functions guarded. */
static int open_codec(lua_State *L)
{
    protect_marks(L);
    codec_open(L); /* [codec] */
    crd_register(L);
    codec_push_marks(L); /* [codec, amt, omt] */
    lua_pushcclosure(L, guarded_mark, 1);
    lua_setfield(L, -3, "object");
    lua_pushcclosure(L, guarded_mark, 1);
    lua_setfield(L, -2, "array");
    return 1;
}

/* sandbox_loader_fn: the policy directory, then (behind --policies) the
 * embedded policies/ (so a custom dittoserver.lua can build on
 * dittoserver.default and its modules, and require dittoserver_schema;
 * only the embedded dittoserver itself is shadowed), then embedded lua/,
 * then "codec". */
static int loader(lua_State *L, const char *name, void *ud)
{
    const struct policy_set *ps = ud;
    const struct policy_chunk *c = find_chunk(ps, name, 0);
    if (c == NULL)
        c = find_chunk(ps, name, 2);
    if (c == NULL)
        c = find_chunk(ps, name, 1);
    if (c == NULL) {
        if (strcmp(name, "codec") != 0)
            return 0;
        lua_pushcfunction(L, open_codec);
        return 1;
    }
    if (luaL_loadbufferx(L, c->code, c->len, c->chunkname, "b") != LUA_OK)
        lua_error(L);
    return 1;
}

/* --- evaluation ------------------------------------------------------------
 */

void policy_output_init(struct policy_output *o)
{
    dbuf_init(&o->errors, MAX_MESSAGES);
    dbuf_init(&o->warnings, MAX_MESSAGES);
    dbuf_init(&o->objects, MAX_JSON_OUT);
    dbuf_init(&o->status, MAX_JSON_OUT);
    o->n_errors = 0;
    o->n_warnings = 0;
    o->memory_peak = 0;
    o->requeue_after_ms = 0;
}

/* Empties the results (not memory_peak), keeping the allocations. */
static void output_reset(struct policy_output *o)
{
    dbuf_reset(&o->errors);
    dbuf_reset(&o->warnings);
    dbuf_reset(&o->objects);
    dbuf_reset(&o->status);
    o->n_errors = 0;
    o->n_warnings = 0;
    o->requeue_after_ms = 0;
}

void policy_output_free(struct policy_output *o)
{
    dbuf_free(&o->errors);
    dbuf_free(&o->warnings);
    dbuf_free(&o->objects);
    dbuf_free(&o->status);
}

struct eval {
    const struct policy_set *ps;
    const struct policy_input *in;
    struct policy_output *out;
    const char *main_name; /* "policies/dittoserver.lua" */
    int invalid;
};

/* Raises `fmt` as the evaluation's error, without a position. */
static int fail(lua_State *L, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    return lua_error(L);
}

/* Pushes a decoded JSON text; a failure is the core's input error. */
static void push_json(lua_State *L, const char *what, const char *s, size_t len)
{
    char msg[256];
    if (json_push(L, s, len, NULL, msg, sizeof(msg)) != 0)
        fail(L, "%s: %s", what, msg);
}

/* Returns the string at t[k] (raw), or NULL. Leaves the stack as it was
 * (the string stays referenced by t). */
static const char *raw_string(lua_State *L, int t, const char *k)
{
    if (lua_type(L, t) != LUA_TTABLE)
        return NULL;
    t = lua_absindex(L, t);
    lua_pushstring(L, k);
    lua_rawget(L, t);
    const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    lua_pop(L, 1);
    return s;
}

/* Pushes t[k] (raw). */
static int raw_field(lua_State *L, int t, const char *k)
{
    t = lua_absindex(L, t);
    lua_pushstring(L, k);
    return lua_rawget(L, t);
}

static void raw_set_string(lua_State *L, int t, const char *k, const char *v)
{
    t = lua_absindex(L, t);
    lua_pushstring(L, k);
    lua_pushstring(L, v);
    lua_rawset(L, t);
}

/* Appends the list of strings at idx (nil = empty) to buf, one per line. */
static size_t collect_messages(lua_State *L, int idx, const char *what,
                               struct dbuf *buf)
{
    if (lua_isnil(L, idx))
        return 0;
    if (!lua_istable(L, idx))
        fail(L, "validate() must return lists of strings (%s is a %s)", what,
             luaL_typename(L, idx));
    size_t n = (size_t)lua_rawlen(L, idx);
    for (size_t i = 1; i <= n; i++) {
        lua_rawgeti(L, idx, (lua_Integer)i);
        if (lua_type(L, -1) != LUA_TSTRING)
            fail(L, "validate() must return lists of strings (%s[%d] is a %s)",
                 what, (int)i, luaL_typename(L, -1));
        size_t len;
        const char *s = lua_tolstring(L, -1, &len);
        for (size_t j = 0; j < len; j++)
            dbuf_addc(buf, s[j] == '\n' ? ' ' : s[j]);
        dbuf_addc(buf, '\n');
        lua_pop(L, 1);
    }
    return n;
}

/* Pushes the ctx table of a phase. */
static void push_ctx(lua_State *L, const struct eval *e, const char *name,
                     const char *ns)
{
    lua_createtable(L, 0, 4);
    raw_set_string(L, -1, "name", name);
    raw_set_string(L, -1, "namespace", ns);
    raw_set_string(L, -1, "cluster_domain",
                   e->in->cluster_domain ? e->in->cluster_domain
                                         : "cluster.local");
    raw_set_string(L, -1, "operator_version",
                   e->in->operator_version ? e->in->operator_version
                                           : DITTOFS_VERSION);
    codec_mark(L, -1, CODEC_OBJECT);
}

/* Sets the core's two labels in the labels table at t[k] (made when
 * absent or null; `what` names t[k] in the error when it is not a
 * table). */
static void add_core_labels(lua_State *L, int t, const char *what, int i,
                            const char *kind, const char *oname,
                            const char *name)
{
    t = lua_absindex(L, t);
    int lt = raw_field(L, t, "labels");
    if (lt == LUA_TNIL || codec_is_null(L, -1)) {
        lua_pop(L, 1);
        lua_newtable(L);
        codec_mark(L, -1, CODEC_OBJECT);
        lua_pushstring(L, "labels");
        lua_pushvalue(L, -2);
        lua_rawset(L, t);
    } else if (lt != LUA_TTABLE) {
        fail(L, "render() object %d (%s \"%s\"): %s.labels is a %s", i, kind,
             oname, what, luaL_typename(L, -1));
    }
    raw_set_string(L, -1, POLICY_LABEL_MANAGED_BY, POLICY_MANAGER);
    raw_set_string(L, -1, POLICY_LABEL_SERVER, name);
    lua_pop(L, 1);
}

/* A StatefulSet's pod template gets the core's labels too, so that the
 * operator's Pod informer (selected by managed-by, mapped by the server
 * label) sees the pods whatever the policy rendered. Not the selector:
 * it is immutable, and needs no more than it has. A template that is
 * absent or not a table is left for the API to refuse. */
static void label_pod_template(lua_State *L, int o, int i, const char *oname,
                               const char *name)
{
    int top = lua_gettop(L);
    if (raw_field(L, o, "spec") == LUA_TTABLE &&
        raw_field(L, -1, "template") == LUA_TTABLE) {
        int tpl = lua_gettop(L);
        int mt = raw_field(L, tpl, "metadata");
        if (mt == LUA_TNIL || codec_is_null(L, -1)) {
            lua_pop(L, 1);
            lua_newtable(L);
            codec_mark(L, -1, CODEC_OBJECT);
            lua_pushstring(L, "metadata");
            lua_pushvalue(L, -2);
            lua_rawset(L, tpl);
        } else if (mt != LUA_TTABLE) {
            fail(L,
                 "render() object %d (StatefulSet \"%s\"): "
                 "spec.template.metadata is a %s",
                 i, oname, luaL_typename(L, -1));
        }
        add_core_labels(L, -1, "spec.template.metadata", i, "StatefulSet",
                        oname, name);
    }
    lua_settop(L, top);
}

/* Checks one rendered object and adds namespace, labels (on a
 * StatefulSet's pod template as well) and the owner reference. `o` is
 * absolute. */
static void finish_object(lua_State *L, int o, int i, int seen,
                          const char *name, const char *ns, const char *uid)
{
    if (lua_type(L, o) != LUA_TTABLE)
        fail(L, "render() object %d is a %s, not a table", i,
             luaL_typename(L, o));
    const char *api = raw_string(L, o, "apiVersion");
    const char *kind = raw_string(L, o, "kind");
    if (api == NULL || *api == '\0')
        fail(L, "render() object %d has no apiVersion", i);
    if (kind == NULL || *kind == '\0')
        fail(L, "render() object %d has no kind", i);
    if (raw_field(L, o, "metadata") != LUA_TTABLE)
        fail(L, "render() object %d (%s) has no metadata", i, kind);
    int md = lua_gettop(L);
    const char *oname = raw_string(L, md, "name");
    if (oname == NULL || *oname == '\0')
        fail(L, "render() object %d (%s) has no metadata.name", i, kind);

    /* One object per kind and name. */
    lua_pushfstring(L, "%s/%s", kind, oname);
    lua_pushvalue(L, -1);
    if (lua_rawget(L, seen) != LUA_TNIL)
        fail(L, "render() returned %s \"%s\" twice", kind, oname);
    lua_pop(L, 1);
    lua_pushboolean(L, 1);
    lua_rawset(L, seen);

    raw_set_string(L, md, "namespace", ns);
    add_core_labels(L, md, "metadata", i, kind, oname, name);
    if (strcmp(kind, "StatefulSet") == 0)
        label_pod_template(L, o, i, oname, name);

    lua_pushstring(L, "ownerReferences");
    lua_createtable(L, 1, 0);
    codec_mark(L, -1, CODEC_ARRAY);
    lua_createtable(L, 0, 6);
    codec_mark(L, -1, CODEC_OBJECT);
    raw_set_string(L, -1, "apiVersion", POLICY_OWNER_API_VERSION);
    raw_set_string(L, -1, "kind", POLICY_OWNER_KIND);
    raw_set_string(L, -1, "name", name);
    raw_set_string(L, -1, "uid", uid);
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "controller");
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "blockOwnerDeletion");
    lua_rawseti(L, -2, 1);
    lua_rawset(L, md);
    lua_pop(L, 1); /* metadata */
}

/* Encodes the value at idx as JSON into buf, or fails with `what`. */
static void encode(lua_State *L, int idx, struct dbuf *buf, const char *what)
{
    char msg[256];
    if (json_encode(L, idx, buf, msg, sizeof(msg)) != 0)
        fail(L, "%s: %s", what, msg);
}

/* encode() of render()'s object i at o (finish_object checked it), named
 * in the message only when it fails. */
static void encode_object(lua_State *L, int o, int i, struct dbuf *buf)
{
    char msg[256], what[512];
    if (json_encode(L, o, buf, msg, sizeof(msg)) == 0)
        return;
    raw_field(L, o, "metadata");
    snprintf(what, sizeof(what), "render() object %d (%s \"%s\")", i,
             raw_string(L, o, "kind"), raw_string(L, -1, "name"));
    lua_pop(L, 1);
    fail(L, "%s: %s", what, msg);
}

/*
 * Refuses the whole result when an object is of a kind no policy may
 * render (kinds.h: ConfigMaps, Services, StatefulSets), naming the object
 * and the kinds allowed: a policy comes from a ConfigMap and must never be
 * a way to write a RoleBinding, a Secret or a Pod. Runs over the checked
 * list (finish_object has seen every object), before anything is written,
 * in the operator and in --script-test alike. Raises.
 */
static void check_kinds(lua_State *L, int list, int n)
{
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, list, i);
        int o = lua_gettop(L);
        const char *api = raw_string(L, o, "apiVersion");
        const char *kind = raw_string(L, o, "kind");
        int k = kinds_find(api, kind);
        if (k < 0 || kinds_table[k].role != KIND_RENDERED) {
            raw_field(L, o, "metadata");
            const char *oname = raw_string(L, -1, "name");
            /* Copied out and freed before anything may raise. */
            char allowed[512];
            struct dbuf b;
            dbuf_init(&b, sizeof(allowed) - 1);
            kinds_describe_rendered(&b);
            snprintf(allowed, sizeof(allowed), "%s", dbuf_ptr(&b));
            dbuf_free(&b);
            fail(L,
                 "render() object %d (%s %s \"%s\"): the operator manages "
                 "only %s",
                 i, api, kind, oname, allowed);
        }
        lua_pop(L, 1);
    }
}

/* Protected: the whole evaluation (stack: [eval]). */
static int eval_main(lua_State *L)
{
    struct eval *e = lua_touserdata(L, 1);
    const struct policy_input *in = e->in;

    /* Each policy call gets its own decoded DittoServer: one may change
     * it, the next must not see that. This one is read by the core first,
     * copied for validate and render (json_copy: 60 % of a decode),
     * and then handed to status, the last call (nothing reads it after). */
    push_json(L, "DittoServer", in->ds_json, in->ds_len); /* 2 */
    if (raw_field(L, 2, "metadata") != LUA_TTABLE)
        fail(L, "DittoServer: no metadata");
    int md = lua_gettop(L); /* 3 */
    const char *name = raw_string(L, md, "name");
    const char *ns = raw_string(L, md, "namespace");
    const char *uid = raw_string(L, md, "uid");
    if (name == NULL)
        fail(L, "DittoServer: no metadata.name");
    ns = ns ? ns : "default";
    uid = uid ? uid : POLICY_PLACEHOLDER_UID;
    lua_Integer gen = 1;
    if (raw_field(L, md, "generation") == LUA_TNUMBER && lua_isinteger(L, -1))
        gen = lua_tointeger(L, -1);
    lua_pop(L, 1);

    /* The policy module, and the modules it requires, run afresh. */
    sandbox_require(L, POLICY_MAIN);
    int m = lua_gettop(L); /* 4 */
    if (lua_type(L, m) != LUA_TTABLE)
        fail(L, "%s: the policy must return a table (got %s)", e->main_name,
             luaL_typename(L, m));

    /* validate(ds) -> errors, warnings (not for a status-only run) */
    sandbox_budget_restart(L);
    int vt = in->status_only ? LUA_TNIL : raw_field(L, m, "validate");
    if (vt == LUA_TFUNCTION) {
        json_copy(L, 2);
        lua_call(L, 1, 2);
        e->out->n_errors = collect_messages(L, -2, "errors", &e->out->errors);
        e->out->n_warnings =
            collect_messages(L, -1, "warnings", &e->out->warnings);
        lua_pop(L, 2);
    } else if (vt != LUA_TNIL) {
        fail(L, "%s: validate is a %s, not a function", e->main_name,
             luaL_typename(L, -1));
    } else if (!in->status_only) {
        lua_pop(L, 1);
    }
    e->invalid = e->out->n_errors > 0;

    /* render(ds, ctx) -> objects */
    lua_newtable(L); /* 5: kind/name seen */
    int seen = lua_gettop(L);
    if (!e->invalid && !in->status_only) {
        sandbox_budget_restart(L);
        if (raw_field(L, m, "render") != LUA_TFUNCTION)
            fail(L, "%s: the policy has no render function", e->main_name);
        json_copy(L, 2);
        push_ctx(L, e, name, ns);
        lua_call(L, 2, 1);
        int list = lua_gettop(L);
        if (lua_type(L, list) != LUA_TTABLE ||
            codec_kind(L, list) == CODEC_OBJECT)
            fail(L, "render() must return a list of objects (got %s)",
                 lua_type(L, list) == LUA_TTABLE ? "an object"
                                                 : luaL_typename(L, list));
        int n = (int)lua_rawlen(L, list);
        dbuf_addc(&e->out->objects, '[');
        for (int i = 1; i <= n; i++) {
            lua_rawgeti(L, list, i);
            int o = lua_gettop(L);
            finish_object(L, o, i, seen, name, ns, uid);
            if (i > 1)
                dbuf_addc(&e->out->objects, ',');
            encode_object(L, o, i, &e->out->objects);
            lua_pop(L, 1);
        }
        if (dbuf_addc(&e->out->objects, ']') != DBUF_OK)
            fail(L, "render(): output larger than 16 MiB");
        check_kinds(L, list, n);
        lua_pop(L, 1);
    }

    /* status(ds, observed, ctx) -> status */
    sandbox_budget_restart(L);
    if (raw_field(L, m, "status") != LUA_TFUNCTION)
        fail(L, "%s: the policy has no status function", e->main_name);
    lua_pushvalue(L, 2); /* name, ns and uid are not read after this */
    if (in->observed_json)
        push_json(L, "observed", in->observed_json, in->observed_len);
    else
        lua_newtable(L);
    if (lua_type(L, -1) != LUA_TTABLE)
        fail(L, "observed: not an object");
    /* observed[kind] is a table for every child kind the core watches. */
    for (int i = 0; i < KINDS_NCHILD; i++) {
        if (raw_field(L, -1, kinds_table[i].kind) == LUA_TNIL) {
            lua_pushstring(L, kinds_table[i].kind);
            lua_newtable(L);
            codec_mark(L, -1, CODEC_OBJECT);
            lua_rawset(L, -4);
        }
        lua_pop(L, 1);
    }
    push_ctx(L, e, name, ns);
    lua_call(L, 3, 2);
    /* An optional second result: reconcile again after that many
     * seconds (a policy waiting for something time-based). */
    if (!lua_isnil(L, -1)) {
        int isnum = 0;
        lua_Number secs = lua_tonumberx(L, -1, &isnum);
        if (!isnum || !(secs > 0) || secs > POLICY_MAX_REQUEUE_S)
            fail(L,
                 "status(): the second result (requeue after) must be a "
                 "number of seconds in (0, %d], got %s",
                 POLICY_MAX_REQUEUE_S, luaL_tolstring(L, -1, NULL));
        e->out->requeue_after_ms = (unsigned long)(secs * 1000 + 0.5);
        if (e->out->requeue_after_ms == 0)
            e->out->requeue_after_ms = 1;
    }
    lua_pop(L, 1);
    int st = lua_gettop(L);
    if (lua_type(L, st) != LUA_TTABLE)
        fail(L, "status() must return a table (got %s)", luaL_typename(L, st));
    if (codec_kind(L, st) == CODEC_ARRAY ||
        (codec_kind(L, st) == CODEC_PLAIN && lua_rawlen(L, st) > 0))
        fail(L, "status() must return an object, not a list");
    lua_pushstring(L, "observedGeneration");
    lua_pushinteger(L, gen);
    lua_rawset(L, st);
    if (raw_field(L, st, "conditions") == LUA_TTABLE) {
        int n = (int)lua_rawlen(L, -1);
        for (int i = 1; i <= n; i++) {
            if (lua_rawgeti(L, -1, i) != LUA_TTABLE)
                fail(L, "status() conditions[%d] is a %s, not a table", i,
                     luaL_typename(L, -1));
            lua_pushstring(L, "observedGeneration");
            lua_pushinteger(L, gen);
            lua_rawset(L, -3);
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
    encode(L, st, &e->out->status, "status()");
    return 0;
}

/* Protected: loads every module of the set into the new state and
 * protects what every evaluation will share. The loader decides which
 * chunk a name means; a name met again is already kept. */
static int prepare_main(lua_State *L)
{
    const struct policy_set *ps = lua_touserdata(L, 1);
    for (size_t i = 0; i < ps->n; i++)
        sandbox_preload(L, ps->v[i].module);
    sandbox_preload(L, "codec");
    protect_marks(L);
    return 0;
}

static int same_limits(const struct sandbox_limits *a,
                       const struct sandbox_limits *b)
{
    static const struct sandbox_limits none;
    if (b == NULL)
        b = &none;
    return a->timeout_ms == b->timeout_ms &&
           a->memory_bytes == b->memory_bytes &&
           a->hook_count == b->hook_count && a->alloc == b->alloc;
}

/* Makes ps->sb ready for an evaluation with limits `lim`. Returns a
 * SANDBOX_* status, with the message in err on failure. */
static int prepare(struct policy_set *ps, const struct sandbox_limits *lim,
                   struct dbuf *err)
{
    if (ps->sb && same_limits(&ps->lim, lim))
        return SANDBOX_OK;
    sandbox_free(ps->sb);
    ps->preparations++;
    ps->sb = sandbox_new(lim, loader, ps);
    if (ps->sb == NULL) {
        dbuf_adds(err, "out of memory creating the policy sandbox");
        return SANDBOX_ERR_NOMEM;
    }
    int rc = sandbox_cpcall(ps->sb, prepare_main, ps, 0, err);
    if (rc == SANDBOX_OK && !ps->no_keep &&
        sandbox_keep(ps->sb, POLICY_MAIN, err) != SANDBOX_OK) {
        /* The policy's modules cannot be loaded once for all (its main
         * chunk failed, or changed a module it had loaded): this set's
         * states run every module in every evaluation, as they meet what
         * they always met. */
        ps->no_keep = 1;
        dbuf_reset(err);
        sandbox_free(ps->sb);
        ps->sb = sandbox_new(lim, loader, ps);
        if (ps->sb == NULL) {
            dbuf_adds(err, "out of memory creating the policy sandbox");
            return SANDBOX_ERR_NOMEM;
        }
        rc = sandbox_cpcall(ps->sb, prepare_main, ps, 0, err);
    }
    if (rc != SANDBOX_OK) {
        sandbox_free(ps->sb);
        ps->sb = NULL;
        return rc;
    }
    sandbox_seal(ps->sb);
    if (lim)
        ps->lim = *lim;
    else
        memset(&ps->lim, 0, sizeof(ps->lim));
    return SANDBOX_OK;
}

int policy_eval(struct policy_set *ps, const struct sandbox_limits *lim,
                const struct policy_input *in, struct policy_output *out,
                struct dbuf *err)
{
    dbuf_reset(err);
    output_reset(out);
    out->memory_peak = 0;

    const struct policy_chunk *c = find_chunk(ps, POLICY_MAIN, 0);
    struct eval e = {ps, in, out, c->chunkname + 1, 0};
    int rc = prepare(ps, lim, err);
    if (rc == SANDBOX_OK) {
        struct sandbox *sb = ps->sb;
        rc = sandbox_cpcall(sb, eval_main, &e, 0, err);
        size_t peak = sandbox_memory_peak(sb);
        size_t base = sandbox_memory_baseline(sb);
        out->memory_peak = peak > base ? peak - base : 0;
        if (rc == SANDBOX_ERR_RUNTIME && log_enabled(LOG_DEBUG))
            log_debug("policy error", "error", dbuf_ptr(err), "traceback",
                      sandbox_traceback(sb), NULL);
        /* A failed evaluation may have stopped anywhere: start over. A
         * changed shared table or kept module (sandbox_end) too, though
         * the result of this evaluation stands: it started from what a
         * fresh state holds. A policy that changes its kept modules would
         * do that in every evaluation: its set stops keeping them. */
        if (rc != SANDBOX_OK) {
            sandbox_free(sb);
            ps->sb = NULL;
        } else if (sandbox_end(sb) != SANDBOX_OK) {
            if (sandbox_kept(sb) > 0)
                ps->no_keep = 1;
            sandbox_free(sb);
            ps->sb = NULL;
        }
    }

    int ret;
    switch (rc) {
    case SANDBOX_OK:
        return e.invalid ? POLICY_INVALID : POLICY_OK;
    case SANDBOX_ERR_TIMEOUT:
        ret = POLICY_ETIMEOUT;
        break;
    case SANDBOX_ERR_MEMORY:
        ret = POLICY_EMEMORY;
        break;
    case SANDBOX_ERR_NOMEM:
        ret = POLICY_ENOMEM;
        break;
    default:
        ret = POLICY_EFAIL;
        break;
    }
    output_reset(out); /* nothing half-made leaves a failed evaluation */
    return ret;
}
