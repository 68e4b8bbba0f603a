#!/usr/bin/env bash
# spec/integration/cel_test.sh: the CRD's CEL rules (x-kubernetes-validations)
# against a real kube-apiserver (deploy/local/cluster.sh; run through
# spec/integration/with-cluster, which exports KUBECONFIG). The samples are
# spec/cel/*.yaml; spec/cel_check.sh (unit) checks that --script-test gives
# each bad one exactly the error on its first line ("# error: FIELD:
# MESSAGE") and that the CRD has a rule with that field and message.
#
# Kubernetes 1.28+ (the rules use fieldPath):
#   1. the CRD, as written, applies server-side and is Established, with its
#      rules;
#   2. each bad sample is refused by `kubectl apply`, the apiserver naming
#      FIELD with MESSAGE ("FIELD: Invalid value: [VALUE: ]MESSAGE");
#   3. spec/cel/good.yaml (every rule's near miss) is accepted.
# Older (1.20: no CEL):
#   1. the CRD applies in the form crd_install.sh gives it (without the
#      rules) and is Established, and the file as written is refused as
#      1.20 refuses it (so the stripping is needed, not a habit);
#   2. each bad sample is admitted: only validate() refuses it there (the
#      operator then reports Reconciled=False, InvalidSpec); but bucket: ""
#      1.20 refuses on its own (its schema check reads "" in a string map
#      as null);
#   3. good.yaml is accepted.
# Everything happens in a fresh namespace, deleted on exit; the CRD stays.
# Output: TAP lines and a summary; exit status 1 when any check failed.
set -uo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tap.sh
. "$root/spec/integration/tap.sh"
# shellcheck source=crd_install.sh
. "$root/spec/integration/crd_install.sh"
KUBECTL=${DITTOFS_KUBECTL:-kubectl}
: "${KUBECONFIG:?run through spec/integration/with-cluster}"
ns="cel-test-$$"
tmp=$(mktemp -d)

cleanup() {
  "$KUBECTL" delete namespace "$ns" --wait=false >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT

minor=$(crd_server_minor)
if crd_has_cel; then
  cel=1
  echo "# Kubernetes 1.$minor: the apiserver enforces the CEL rules"
else
  cel=0
  echo "# Kubernetes 1.$minor has no CEL (1.25+, fieldPath 1.28+): the rules" \
    "are validate()'s alone; checking that the CRD installs without them" \
    "and that the bad samples are admitted"
fi

# --- 1. the CRD -------------------------------------------------------------
if ((cel)); then
  check "CRD with its CEL rules applies server-side" \
    "$KUBECTL" apply --server-side --force-conflicts \
    -f "$root/crd/dittoserver.yaml"
else
  if out=$("$KUBECTL" apply --server-side --force-conflicts --dry-run=server \
    -f "$root/crd/dittoserver.yaml" 2>&1); then
    not_ok "1.$minor refuses the CRD as written (x-kubernetes-validations)" \
      "accepted: crd_install.sh's stripping is no longer needed here"
  else
    ok "1.$minor refuses the CRD as written (x-kubernetes-validations)"
    echo "$out" | head -3 | sed 's/^/#   /'
  fi
  check "CRD without its CEL rules applies server-side (crd_install)" \
    crd_install --force-conflicts
fi
check "CRD becomes Established" \
  "$KUBECTL" wait --for condition=established --timeout=60s \
  crd/dittoservers.dittofs.dittofs.com
rules=$("$KUBECTL" get crd dittoservers.dittofs.dittofs.com -o json |
  python3 -c '
import json, sys
n = 0
def walk(v):
    global n
    if isinstance(v, dict):
        n += len(v.get("x-kubernetes-validations") or [])
        for x in v.values():
            walk(x)
    elif isinstance(v, list):
        for x in v:
            walk(x)
walk(json.load(sys.stdin)["spec"]["versions"])
print(n)')
want_rules=$(python3 -c '
import sys, yaml
n = 0
def walk(v):
    global n
    if isinstance(v, dict):
        n += len(v.get("x-kubernetes-validations") or [])
        for x in v.values():
            walk(x)
    elif isinstance(v, list):
        for x in v:
            walk(x)
walk(yaml.safe_load(open(sys.argv[1]))["spec"]["versions"])
print(n)' "$root/crd/dittoserver.yaml")
if ((cel)); then
  expect_eq "the installed CRD has the file's $want_rules CEL rules" \
    "$want_rules" "$rules"
else
  expect_eq "the installed CRD has no CEL rules" "0" "$rules"
fi
check "namespace $ns created" "$KUBECTL" create namespace "$ns"

# A new CRD (or new rules) is served a moment after Established: wait until
# the first bad sample is judged as the rules say.
probe() {
  local out
  out=$("$KUBECTL" -n "$ns" apply --server-side --dry-run=server \
    -f "$root/spec/cel/nfs-port.yaml" 2>&1)
  if ((cel)); then
    [[ $out == *"9090 is the metrics port"* ]]
  else
    [[ $out == *"serverside-applied"* ]]
  fi
}
check "the rules are served" wait_for 30 probe

# --- 2. the bad samples -----------------------------------------------------
# refused_with FIELD MESSAGE OUTPUT: a line of OUTPUT names FIELD with
# MESSAGE, as "FIELD: Invalid value: MESSAGE" (the rule is on an object) or
# "FIELD: Invalid value: VALUE: MESSAGE" (on a scalar; VALUE is the
# apiserver's rendering of it).
refused_with() {
  local line
  while IFS= read -r line; do
    case $line in
      *"$1: Invalid value: $2" | *"$1: Invalid value: "*": $2") return 0 ;;
    esac
  done <<<"$3"
  return 1
}
for f in "$root"/spec/cel/*.yaml; do
  name=spec/cel/$(basename "$f")
  first=$(head -1 "$f")
  [[ $first == "# error: "* ]] || continue
  want=${first#"# error: "}
  field=${want%%: *}
  message=${want#*: }
  out=$("$KUBECTL" -n "$ns" apply --server-side -f "$f" 2>&1)
  rc=$?
  if ((cel)); then
    if ((rc == 0)); then
      not_ok "$name is refused: $want" "accepted"
    elif refused_with "$field" "$message" "$out"; then
      ok "$name is refused: $want"
    else
      not_ok "$name is refused: $want" "got: $out"
    fi
  else
    if ((rc == 0)); then
      ok "$name is admitted (no CEL on 1.$minor)"
    elif [[ $out == *'.config.bucket in body must be of type string: "null"'* ]]
    then
      # 1.20's own schema check reads an empty string in a string map as
      # null and refuses it (bucket: ""), CEL or not
      ok "$name is refused by 1.$minor's schema (\"\" in a map read as null)"
    else
      not_ok "$name is admitted (no CEL on 1.$minor)" "$out"
    fi
  fi
done

# --- 3. the near misses -----------------------------------------------------
check "spec/cel/good.yaml (each rule's near miss) is accepted" \
  "$KUBECTL" -n "$ns" apply --server-side -f "$root/spec/cel/good.yaml"

tap_summary
