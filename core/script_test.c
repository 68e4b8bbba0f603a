/*
 * script_test: the offline dry run. See script_test.h for the contract.
 *
 * All Lua work happens in one trusted host state (never the sandbox): the
 * input is decoded there, defaulted and validated with the CRD, encoded to
 * JSON for policy_eval (which runs the policy in its own sandbox), and the
 * results are decoded again to be printed. Table building runs inside
 * lua_pcall; failures carry the exit code in struct st.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>

#include "crd.h"
#include "ljson.h"
#include "kinds.h"
#include "lcodec.h"
#include "policy.h"
#include "script_test.h"
#include "lyaml.h"

#define DS_API_VERSION KINDS_OWNER_API_VERSION
#define DS_KIND KINDS_OWNER_KIND
#define MAX_OUT ((size_t)64 << 20)

struct st {
    const struct script_test_options *o;
    const char *display; /* the file name in messages */
    int code;            /* exit code of a raised failure */
};

/* Records the exit code and raises the message (no position). */
static int fail(lua_State *L, struct st *st, int code, const char *fmt, ...)
{
    va_list ap;
    st->code = code;
    va_start(ap, fmt);
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    return lua_error(L);
}

/* Reads the whole input (bounded). */
static int read_input(const char *file, struct dbuf *buf, struct dbuf *errs)
{
    int is_stdin = strcmp(file, "-") == 0;
    FILE *f = is_stdin ? stdin : fopen(file, "rb");
    if (f == NULL) {
        dbuf_addf(errs, "%s: %s\n", file, strerror(errno));
        return -1;
    }
    char tmp[16384];
    size_t n;
    int rc = 0;
    while ((n = fread(tmp, 1, sizeof(tmp), f)) > 0) {
        int r = dbuf_add(buf, tmp, n);
        if (r != DBUF_OK) {
            dbuf_addf(errs, "%s: %s\n", is_stdin ? "<stdin>" : file,
                      r == DBUF_TOOBIG ? "input larger than 16 MiB"
                                       : "out of memory");
            rc = -1;
            break;
        }
    }
    if (rc == 0 && ferror(f)) {
        dbuf_addf(errs, "%s: read error\n", is_stdin ? "<stdin>" : file);
        rc = -1;
    }
    if (!is_stdin)
        fclose(f);
    return rc;
}

/* A lowercase RFC 1123 subdomain of at most 253 characters. */
static int is_dns_subdomain(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 253)
        return 0;
    int start = 1; /* at the start of a label */
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (c == '.') {
            if (start || s[i - 1] == '-')
                return 0;
            start = 1;
        } else if (c == '-') {
            if (start)
                return 0;
        } else if (alnum) {
            start = 0;
        } else {
            return 0;
        }
    }
    return !start && s[n - 1] != '-';
}

static const char *field_string(lua_State *L, int t, const char *k)
{
    if (lua_type(L, t) != LUA_TTABLE)
        return NULL;
    lua_getfield(L, t, k);
    const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    lua_pop(L, 1);
    return s;
}

/*
 * Protected: [st, docs] -> [ds, observed]. Exactly one document is the
 * DittoServer; the others (before or after it, e.g. a credentials Secret,
 * the StatefulSet with its status, the server's Pods) are observed
 * children, keyed by kind and name (observed[kind][name], so Pods are
 * observed.Pod[name] as in the operator). Empty documents are skipped.
 */
static int p_docs(lua_State *L)
{
    struct st *st = lua_touserdata(L, 1);
    lua_pushnil(L);  /* 3: ds */
    lua_newtable(L); /* 4: observed */
    codec_mark(L, 4, CODEC_OBJECT);
    size_t n = lua_rawlen(L, 2);
    for (size_t i = 1; i <= n; i++) {
        lua_settop(L, 4);
        lua_rawgeti(L, 2, (lua_Integer)i);
        int d = 5;
        if (lua_isnil(L, d) || codec_is_null(L, d))
            continue;
        if (lua_type(L, d) != LUA_TTABLE || codec_kind(L, d) == CODEC_ARRAY)
            fail(L, st, SCRIPT_TEST_EINPUT, "%s: document %d is not an object",
                 st->display, (int)i);
        const char *api = field_string(L, d, "apiVersion");
        const char *kind = field_string(L, d, "kind");
        if (kind && strcmp(kind, DS_KIND) == 0) {
            if (api == NULL || strcmp(api, DS_API_VERSION) != 0)
                fail(L, st, SCRIPT_TEST_EINPUT,
                     "%s: document %d: apiVersion %s is not served; want "
                     "apiVersion " DS_API_VERSION ", kind " DS_KIND,
                     st->display, (int)i, api ? api : "missing");
            if (!lua_isnil(L, 3))
                fail(L, st, SCRIPT_TEST_EINPUT,
                     "%s: document %d: a second DittoServer (one per "
                     "file)",
                     st->display, (int)i);
            lua_pushvalue(L, d);
            lua_replace(L, 3);
            continue;
        }
        /* An observed child: kind and metadata.name are needed. */
        lua_getfield(L, d, "metadata");
        const char *name = field_string(L, 6, "name");
        if (kind == NULL || name == NULL)
            fail(L, st, SCRIPT_TEST_EINPUT,
                 "%s: document %d (an observed child) needs kind and "
                 "metadata.name",
                 st->display, (int)i);
        if (lua_getfield(L, 4, kind) == LUA_TNIL) { /* 7 */
            lua_pop(L, 1);
            lua_newtable(L);
            codec_mark(L, -1, CODEC_OBJECT);
            lua_pushvalue(L, -1);
            lua_setfield(L, 4, kind);
        }
        if (lua_getfield(L, 7, name) != LUA_TNIL)
            fail(L, st, SCRIPT_TEST_EINPUT,
                 "%s: document %d: observed %s \"%s\" appears twice",
                 st->display, (int)i, kind, name);
        lua_pop(L, 1);
        lua_pushvalue(L, d);
        lua_setfield(L, 7, name);
    }
    lua_settop(L, 4);
    if (lua_isnil(L, 3))
        fail(L, st, SCRIPT_TEST_EINPUT,
             "%s: no DittoServer (apiVersion " DS_API_VERSION ", kind " DS_KIND
             ") in the input",
             st->display);
    return 2;
}

/*
 * Protected: [st, ds] -> []. What the apiserver does to metadata on
 * create, and dropping status (reset on create under the status
 * subresource; a live DittoServer (--diff) keeps it). Failures are
 * invalid-spec failures.
 */
static int p_metadata(lua_State *L)
{
    struct st *st = lua_touserdata(L, 1);
    if (!st->o->live) {
        lua_pushnil(L);
        lua_setfield(L, 2, "status");
    }
    if (lua_getfield(L, 2, "metadata") != LUA_TTABLE ||
        codec_kind(L, 3) == CODEC_ARRAY ||
        lua_getfield(L, 3, "name") != LUA_TSTRING) /* 3, 4 */
        fail(L, st, SCRIPT_TEST_EINVALID,
             "metadata.name: Required value: name or generateName is "
             "required");
    const char *name = lua_tostring(L, 4);
    if (!is_dns_subdomain(name))
        fail(L, st, SCRIPT_TEST_EINVALID,
             "metadata.name: Invalid value: \"%s\": a lowercase RFC 1123 "
             "subdomain must consist of lower case alphanumeric "
             "characters, '-' or '.', and must start and end with an "
             "alphanumeric character (e.g. 'example.com', regex used for "
             "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-"
             "z0-9]*[a-z0-9])?)*')",
             name);
    lua_getfield(L, 3, "namespace");
    if (lua_isnil(L, 5)) {
        lua_pushliteral(L, "default");
        lua_setfield(L, 3, "namespace");
    } else if (lua_type(L, 5) != LUA_TSTRING ||
               !is_dns_subdomain(lua_tostring(L, 5)) ||
               strchr(lua_tostring(L, 5), '.') || lua_rawlen(L, 5) > 63) {
        fail(L, st, SCRIPT_TEST_EINVALID,
             "metadata.namespace: Invalid value: a lowercase RFC 1123 label "
             "must consist of lower case alphanumeric characters or '-', "
             "and must start and end with an alphanumeric character");
    }
    return 0;
}

/*
 * Protected: [st, objects, status, ds] -> [out]: YAML: the list of the
 * rendered objects, then the DittoServer with only its identity and the
 * status; JSON: {"objects": [...], "status": that DittoServer}.
 */
static int p_output(lua_State *L)
{
    struct st *st = lua_touserdata(L, 1);
    lua_createtable(L, 0, 4); /* 5: the status document */
    codec_mark(L, 5, CODEC_OBJECT);
    lua_pushliteral(L, DS_API_VERSION);
    lua_setfield(L, 5, "apiVersion");
    lua_pushliteral(L, DS_KIND);
    lua_setfield(L, 5, "kind");
    lua_createtable(L, 0, 2);
    codec_mark(L, -1, CODEC_OBJECT);
    lua_getfield(L, 4, "metadata");
    lua_getfield(L, -1, "name");
    lua_setfield(L, -3, "name");
    lua_getfield(L, -1, "namespace");
    lua_setfield(L, -3, "namespace");
    lua_pop(L, 1);
    lua_setfield(L, 5, "metadata");
    lua_pushvalue(L, 3);
    lua_setfield(L, 5, "status");
    if (st->o->json) {
        lua_createtable(L, 0, 2);
        codec_mark(L, -1, CODEC_OBJECT);
        lua_pushvalue(L, 5);
        lua_setfield(L, -2, "status");
        lua_pushvalue(L, 2);
        lua_setfield(L, -2, "objects");
        return 1;
    }
    lua_rawseti(L, 2, (lua_Integer)lua_rawlen(L, 2) + 1);
    lua_settop(L, 2);
    return 1;
}

/* Runs f protected with st and `nargs` values from the top; on failure
 * writes the message into errs and returns the exit code. */
static int call(lua_State *L, lua_CFunction f, struct st *st, int nargs,
                int nresults, struct dbuf *errs)
{
    lua_pushcfunction(L, f);
    lua_pushlightuserdata(L, st);
    lua_rotate(L, -(nargs + 2), 2); /* [f, st, args...] */
    st->code = 0;
    if (lua_pcall(L, nargs + 1, nresults, 0) == LUA_OK)
        return 0;
    const char *msg = lua_tostring(L, -1);
    dbuf_addf(errs, "%s\n", msg && st->code ? msg : "out of memory");
    lua_pop(L, 1);
    return st->code ? st->code : SCRIPT_TEST_EINPUT;
}

/* Appends every line of `lines` to errs with a prefix. */
static void add_lines(struct dbuf *errs, const char *prefix,
                      const struct dbuf *lines)
{
    const char *p = dbuf_ptr(lines);
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        dbuf_addf(errs, "%s%.*s\n", prefix, (int)n, p);
        p += n + (nl ? 1 : 0);
    }
}

static int first_char(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n')
            return s[i];
    return 0;
}

/* Pushes the documents of s as one list: a JSON object (a list of one) or
 * list, else a YAML stream. Returns 0 or SCRIPT_TEST_EINPUT (in errs). */
static int decode_docs(lua_State *L, const char *s, size_t len,
                       const char *display, struct dbuf *errs)
{
    char cerr[256];
    int rc, c = first_char(s, len);
    if (c == '{' || c == '[') {
        rc = json_push(L, s, len, NULL, cerr, sizeof(cerr));
        if (rc == 0 && c == '{') {
            lua_createtable(L, 1, 0);
            lua_insert(L, -2);
            lua_rawseti(L, -2, 1);
        }
    } else {
        rc = yaml_push_all(L, s, len, NULL, cerr, sizeof(cerr));
    }
    if (rc != 0) {
        dbuf_addf(errs, "%s: %s\n", display, cerr);
        return SCRIPT_TEST_EINPUT;
    }
    return 0;
}

/* read_input into `buf` (emptied afterwards), then decode_docs. */
static int read_docs(lua_State *L, const char *file, struct dbuf *buf,
                     struct dbuf *errs)
{
    if (read_input(file, buf, errs) != 0)
        return SCRIPT_TEST_EINPUT;
    int rc = decode_docs(L, dbuf_ptr(buf), dbuf_len(buf),
                         strcmp(file, "-") ? file : "<stdin>", errs);
    dbuf_free(buf);
    return rc;
}

int script_test_read_docs(lua_State *L, const char *file, struct dbuf *errs)
{
    struct dbuf buf;
    dbuf_init(&buf, SCRIPT_TEST_MAX_INPUT);
    return read_docs(L, file, &buf, errs);
}

int script_test_run(const struct script_test_options *o, struct dbuf *out,
                    struct dbuf *errs)
{
    int code = SCRIPT_TEST_EINPUT;
    struct st st = {o, strcmp(o->file, "-") ? o->file : "<stdin>", 0};
    struct dbuf input, ds_json, obs_json, msgs, err;
    struct policy_output po;
    struct policy_set *ps = NULL;
    char cerr[256];
    int rc;
    dbuf_init(&input, SCRIPT_TEST_MAX_INPUT);
    dbuf_init(&ds_json, SCRIPT_TEST_MAX_INPUT);
    dbuf_init(&obs_json, SCRIPT_TEST_MAX_INPUT);
    dbuf_init(&msgs, (size_t)1 << 20);
    dbuf_init(&err, (size_t)1 << 20);
    policy_output_init(&po);
    dbuf_reset(out);
    lua_State *L = luaL_newstate();
    if (L == NULL) {
        dbuf_adds(errs, "out of memory\n");
        goto done;
    }

    /* 1. Read and decode: a JSON object or list, else a YAML stream. */
    if (o->input != NULL)
        rc = decode_docs(L, o->input, o->input_len, st.display, errs);
    else
        rc = read_docs(L, o->file, &input, errs);
    if (rc != 0)
        goto done;
    dbuf_free(&input);
    code = call(L, p_docs, &st, 1, 2, errs); /* [ds, observed] */
    if (code)
        goto done;
    lua_pushvalue(L, 1);
    code = call(L, p_metadata, &st, 1, 0, errs);
    if (code)
        goto done;

    /* 2. The apiserver: prune, default, validate. */
    if (crd_push_embedded_schema(L, &err) != CRD_OK) { /* 3: schema */
        dbuf_addf(errs, "%s\n", dbuf_ptr(&err));
        code = SCRIPT_TEST_EPOLICY;
        goto done;
    }
    code = SCRIPT_TEST_EINPUT;
    int nw = crd_default(L, 3, 1, &msgs);
    if (nw < 0) {
        dbuf_adds(errs, "out of memory\n");
        goto done;
    }
    add_lines(errs, "Warning: ", &msgs);
    dbuf_reset(&msgs);
    int ne = crd_validate(L, 3, 1, "", &msgs);
    if (ne != 0) {
        if (ne < 0)
            dbuf_adds(errs, "out of memory\n");
        add_lines(errs, "", &msgs);
        code = ne < 0 ? SCRIPT_TEST_EINPUT : SCRIPT_TEST_EINVALID;
        goto done;
    }
    if (json_encode(L, 1, &ds_json, cerr, sizeof(cerr)) != 0 ||
        json_encode(L, 2, &obs_json, cerr, sizeof(cerr)) != 0) {
        dbuf_addf(errs, "%s: %s\n", st.display, cerr);
        goto done;
    }

    /* 3. The policy. */
    code = SCRIPT_TEST_EPOLICY;
    if (policy_set_load(o->policies_dir, &ps, &err) != POLICY_OK) {
        dbuf_addf(errs, "%s\n", dbuf_ptr(&err));
        goto done;
    }
    struct policy_input in = {
        .ds_json = dbuf_ptr(&ds_json),
        .ds_len = dbuf_len(&ds_json),
        .observed_json = dbuf_ptr(&obs_json),
        .observed_len = dbuf_len(&obs_json),
        .cluster_domain = o->cluster_domain,
    };
    rc = policy_eval(ps, &o->limits, &in, &po, &err);
    if (rc < 0) {
        dbuf_addf(errs, "%s\n", dbuf_ptr(&err));
        goto done;
    }
    add_lines(errs, "", &po.errors);
    add_lines(errs, "Warning: ", &po.warnings);
    if (rc == POLICY_INVALID) {
        code = SCRIPT_TEST_EINVALID;
        goto done;
    }

    /* 4. The status must pass the CRD's status schema, as the apiserver
     * would check the status patch. */
    if (json_push(L, dbuf_ptr(&po.objects), dbuf_len(&po.objects), NULL, cerr,
                  sizeof(cerr)) != 0 || /* 4 */
        json_push(L, dbuf_ptr(&po.status), dbuf_len(&po.status), NULL, cerr,
                  sizeof(cerr)) != 0) { /* 5 */
        dbuf_addf(errs, "policy output: %s\n", cerr);
        goto done;
    }
    lua_getfield(L, 3, "properties");
    lua_getfield(L, -1, "status"); /* 7 */
    dbuf_reset(&msgs);
    ne = crd_validate(L, 7, 5, "status", &msgs);
    if (ne != 0) {
        dbuf_adds(errs, "status() returned a status the CRD rejects:\n");
        add_lines(errs, "  ", &msgs);
        goto done;
    }
    lua_settop(L, 5);

    /* 5. Print: objects, then the status document. */
    lua_pushvalue(L, 1); /* [ds, obs, schema, objects, status, ds] */
    code = call(L, p_output, &st, 3, 1, errs); /* [ds, obs, schema, docs] */
    if (code)
        goto done;
    code = SCRIPT_TEST_EPOLICY;
    if (o->json) {
        rc = json_encode(L, -1, out, cerr, sizeof(cerr));
        if (rc == 0)
            rc = dbuf_addc(out, '\n');
    } else {
        rc = yaml_encode_all(L, -1, out, cerr, sizeof(cerr));
    }
    if (rc != 0) {
        dbuf_addf(errs, "output: %s\n", rc < 0 ? cerr : "too large");
        goto done;
    }
    code = SCRIPT_TEST_OK;

done:
    if (code != SCRIPT_TEST_OK)
        dbuf_free(out);
    if (L)
        lua_close(L);
    policy_set_free(ps);
    policy_output_free(&po);
    dbuf_free(&input);
    dbuf_free(&ds_json);
    dbuf_free(&obs_json);
    dbuf_free(&msgs);
    dbuf_free(&err);
    return code;
}
