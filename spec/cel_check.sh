#!/usr/bin/env bash
# The CRD's CEL rules against the default policy's validate(), without a
# cluster (spec/integration/cel_test.sh checks the same samples against a
# real apiserver).
#
# crd/dittoserver.yaml carries x-kubernetes-validations rules whose
# `message` is the text validate() gives for the same field; spec/cel/*.yaml
# are bad DittoServers, each breaking one rule and saying on its first line
# the one error it must get ("# error: FIELD: MESSAGE"; good.yaml says
# "# valid: ..." and must pass). Checks:
#   1. every rule is rule + message (+ fieldPath), and names a field: the
#      rule's schema node plus its fieldPath, written as the apiserver writes
#      it (list items [i], map keys [key]);
#   2. `dittofs-operator --script-test` of each bad sample fails with exactly
#      its "# error:" line and nothing else; good.yaml passes;
#   3. each sample's field (indices as [i]) and message are those of a CRD
#      rule: the apiserver and validate() say the same;
#   4. every rule has a sample.
# The binary: env DITTOFS_OPERATOR, else build/dittofs-operator. Output: TAP
# lines; exit status 1 when a check failed.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
operator=${DITTOFS_OPERATOR:-$root/build/dittofs-operator}
[[ -x $operator ]] || { echo "not ok 1 no operator binary at $operator" >&2; exit 1; }

exec python3 - "$root" "$operator" <<'EOF'
import glob
import os
import re
import subprocess
import sys

import yaml

root, operator = sys.argv[1], sys.argv[2]
failed = 0
n = 0


def check(cond, name, detail=""):
    global failed, n
    n += 1
    if cond:
        print("ok %d - %s" % (n, name))
    else:
        failed += 1
        print("not ok %d - %s" % (n, name))
        for line in detail.splitlines():
            print("#   " + line)


def field_of(fieldpath, node, base):
    """The apiserver's name of fieldPath under node (path base)."""
    path = base
    for seg in fieldpath.split(".")[1:]:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", seg):
            return None
        props = node.get("properties") or {}
        if seg in props:
            node, path = props[seg], path + "." + seg
        elif isinstance(node.get("additionalProperties"), dict):
            node, path = node["additionalProperties"], path + "[" + seg + "]"
        else:
            return None
    return path


# 1. The rules, each with the field it names.
with open(os.path.join(root, "crd/dittoserver.yaml")) as f:
    crd = yaml.safe_load(f)
schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
rules = []  # (field, message, rule)


def walk(node, path):
    for r in node.get("x-kubernetes-validations") or []:
        extra = set(r) - {"rule", "message", "fieldPath"}
        field = field_of(r.get("fieldPath", ""), node, path) \
            if r.get("fieldPath", "").startswith(".") or "fieldPath" not in r \
            else None
        ok = not extra and isinstance(r.get("message"), str) \
            and r["message"] and field is not None
        check(ok, "rule %r at %s is rule + message + a resolvable fieldPath"
              % (r.get("rule"), path), "keys %s, fieldPath %r"
              % (sorted(r), r.get("fieldPath")))
        if ok:
            rules.append((field, r["message"], r["rule"]))
    for k, sub in sorted((node.get("properties") or {}).items()):
        walk(sub, path + "." + k if path else k)
    if isinstance(node.get("items"), dict):
        walk(node["items"], path + "[i]")
    if isinstance(node.get("additionalProperties"), dict):
        walk(node["additionalProperties"], path + "[key]")


walk(schema, "")
check(len(rules) > 0, "the CRD has CEL rules (%d)" % len(rules))

# 2-3. The samples through --script-test.
hit = set()
samples = sorted(glob.glob(os.path.join(root, "spec/cel/*.yaml")))
check(len(samples) > 1, "spec/cel has samples (%d)" % len(samples))
for path in samples:
    name = os.path.relpath(path, root)
    with open(path) as f:
        first = f.readline().rstrip("\n")
    p = subprocess.run([operator, "--script-test", path],
                       capture_output=True, text=True)
    if first.startswith("# valid: "):
        check(p.returncode == 0, "%s passes --script-test" % name,
              "exit %d\n%s" % (p.returncode, p.stderr))
        continue
    if not first.startswith("# error: "):
        check(False, "%s starts with '# error: FIELD: MESSAGE'" % name,
              first)
        continue
    want = first[len("# error: "):]
    got = p.stderr.rstrip("\n")
    check(p.returncode == 3 and got == want,
          "%s: --script-test gives exactly its error" % name,
          "exit %d (want 3)\nwant: %s\ngot:  %s" % (p.returncode, want, got))
    field, _, message = want.partition(": ")
    generic = re.sub(r"\[[0-9]+\]", "[i]", field)
    match = [r for r in rules if r[0] == generic and r[1] == message]
    same_field = [r for r in rules if r[0] == generic]
    check(len(match) == 1,
          "%s: the CRD has a rule on %s with validate()'s message"
          % (name, generic),
          "validate(): %s\nCRD rules on that field: %s"
          % (message, "; ".join("%r: %s" % (r[2], r[1])
                                 for r in same_field) or "none"))
    hit.update(r[:2] for r in match)

# 4. Every rule is covered.
for field, message, rule in rules:
    check((field, message) in hit, "rule on %s has a sample in spec/cel"
          % field, "rule %r: %s" % (rule, message))

print("# %d passed, %d failed" % (n - failed, failed))
sys.exit(1 if failed else 0)
EOF
