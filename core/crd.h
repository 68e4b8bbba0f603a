/*
 * crd: what the kube-apiserver does to a custom resource on create, from
 * the CRD's structural schema, so that --script-test sees the object the
 * operator will see. Works on Lua values in the codec representation
 * (codec.h) in a trusted host state (never inside the sandbox):
 *   crd_default: prunes unknown fields (each one a warning, like kubectl's)
 *                and nulls of non-nullable fields, then applies defaults
 *                (only where the parent exists, recursively into defaults);
 *   crd_validate: required, type, enum, pattern, minimum/maximum,
 *                minLength/maxLength, minItems/maxItems, list-type map/set
 *                uniqueness, with the apiserver's messages, e.g.
 *   spec.nfsPort: Invalid value: 70000: spec.nfsPort in body should be less
 *   than or equal to 65535
 * Patterns are POSIX extended regular expressions (Go's RE2 agrees on the
 * patterns of our CRD). Uses lyaml, codec, embedded, dbuf.
 */
#ifndef DITTOFS_CRD_H
#define DITTOFS_CRD_H

#include <stddef.h>

#include <lua.h>

#include "dbuf.h"

#define CRD_EMBEDDED "crd/dittoserver.yaml"
#define CRD_VERSION "v1alpha1"

enum {
    CRD_OK = 0,
    CRD_EINPUT = -1, /* the CRD text is not a CRD with that version */
    CRD_ENOMEM = -2,
};

/*
 * Pushes spec.versions[name == version].schema.openAPIV3Schema of the CRD
 * YAML text. Returns CRD_OK, or a negative code with the message in err
 * (nothing pushed). Never raises.
 */
int crd_push_schema(lua_State *L, const char *yaml, size_t len,
                    const char *version, struct dbuf *err);

/* The same for the embedded CRD_EMBEDDED, version CRD_VERSION. */
int crd_push_embedded_schema(lua_State *L, struct dbuf *err);

/*
 * Prunes and defaults the object at obj_idx in place (schema at
 * schema_idx). At the root, metadata is left alone (the apiserver handles
 * it separately). Every pruned unknown field appends a line
 * `unknown field "spec.foo"` to warnings. Returns the number of warnings,
 * or CRD_ENOMEM. Never raises.
 */
int crd_default(lua_State *L, int schema_idx, int obj_idx,
                struct dbuf *warnings);

/*
 * Validates the value at obj_idx against the schema at schema_idx; `path`
 * names the value in messages ("" for the root object, "status" for a
 * subtree). Appends one line per violation to errors, in a deterministic
 * order (required fields, then properties sorted by name). Returns the
 * number of violations, or CRD_ENOMEM. Never raises.
 */
int crd_validate(lua_State *L, int schema_idx, int obj_idx, const char *path,
                 struct dbuf *errors);

/*
 * codec.crd_schema(): a fresh copy of the embedded CRD's openAPIV3Schema
 * (CRD_VERSION) without its descriptions, with the codec's markers: the
 * one schema the policies read (dittoserver_schema.SPEC and .STATUS), so
 * that crd/dittoserver.yaml is its only source. The schema is decoded once
 * per Lua state (kept in the registry, out of the policies' reach); every
 * call copies it, so what one caller changes no other sees. Raises when
 * the embedded CRD is missing or cannot be decoded (a build error), and on
 * memory errors.
 */
int crd_l_schema(lua_State *L);

/*
 * codec.crd_default(value, node): the apiserver's structural defaulting
 * (crd_default's walk) of `value` in place against the schema node `node`,
 * for the policies: a default applies where its key is absent or null and
 * its parent object exists, recursively into what it set; unlike
 * crd_default nothing is pruned (unknown fields and nulls stay). `node` is
 * a table (from crd_schema), or a string naming a field of the embedded
 * CRD by its dotted path ("spec", "spec.config"; "" is the root): then
 * that field's node in the state's own decoded schema is used in place,
 * without the copy crd_schema makes (it is only read: defaults are copied
 * into the value). Returns value (anything but a table, or a node that is
 * neither, comes back untouched). Raises for a path the schema lacks, on
 * memory errors and nesting too deep.
 */
int crd_l_default(lua_State *L);

/*
 * codec.crd_validate(value, node [, path]): crd_validate's checks of
 * `value` against the schema node `node` (a table from crd_schema, or of
 * the same shape: a custom policy's PARAMETERS; or a field path, as in
 * crd_default), for the policies, with the apiserver's messages
 * ("spec.replicas: Invalid value: -1: spec.replicas in body should be
 * greater than or equal to 0"). As in crd_default for the policies, a null
 * counts as absent. Returns two codec arrays of strings: the violations,
 * and the unknown fields (`unknown field "spec.x"`, as crd_default words
 * the ones it prunes) of objects that do not preserve them. Raises on
 * memory errors. Each state keeps the patterns it met compiled (in its
 * registry, at most 64; crd.c).
 */
int crd_l_validate(lua_State *L);

/* Adds crd_schema, crd_default and crd_validate to the codec module table
 * at the top of the stack. */
void crd_register(lua_State *L);

#endif
