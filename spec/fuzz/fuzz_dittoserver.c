/*
 * fuzz_dittoserver: random DittoServers through `--script-test`'s whole
 * path. The input is a stream of choices; a generator walks the embedded
 * CRD's schema (spec) and builds a DittoServer from them: which optional
 * fields are present, enum values, strings and integers from pools of
 * valid, boundary and hostile values (names that refer to each other, so
 * that shares meet their stores), now and then a value of the wrong type.
 * Mutating choices rather than YAML text reaches the policies' logic
 * instead of the YAML parser's errors. The object goes as JSON through
 * script_check.h (its properties: documented exit codes, no policy failure
 * on an accepted spec, decodable and deterministic output).
 */
#include "crd.h"
#include "script_check.h"

static const char GEN[] =
    "local schema, bytes, array_mt, object_mt, null, json = ...\n"
    "local pos = 0\n"
    "local function b()\n"
    "  pos = pos + 1\n"
    "  return bytes:byte(pos) or 0\n"
    "end\n"
    "local function pick(t) return t[b() % #t + 1] end\n"
    "local NAMES = { 'meta', 'content', 'cache', 'badger-metadata',\n"
    "  's3-content', 'fs', 'default', 'x' }\n"
    "local STRINGS = { '', 'a', '/export', '/', '/data/metadata', '1Gi',\n"
    "  '10Gi', '0', '-1Gi', '500m', '1.5', '1e3', "
    "'ghcr.io/marmos91/dittofs:v1',\n"
    "  'standard', 'ClusterIP', 'NodePort', 'LoadBalancer', 'badger', 's3',\n"
    "  'memory', 'filesystem', 'anonymous', 'unix', '10.0.0.0/8', '*',\n"
    "  '0755', 'eu-north-1', 'bucket', 'true', 'null', '5s', 'x y\\tz',\n"
    "  'a\\nb', 'caf\\u{e9}', ('n'):rep(70), '${HOME}', '\"quoted\"',\n"
    "  '{{ .Values }}', '--- x' }\n"
    "local INTS = { 0, 1, 2, 3, -1, 100, 1000, 2049, 9090, 65535, 65536,\n"
    "  2147483647, -2147483648, 4294967296, math.maxinteger }\n"
    "local GOOD_INTS = { 0, 1, 2, 3, 100, 493, 2049, 4, 8, 511 }\n"
    "local QUANTITIES = { '1Gi', '10Gi', '500Mi', '100m', '1', '2', '0.5',\n"
    "  '1e3', '1G', '64Mi' }\n"
    "local POOLS = {\n"
    "  metadataSize = { '1Gi', '10Gi', '500Mi', '1Ti' },\n"
    "  contentSize = { '1Gi', '100Gi', '64Mi' },\n"
    "  image = { 'ghcr.io/marmos91/dittofs:latest', 'dittofs:v1',\n"
    "    'registry.local:5000/d@sha256:' .. ('a'):rep(64) },\n"
    "  storageClassName = { 'standard', 'fast', 'local-path' },\n"
    "  exportPath = { '/export', '/s3', '/data', '/a/b' },\n"
    "  mode = { '0755', '0777', '0700', '755' },\n"
    "  interval = { '5s', '1m', '100ms' }, flushTimeout = { '30s', '1m' },\n"
    "  allowedClients = { '10.0.0.0/8', '192.168.1.1', '*' },\n"
    "  deniedClients = { '10.0.0.1', '172.16.0.0/12' },\n"
    "  dumpAllowedClients = { '127.0.0.1', '10.0.0.0/8' },\n"
    "  path = { '/data/metadata', '/data/content', '/cache' },\n"
    "  bucket = { 'dittofs-bucket', 'b' }, region = { 'eu-north-1' },\n"
    "  accessKeyIDKey = { 'access_key_id' },\n"
    "  secretAccessKeyKey = { 'secret_access_key' },\n"
    "}\n"
    "local QUANTITY_FIELDS = { maxSize = 1, maxFileSize = 1, chunkSize = 1,\n"
    "  cpu = 1, memory = 1 }\n"
    "local WRONG = { 's', 7, 1.5, true, null }\n"
    "local function sorted_keys(t)\n"
    "  local k = {}\n"
    "  for name in pairs(t) do k[#k + 1] = name end\n"
    "  table.sort(k)\n"
    "  return k\n"
    "end\n"
    "local function is_required(node, name)\n"
    "  for _, r in ipairs(node.required or {}) do\n"
    "    if r == name then return true end\n"
    "  end\n"
    "  return false\n"
    "end\n"
    "local gen\n"
    "local function gen_string(name)\n"
    "  if b() % 16 == 0 then return pick(STRINGS) end\n"
    "  if name == 'name' or name:find('Store$') or name == 'cache' then\n"
    "    return pick(NAMES)\n"
    "  end\n"
    "  if POOLS[name] then return pick(POOLS[name]) end\n"
    "  if QUANTITY_FIELDS[name] then return pick(QUANTITIES) end\n"
    "  return pick(STRINGS)\n"
    "end\n"
    "function gen(node, name, depth)\n"
    "  if b() % 64 == 0 or depth > 12 then\n"
    "    local w = pick(WRONG)\n"
    "    if w == 's' then return setmetatable({}, object_mt) end\n"
    "    return w\n"
    "  end\n"
    "  if node.enum and b() % 8 ~= 0 then return pick(node.enum) end\n"
    "  if node['x-kubernetes-int-or-string'] then\n"
    "    if b() % 4 == 0 then return pick(GOOD_INTS) end\n"
    "    return gen_string(name)\n"
    "  end\n"
    "  local t = node.type\n"
    "  if t == 'object' then\n"
    "    local o = setmetatable({}, object_mt)\n"
    "    for _, k in ipairs(sorted_keys(node.properties or {})) do\n"
    "      local c = b()\n"
    "      if (is_required(node, k) and c % 16 ~= 0) or c % 3 == 0 then\n"
    "        o[k] = gen(node.properties[k], k, depth + 1)\n"
    "      end\n"
    "    end\n"
    "    local ap = node.additionalProperties\n"
    "    if type(ap) == 'table' or "
    "node['x-kubernetes-preserve-unknown-fields']\n"
    "    then\n"
    "      for _ = 1, b() % 4 do\n"
    "        local k = pick({ 'path', 'bucket', 'region', 'endpoint', 'cpu',\n"
    "          'memory', 'x' })\n"
    "        if type(ap) == 'table' then\n"
    "          o[k] = gen(ap, k, depth + 1)\n"
    "        else\n"
    "          o[k] = pick(STRINGS)\n"
    "        end\n"
    "      end\n"
    "    end\n"
    "    return o\n"
    "  elseif t == 'array' then\n"
    "    local a = setmetatable({}, array_mt)\n"
    "    for i = 1, b() % 4 do a[i] = gen(node.items or {}, name, depth + 1) "
    "end\n"
    "    return a\n"
    "  elseif t == 'string' then\n"
    "    return gen_string(name)\n"
    "  elseif t == 'integer' then\n"
    "    if b() % 8 == 0 then return pick(INTS) end\n"
    "    return pick(GOOD_INTS)\n"
    "  elseif t == 'number' then\n"
    "    return pick({ 0, 0.5, -1, 1e300 })\n"
    "  elseif t == 'boolean' then\n"
    "    return b() % 2 == 1\n"
    "  end\n"
    "  return pick(STRINGS)\n"
    "end\n"
    "local ds = setmetatable({\n"
    "  apiVersion = 'dittofs.dittofs.com/v1alpha1',\n"
    "  kind = 'DittoServer',\n"
    "  metadata = setmetatable({ name = pick({ 'ds', 'a', 'my-server',\n"
    "    ('d'):rep(b() % 4 == 0 and 63 or 20) }),\n"
    "    namespace = pick({ 'default', 'ns' }) }, object_mt),\n"
    "  spec = gen(schema.properties.spec, 'spec', 0),\n"
    "}, object_mt)\n"
    "return json(ds)\n";

/* json(value) -> string, for the generator. */
static int l_json(lua_State *L)
{
    char err[256];
    struct dbuf b;
    dbuf_init(&b, (size_t)16 << 20);
    int rc = json_encode(L, 1, &b, err, sizeof(err));
    if (rc != CODEC_OK) {
        dbuf_free(&b);
        return luaL_error(L, "json: %s", err);
    }
    lua_pushlstring(L, dbuf_ptr(&b), dbuf_len(&b));
    dbuf_free(&b);
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fresh;
    lua_State *L = fuzz_lua_kept(&fresh);
    if (fresh) {
        /* kept across inputs: [schema, generator] */
        struct dbuf msg;
        dbuf_init(&msg, 1 << 20);
        FUZZ_CHECK(crd_push_embedded_schema(L, &msg) == CRD_OK,
                   "embedded CRD: %s", dbuf_ptr(&msg));
        dbuf_free(&msg);
        FUZZ_CHECK(luaL_loadbuffer(L, GEN, sizeof(GEN) - 1, "=gen") == LUA_OK,
                   "generator: %s", lua_tostring(L, -1));
    }
    lua_pushvalue(L, 2);
    lua_pushvalue(L, 1);
    lua_pushlstring(L, (const char *)data, size);
    codec_push_marks(L);
    codec_push_null(L);
    lua_pushcfunction(L, l_json);
    /* [schema, gen, gen, schema, bytes, array_mt, object_mt, null, json] */
    FUZZ_CHECK(lua_pcall(L, 6, 1, 0) == LUA_OK, "generator raised: %s",
               lua_tostring(L, -1));
    size_t len;
    const char *json = lua_tolstring(L, -1, &len);
    /* odd first bytes ask for JSON output */
    script_check((const uint8_t *)json, len, size > 0 && (data[0] & 1));
    fuzz_lua_done(L, 2);
    return 0;
}
