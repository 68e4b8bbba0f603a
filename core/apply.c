/*
 * apply: helpers around server-side apply. See apply.h for the contract.
 *
 * Quantities are parsed as apimachinery's ParseQuantity does (the same
 * grammar as lua/k8s/quantity.lua, its Lua port: both pass the vectors of
 * spec/c/fixtures/quantity_vectors.json) into a big decimal: sign,
 * a digit string without leading or trailing zeros, and a power of ten.
 * Binary suffixes multiply the digits by 1024 as many times as needed, so
 * the value stays exact; values finer than 1n round up, away from zero.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apply.h"
#include "text.h"

/* --- paths ---------------------------------------------------------------- */

int apply_path(const char *api_version, const char *kind, const char *ns,
               const char *name, struct dbuf *out)
{
    int i = kinds_find(api_version, kind);
    if (i < 0) {
        dbuf_addf(out, "unsupported kind %s %s (supported: ",
                  api_version ? api_version : "(none)", kind ? kind : "(none)");
        for (int k = 0; k < KINDS_N; k++)
            dbuf_addf(out, "%s%s %s", k ? ", " : "", kinds_table[k].api_version,
                      kinds_table[k].kind);
        dbuf_addc(out, ')');
        return -1;
    }
    return kinds_path(i, ns, name, out);
}

/* --- quantities ----------------------------------------------------------- */

/* Longest quantity text considered (apiserver values are short). */
#define QTY_MAX_INPUT 128
/* Digits after the suffix multiplications: input + 6 * 4 (1024^6 < 10^19). */
#define QTY_MAX_DIGITS (QTY_MAX_INPUT + 32)

struct qty {
    int sign;                    /* -1, 0, 1 */
    char digits[QTY_MAX_DIGITS]; /* no leading/trailing zeros; "" if 0 */
    size_t n;                    /* strlen(digits) */
    long long scale;             /* value = sign * digits * 10^scale */
};

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/*
 * apimachinery's parseQuantityString: splits "<sign><num>.<denom><suffix>"
 * (leading zeros of num dropped). Returns 0, or -1 on a bad format.
 */
static int qty_split(const char *s, size_t len, int *positive, const char **num,
                     size_t *num_len, const char **denom, size_t *denom_len,
                     const char **suffix)
{
    size_t pos = 0;
    *positive = 1;
    *num = "0";
    *num_len = 1;
    *denom = "";
    *denom_len = 0;
    *suffix = "";
    if (pos < len && (s[0] == '-' || s[0] == '+')) {
        *positive = s[0] == '+';
        pos++;
    }
    while (pos < len && s[pos] == '0')
        pos++;
    if (pos >= len)
        return 0;
    size_t start = pos;
    while (pos < len && is_digit(s[pos]))
        pos++;
    if (pos > start) {
        *num = s + start;
        *num_len = pos - start;
    }
    if (pos >= len)
        return 0;
    if (s[pos] == '.') {
        pos++;
        start = pos;
        while (pos < len && is_digit(s[pos]))
            pos++;
        *denom = s + start;
        *denom_len = pos - start;
        if (pos >= len)
            return 0;
    }
    *suffix = s + pos;
    while (pos < len && strchr("eEinumkKMGTP", s[pos]) != NULL)
        pos++;
    if (pos < len && (s[pos] == '-' || s[pos] == '+'))
        pos++;
    while (pos < len && is_digit(s[pos]))
        pos++;
    return pos >= len ? 0 : -1;
}

/*
 * The suffixer's interpret: sets *base (10 or 2) and *exp (a power of it).
 * Returns 0, or -1 for an unknown suffix.
 */
static int qty_suffix(const char *suffix, int *base, long long *exp)
{
    static const struct {
        const char *s;
        int base, exp;
    } table[] = {
        {"", 10, 0},   {"n", 10, -9}, {"u", 10, -6}, {"m", 10, -3},
        {"k", 10, 3},  {"M", 10, 6},  {"G", 10, 9},  {"T", 10, 12},
        {"P", 10, 15}, {"E", 10, 18}, {"Ki", 2, 10}, {"Mi", 2, 20},
        {"Gi", 2, 30}, {"Ti", 2, 40}, {"Pi", 2, 50}, {"Ei", 2, 60},
    };
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
        if (strcmp(suffix, table[i].s) == 0) {
            *base = table[i].base;
            *exp = table[i].exp;
            return 0;
        }
    }
    if (suffix[0] != 'e' && suffix[0] != 'E')
        return -1;
    /* strconv.ParseInt(suffix[1:], 10, 32) */
    const char *p = suffix + 1;
    int neg = 0;
    if (*p == '-' || *p == '+') {
        neg = *p == '-';
        p++;
    }
    if (*p == '\0')
        return -1;
    long long v = 0;
    for (; *p; p++) {
        if (!is_digit(*p))
            return -1;
        v = v * 10 + (*p - '0');
        if (v > 2147483648LL)
            return -1;
    }
    if (neg)
        v = -v;
    if (v > 2147483647LL || v < -2147483648LL)
        return -1;
    *base = 10;
    *exp = v;
    return 0;
}

/* digits (q->n of them, most significant first) *= 1024. */
static int qty_mul_1024(struct qty *q)
{
    char out[QTY_MAX_DIGITS];
    size_t n = 0;
    unsigned carry = 0;
    for (size_t i = q->n; i-- > 0;) {
        unsigned v = (unsigned)(q->digits[i] - '0') * 1024 + carry;
        if (n + 1 >= sizeof(out))
            return -1;
        out[n++] = (char)('0' + v % 10);
        carry = v / 10;
    }
    while (carry > 0) {
        if (n + 1 >= sizeof(out))
            return -1;
        out[n++] = (char)('0' + carry % 10);
        carry /= 10;
    }
    for (size_t i = 0; i < n; i++)
        q->digits[i] = out[n - 1 - i];
    q->digits[n] = '\0';
    q->n = n;
    return 0;
}

/* Adds 1 to the digit string (which may be "") at its last digit. */
static int qty_increment(struct qty *q)
{
    size_t i = q->n;
    while (i > 0 && q->digits[i - 1] == '9') {
        q->digits[i - 1] = '0';
        i--;
    }
    if (i > 0) {
        q->digits[i - 1]++;
        return 0;
    }
    if (q->n + 2 > sizeof(q->digits))
        return -1;
    memmove(q->digits + 1, q->digits, q->n + 1);
    q->digits[0] = '1';
    q->n++;
    return 0;
}

/* Parses a quantity; returns 0 or -1 when s is not one. */
static int qty_parse(const char *s, struct qty *q)
{
    size_t len = strlen(s);
    int positive, base;
    const char *num, *denom, *suffix;
    size_t num_len, denom_len;
    long long exp;
    if (len == 0 || len > QTY_MAX_INPUT)
        return -1;
    if (qty_split(s, len, &positive, &num, &num_len, &denom, &denom_len,
                  &suffix) != 0)
        return -1;
    if (qty_suffix(suffix, &base, &exp) != 0)
        return -1;

    /* digits = num . denom without leading zeros */
    q->n = 0;
    for (size_t i = 0; i < num_len + denom_len; i++) {
        char c = i < num_len ? num[i] : denom[i - num_len];
        if (q->n == 0 && c == '0')
            continue;
        q->digits[q->n++] = c;
    }
    q->digits[q->n] = '\0';
    q->scale = -(long long)denom_len;
    if (q->n == 0) {
        q->sign = 0;
        q->scale = 0;
        return 0;
    }
    if (base == 10) {
        q->scale += exp;
    } else {
        for (long long i = 0; i < exp / 10; i++)
            if (qty_mul_1024(q) != 0)
                return -1;
    }
    q->sign = positive ? 1 : -1;

    /* Round up to the nanounit (inf.Dec Round(.., 9, RoundUp)). */
    if (q->scale < -9) {
        long long drop = -9 - q->scale;
        int nonzero = 0;
        size_t keep = drop >= (long long)q->n ? 0 : q->n - (size_t)drop;
        for (size_t i = keep; i < q->n; i++)
            nonzero |= q->digits[i] != '0';
        q->n = keep;
        q->digits[keep] = '\0';
        q->scale = -9;
        if (nonzero && qty_increment(q) != 0)
            return -1;
        size_t lead = 0;
        while (lead < q->n && q->digits[lead] == '0')
            lead++;
        memmove(q->digits, q->digits + lead, q->n - lead + 1);
        q->n -= lead;
        if (q->n == 0) {
            q->sign = 0;
            q->scale = 0;
            return 0;
        }
    }
    while (q->n > 0 && q->digits[q->n - 1] == '0') {
        q->digits[--q->n] = '\0';
        q->scale++;
    }
    return 0;
}

static int qty_compare(const struct qty *a, const struct qty *b)
{
    if (a->sign != b->sign)
        return a->sign < b->sign ? -1 : 1;
    if (a->sign == 0)
        return 0;
    /* magnitude: the position of the leading digit */
    long long ma = (long long)a->n + a->scale, mb = (long long)b->n + b->scale;
    int c = 0;
    if (ma != mb) {
        c = ma < mb ? -1 : 1;
    } else {
        size_t n = a->n > b->n ? a->n : b->n;
        for (size_t i = 0; i < n && c == 0; i++) {
            char da = i < a->n ? a->digits[i] : '0';
            char db = i < b->n ? b->digits[i] : '0';
            if (da != db)
                c = da < db ? -1 : 1;
        }
    }
    return a->sign * c;
}

int apply_quantity_cmp(const char *a, const char *b, int *cmp)
{
    struct qty qa, qb;
    if (a == NULL || b == NULL || qty_parse(a, &qa) != 0 ||
        qty_parse(b, &qb) != 0)
        return -1;
    *cmp = qty_compare(&qa, &qb);
    return 0;
}

/* --- comparison ----------------------------------------------------------- */

#define WALK_MAX_PATH 512

struct walk {
    char path[WALK_MAX_PATH];
    size_t len;
    struct dbuf *why;
};

/* Keys whose value is a map of strings (or quantities): an entry is data,
 * not an omitempty field. */
static const char *const map_keys[] = {
    "labels",     "annotations", "data",        "binaryData",
    "stringData", "selector",    "matchLabels", "nodeSelector",
    "limits",     "requests",    NULL,
};

/* Keys whose map values are quantities. */
static const char *const quantity_maps[] = {
    "limits", "requests", "capacity", "allocatable", "hard", "overhead", NULL,
};

static int in_list(const char *s, const char *const *list)
{
    if (s == NULL)
        return 0;
    for (; *list; list++)
        if (strcmp(s, *list) == 0)
            return 1;
    return 0;
}

/* Appends ".key" (or "[key]" when it holds '.' or '/'), or "[text]". The
 * path is cut when too long (it is for logs). Returns the old length. */
static size_t push_key(struct walk *w, const char *key, int bracket)
{
    size_t old = w->len;
    if (!bracket && strpbrk(key, "./") != NULL)
        bracket = 1;
    int n;
    size_t room = sizeof(w->path) - w->len;
    if (bracket)
        n = snprintf(w->path + w->len, room, "[%s]", key);
    else
        n = snprintf(w->path + w->len, room, "%s%s", w->len ? "." : "", key);
    if (n < 0 || (size_t)n >= room)
        w->len = sizeof(w->path) - 1;
    else
        w->len += (size_t)n;
    return old;
}

static void pop_key(struct walk *w, size_t old)
{
    w->len = old;
    w->path[old] = '\0';
}

/* Records the current path as the difference; returns 0. */
static int differ(struct walk *w)
{
    if (w->why != NULL) {
        dbuf_reset(w->why);
        dbuf_adds(w->why, w->len ? w->path : "(root)");
    }
    return 0;
}

/* A zero value: null, false, 0, "", [], and {} or an object of zero
 * values (a map with entries is never zero). */
static int is_zero(const cJSON *v, const char *key)
{
    if (cJSON_IsNull(v) || cJSON_IsFalse(v))
        return 1;
    if (cJSON_IsNumber(v))
        return v->valuedouble == 0;
    if (cJSON_IsString(v))
        return v->valuestring[0] == '\0';
    if (cJSON_IsArray(v))
        return v->child == NULL;
    if (cJSON_IsObject(v)) {
        if (v->child != NULL && in_list(key, map_keys))
            return 0;
        for (const cJSON *c = v->child; c; c = c->next)
            if (!is_zero(c, c->string))
                return 0;
        return 1;
    }
    return 0;
}

/* A quantity as text (a JSON number is written as a decimal). */
static const char *quantity_text(const cJSON *v, char *buf, size_t len)
{
    if (cJSON_IsString(v))
        return v->valuestring;
    if (cJSON_IsNumber(v)) {
        /* the shortest text that reads back as the same double, as the
         * apiserver's decoder sees the JSON number; "%g" may write
         * "1e+20", which the quantity grammar takes too */
        for (int prec = 15; prec <= 17; prec++) {
            snprintf(buf, len, "%.*g", prec, v->valuedouble);
            if (strtod(buf, NULL) == v->valuedouble)
                break;
        }
        return buf;
    }
    return NULL;
}

static int match(struct walk *w, const cJSON *d, const cJSON *l,
                 const char *key, const char *parent, int depth);

/* The match key of an element: its `mk` string, or metadata.name for
 * "name". NULL when it has none. */
static const char *element_key(const cJSON *e, const char *mk)
{
    if (!cJSON_IsObject(e))
        return NULL;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(e, mk);
    if (cJSON_IsString(v))
        return v->valuestring;
    if (strcmp(mk, "name") == 0) {
        v = cJSON_GetObjectItemCaseSensitive(e, "metadata");
        v = cJSON_GetObjectItemCaseSensitive(v, "name");
        if (cJSON_IsString(v))
            return v->valuestring;
    }
    return NULL;
}

static int match_array(struct walk *w, const cJSON *d, const cJSON *l,
                       const char *key, int depth)
{
    if (!cJSON_IsArray(l))
        return differ(w);
    if (d->child == NULL)
        return l->child == NULL ? 1 : differ(w);
    const char *mk = "name";
    if (key != NULL && strcmp(key, "ownerReferences") == 0)
        mk = "uid";
    else if (key != NULL && strcmp(key, "conditions") == 0)
        mk = "type";
    int keyed = 1;
    for (const cJSON *e = d->child; e && keyed; e = e->next)
        keyed = element_key(e, mk) != NULL;

    if (!keyed) {
        if (cJSON_GetArraySize(d) != cJSON_GetArraySize(l))
            return differ(w);
        const cJSON *le = l->child;
        char idx[24];
        int i = 0;
        for (const cJSON *e = d->child; e; e = e->next, le = le->next) {
            snprintf(idx, sizeof(idx), "%d", i++);
            size_t old = push_key(w, idx, 1);
            int ok = match(w, e, le, NULL, key, depth + 1);
            pop_key(w, old);
            if (!ok)
                return 0;
        }
        return 1;
    }
    /* By key, in any order: server-side apply merges a keyed list without
     * reordering what is there (a Service port whose number changed comes
     * back last), so an order test would apply forever. */
    for (const cJSON *e = d->child; e; e = e->next) {
        const char *k = element_key(e, mk);
        const cJSON *le = l->child;
        while (le != NULL) {
            const char *lk = element_key(le, mk);
            if (lk != NULL && strcmp(lk, k) == 0)
                break;
            le = le->next;
        }
        size_t old = push_key(w, k, 1);
        int ok = le != NULL ? match(w, e, le, NULL, key, depth + 1) : differ(w);
        pop_key(w, old);
        if (!ok)
            return 0;
    }
    return 1;
}

/* A Secret's stringData: the apiserver folds it into data (base64). */
static int match_string_data(struct walk *w, const cJSON *d,
                             const cJSON *live_obj)
{
    const cJSON *sd = cJSON_GetObjectItemCaseSensitive(live_obj, "stringData");
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(live_obj, "data");
    if (!cJSON_IsObject(d))
        return match(w, d, sd, "stringData", NULL, 1);
    for (const cJSON *e = d->child; e; e = e->next) {
        size_t old = push_key(w, e->string, 1);
        const cJSON *l = cJSON_GetObjectItemCaseSensitive(sd, e->string);
        int ok = 0;
        if (cJSON_IsString(e) && cJSON_IsString(l))
            ok = strcmp(e->valuestring, l->valuestring) == 0;
        l = cJSON_GetObjectItemCaseSensitive(data, e->string);
        if (!ok && cJSON_IsString(e) && cJSON_IsString(l)) {
            char *b =
                text_base64_encode(e->valuestring, strlen(e->valuestring));
            ok = b != NULL && strcmp(b, l->valuestring) == 0;
            free(b);
        }
        if (!ok)
            differ(w);
        pop_key(w, old);
        if (!ok)
            return 0;
    }
    return 1;
}

/*
 * d (desired, never NULL) against l (live, NULL when absent); `key` is d's
 * key in its object (NULL in an array), `parent` the key of that object.
 */
static int match(struct walk *w, const cJSON *d, const cJSON *l,
                 const char *key, const char *parent, int depth)
{
    int in_map = in_list(parent, map_keys);
    /* the apiserver writes some unset fields as null (creationTimestamp) */
    if (cJSON_IsNull(l) && !cJSON_IsNull(d))
        l = NULL;
    if (l == NULL)
        return !in_map && is_zero(d, key) ? 1 : differ(w);
    if (cJSON_IsNull(d))
        return cJSON_IsNull(l) ? 1 : differ(w);

    if ((cJSON_IsString(d) || cJSON_IsNumber(d)) &&
        (in_list(parent, quantity_maps) ||
         (key != NULL && strcmp(key, "sizeLimit") == 0))) {
        char bd[40], bl[40];
        const char *qd = quantity_text(d, bd, sizeof(bd));
        const char *ql = quantity_text(l, bl, sizeof(bl));
        int cmp;
        if (qd && ql && apply_quantity_cmp(qd, ql, &cmp) == 0)
            return cmp == 0 ? 1 : differ(w);
    }
    /* Integers beyond 2^53 are raw nodes with their digits
     * (jscan_cjson_parse): equal only to the same digits. */
    if (cJSON_IsRaw(d) || cJSON_IsRaw(l))
        return cJSON_IsRaw(d) && cJSON_IsRaw(l) &&
                       strcmp(d->valuestring, l->valuestring) == 0
                   ? 1
                   : differ(w);
    if (cJSON_IsNumber(d))
        return cJSON_IsNumber(l) && d->valuedouble == l->valuedouble
                   ? 1
                   : differ(w);
    if (cJSON_IsTrue(d))
        return cJSON_IsTrue(l) ? 1 : differ(w);
    if (cJSON_IsFalse(d))
        return cJSON_IsFalse(l) ? 1 : differ(w);
    if (cJSON_IsString(d))
        return cJSON_IsString(l) && strcmp(d->valuestring, l->valuestring) == 0
                   ? 1
                   : differ(w);
    if (cJSON_IsArray(d))
        return match_array(w, d, l, key, depth);
    if (!cJSON_IsObject(d) || !cJSON_IsObject(l))
        return differ(w);

    int secret = 0;
    if (depth == 0) {
        const cJSON *kind = cJSON_GetObjectItemCaseSensitive(d, "kind");
        secret =
            cJSON_IsString(kind) && strcmp(kind->valuestring, "Secret") == 0;
    }
    int is_map = in_list(key, map_keys);
    for (const cJSON *e = d->child; e; e = e->next) {
        size_t old = push_key(w, e->string, is_map);
        int ok;
        if (secret && strcmp(e->string, "stringData") == 0)
            ok = match_string_data(w, e, l);
        else
            ok = match(w, e, cJSON_GetObjectItemCaseSensitive(l, e->string),
                       e->string, key, depth + 1);
        pop_key(w, old);
        if (!ok)
            return 0;
    }
    return 1;
}

int apply_is_subset(const cJSON *desired, const cJSON *live, struct dbuf *why)
{
    struct walk w;
    w.len = 0;
    w.path[0] = '\0';
    w.why = why;
    if (why != NULL)
        dbuf_reset(why);
    if (desired == NULL || live == NULL)
        return differ(&w);
    return match(&w, desired, live, NULL, NULL, 0);
}

/* --- status --------------------------------------------------------------- */

static const char *string_of(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

int apply_stamp_conditions(cJSON *desired_status, const cJSON *live_status,
                           const char *now_rfc3339)
{
    if (!cJSON_IsObject(desired_status) || now_rfc3339 == NULL)
        return -1;
    cJSON *conds =
        cJSON_GetObjectItemCaseSensitive(desired_status, "conditions");
    const cJSON *live =
        cJSON_GetObjectItemCaseSensitive(live_status, "conditions");
    if (!cJSON_IsArray(conds))
        return 0;
    for (cJSON *c = conds->child; c; c = c->next) {
        if (!cJSON_IsObject(c))
            continue;
        const char *type = string_of(c, "type");
        const char *status = string_of(c, "status");
        const char *when = now_rfc3339;
        const cJSON *lc = cJSON_IsArray(live) ? live->child : NULL;
        for (; type != NULL && lc != NULL; lc = lc->next) {
            const char *lt = string_of(lc, "type");
            if (lt != NULL && strcmp(lt, type) == 0)
                break;
        }
        if (lc != NULL && status != NULL) {
            const char *ls = string_of(lc, "status");
            const char *lt = string_of(lc, "lastTransitionTime");
            if (ls != NULL && strcmp(ls, status) == 0 && lt != NULL)
                when = lt;
        }
        cJSON *t = cJSON_CreateString(when);
        if (t == NULL)
            return -1;
        if (cJSON_GetObjectItemCaseSensitive(c, "lastTransitionTime") != NULL) {
            if (!cJSON_ReplaceItemInObjectCaseSensitive(c, "lastTransitionTime",
                                                        t)) {
                cJSON_Delete(t);
                return -1;
            }
        } else if (!cJSON_AddItemToObject(c, "lastTransitionTime", t)) {
            cJSON_Delete(t);
            return -1;
        }
    }
    return 0;
}

/* --- shaping rendered objects and statuses ------------------------------ */

int apply_owned_by(const cJSON *j, const char *uid)
{
    const cJSON *refs = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(j, "metadata"), "ownerReferences");
    int yes = 0;
    const cJSON *ref;
    cJSON_ArrayForEach(ref, refs)
    {
        cJSON *u = cJSON_GetObjectItemCaseSensitive(ref, "uid");
        cJSON *ctl = cJSON_GetObjectItemCaseSensitive(ref, "controller");
        if (cJSON_IsString(u) && strcmp(u->valuestring, uid) == 0 &&
            cJSON_IsTrue(ctl))
            yes = 1;
    }
    return yes;
}

int apply_observed_json(const struct apply_child *v, size_t n, struct dbuf *out)
{
    dbuf_addc(out, '{');
    for (int k = 0; k < KINDS_NCHILD; k++) {
        dbuf_addf(out, "%s\"%s\":{", k ? "," : "", kinds_table[k].kind);
        int first = 1;
        for (size_t i = 0; i < n; i++) {
            if (v[i].kind != k)
                continue;
            if (!first)
                dbuf_addc(out, ',');
            text_json_quote(out, v[i].name, strlen(v[i].name));
            dbuf_addc(out, ':');
            dbuf_add(out, v[i].json, v[i].len);
            first = 0;
        }
        dbuf_addc(out, '}');
    }
    /* The error is sticky: the last append reports any failure. */
    return dbuf_addc(out, '}');
}

int apply_rendered_kind(const cJSON *o, const char **name)
{
    const char *av =
        cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "apiVersion"));
    const char *kd =
        cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "kind"));
    const char *nm = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(o, "metadata"), "name"));
    int k = kinds_find(av, kd);
    if (k < 0 || kinds_table[k].role != KIND_RENDERED || nm == NULL) {
        *name = NULL;
        return -1;
    }
    *name = nm;
    return k;
}

/* Sets obj[key] to the string `value` (an object; a member of that name
 * is replaced). Returns 0, or -1 out of memory (obj unchanged). */
static int set_string(cJSON *obj, const char *key, const char *value)
{
    cJSON *v = cJSON_CreateString(value);
    if (v == NULL)
        return -1;
    int ok = cJSON_GetObjectItemCaseSensitive(obj, key) != NULL
                 ? cJSON_ReplaceItemInObjectCaseSensitive(obj, key, v)
                 : cJSON_AddItemToObject(obj, key, v);
    if (!ok)
        cJSON_Delete(v); /* not linked in: still ours */
    return ok ? 0 : -1;
}

int apply_set_annotation(cJSON *o, const char *key, const char *value)
{
    cJSON *md = cJSON_GetObjectItemCaseSensitive(o, "metadata");
    cJSON *ann = cJSON_GetObjectItemCaseSensitive(md, "annotations");
    if (!cJSON_IsObject(ann)) {
        cJSON_DeleteItemFromObjectCaseSensitive(md, "annotations");
        ann = cJSON_AddObjectToObject(md, "annotations");
        if (ann == NULL)
            return -1;
    }
    return set_string(ann, key, value);
}

int apply_set_precondition(cJSON *o, const char *uid, const char *rv)
{
    cJSON *md = cJSON_GetObjectItemCaseSensitive(o, "metadata");
    if (!cJSON_IsObject(md))
        return -1;
    if ((uid != NULL && uid[0] && set_string(md, "uid", uid) != 0) ||
        (rv != NULL && rv[0] && set_string(md, "resourceVersion", rv) != 0))
        return -1;
    return 0;
}

int apply_annotate_hash(cJSON *o, uint64_t *hash)
{
    char *text = cJSON_PrintUnformatted(o);
    if (text == NULL)
        return -1;
    uint64_t h = text_fnv1a64(TEXT_FNV1A64_INIT, text, strlen(text));
    free(text);
    if (hash != NULL)
        *hash = h;
    char hex[17];
    snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)h);
    return apply_set_annotation(o, APPLY_HASH_ANNOTATION, hex);
}

int apply_keep_live_claims(cJSON *o, const cJSON *live)
{
    const cJSON *lv = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(live, "spec"), "volumeClaimTemplates");
    cJSON *spec = cJSON_GetObjectItemCaseSensitive(o, "spec");
    if (!cJSON_IsArray(lv) || !cJSON_IsObject(spec))
        return -1;
    cJSON *copy = cJSON_Duplicate(lv, 1);
    if (copy == NULL)
        return -1;
    cJSON *t;
    cJSON_ArrayForEach(t, copy)
    {
        cJSON_DeleteItemFromObjectCaseSensitive(t, "status");
        cJSON_DeleteItemFromObjectCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(t, "metadata"),
            "creationTimestamp");
    }
    if (cJSON_GetObjectItemCaseSensitive(spec, "volumeClaimTemplates"))
        return cJSON_ReplaceItemInObjectCaseSensitive(
                   spec, "volumeClaimTemplates", copy)
                   ? 0
                   : (cJSON_Delete(copy), -1);
    return cJSON_AddItemToObject(spec, "volumeClaimTemplates", copy)
               ? 0
               : (cJSON_Delete(copy), -1);
}

int apply_condition_is(const cJSON *status, const char *type, const char *value)
{
    const cJSON *conds = cJSON_GetObjectItemCaseSensitive(status, "conditions");
    const cJSON *cd;
    cJSON_ArrayForEach(cd, conds)
    {
        const char *t = string_of(cd, "type");
        const char *v = string_of(cd, "status");
        if (t && v && strcmp(t, type) == 0 && strcmp(v, value) == 0)
            return 1;
    }
    return 0;
}

cJSON *apply_status_body(const char *name, const char *ns)
{
    cJSON *o = cJSON_CreateObject();
    int ok =
        o != NULL &&
        cJSON_AddStringToObject(o, "apiVersion", KINDS_OWNER_API_VERSION) &&
        cJSON_AddStringToObject(o, "kind", KINDS_OWNER_KIND);
    cJSON *md = ok ? cJSON_AddObjectToObject(o, "metadata") : NULL;
    if (md == NULL || !cJSON_AddStringToObject(md, "name", name) ||
        !cJSON_AddStringToObject(md, "namespace", ns)) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

int apply_set_reconciled(cJSON *status, const char *reason, const char *message,
                         double generation)
{
    if (!cJSON_IsObject(status))
        return -1;
    char msg[APPLY_MAX_MESSAGE + 4];
    size_t len = strlen(message);
    size_t n = text_utf8_cut(message, len, APPLY_MAX_MESSAGE);
    memcpy(msg, message, n);
    strcpy(msg + n, len > n ? "..." : "");
    /* The condition is whole before it enters the status, so a failed
     * allocation leaves the status as it was. */
    cJSON *cond = cJSON_CreateObject();
    if (cond == NULL ||
        cJSON_AddStringToObject(cond, "type", "Reconciled") == NULL ||
        cJSON_AddStringToObject(cond, "status", "False") == NULL ||
        cJSON_AddStringToObject(cond, "reason", reason) == NULL ||
        cJSON_AddStringToObject(cond, "message", msg) == NULL ||
        (generation > 0 && cJSON_AddNumberToObject(cond, "observedGeneration",
                                                   generation) == NULL)) {
        cJSON_Delete(cond);
        return -1;
    }
    cJSON *conds = cJSON_GetObjectItemCaseSensitive(status, "conditions");
    if (!cJSON_IsArray(conds)) {
        cJSON *fresh = cJSON_CreateArray();
        if (fresh == NULL || !cJSON_AddItemToArray(fresh, cond)) {
            cJSON_Delete(fresh);
            cJSON_Delete(cond);
            return -1;
        }
        int ok = conds != NULL
                     ? cJSON_ReplaceItemInObjectCaseSensitive(
                           status, "conditions", fresh)
                     : cJSON_AddItemToObject(status, "conditions", fresh);
        if (!ok)
            cJSON_Delete(fresh); /* and cond with it */
        return ok ? 0 : -1;
    }
    int i = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, conds)
    {
        const char *t = string_of(c, "type");
        if (t != NULL && strcmp(t, "Reconciled") == 0)
            break;
        i++;
    }
    int ok = c != NULL ? cJSON_ReplaceItemInArray(conds, i, cond)
                       : cJSON_AddItemToArray(conds, cond);
    if (!ok)
        cJSON_Delete(cond);
    return ok ? 0 : -1;
}

int apply_status_equal(const cJSON *a, const cJSON *b)
{
    if (a == NULL || b == NULL)
        return a == b;
    return apply_is_subset(a, b, NULL) && apply_is_subset(b, a, NULL);
}

void apply_rfc3339(long long unix_s, char out[32])
{
    text_rfc3339(unix_s, -1, out);
}
