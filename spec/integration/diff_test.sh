#!/usr/bin/env bash
# spec/integration/diff_test.sh: `dittofs-operator --script-test FILE --diff`
# against a real kube-apiserver (run through spec/integration/with-cluster).
#
#   1. a DittoServer that is not in the cluster: exit 1, said so;
#   2. a new DittoServer, nothing rendered yet: every child "to create"
#      (--- /dev/null), exit 8, and nothing written (the audit log holds no
#      write without dryRun=All; no child exists afterwards);
#   3. after the operator has converged it (then stopped): no difference,
#      exit 0, empty diff;
#   4. a spec change in FILE (memory limit): exactly the StatefulSet's
#      lines change, exit 8, the live objects untouched;
#   5. a policy change (--policies: a label on every object): every child
#      changes by that label;
#   6. an owned child no longer rendered: "to delete" (+++ /dev/null).
# Output: TAP lines, then "N passed, N failed".
set -uo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tap.sh
. "$root/spec/integration/tap.sh"
# shellcheck source=crd_install.sh
. "$root/spec/integration/crd_install.sh"
KUBECTL=${DITTOFS_KUBECTL:-kubectl}
BIN=${DITTOFS_OPERATOR:-$root/build/dittofs-operator}
STANDIN=${DITTOFS_STANDIN_IMAGE:-dittofs-local/dittofs-standin:0.1}
: "${KUBECONFIG:?run through spec/integration/with-cluster}"
: "${DITTOFS_AUDIT_LOG:?run through spec/integration/with-cluster}"
ns="diff-test-$$"
ds=dittofs-sample
tmp=$(mktemp -d)
op_pid=

cleanup() {
  [ -n "$op_pid" ] && kill -9 "$op_pid" 2>/dev/null
  "$KUBECTL" delete namespace "$ns" --wait=false >/dev/null 2>&1 || true
  if [ "${failed:-0}" -gt 0 ]; then
    for f in "$tmp"/*.log "$tmp"/*.err; do
      [ -f "$f" ] || continue
      echo "# --- last lines of $f"
      tail -n 30 "$f" | sed 's/^/#   /'
    done
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
k() { "$KUBECTL" -n "$ns" "$@"; }

# diff_run NAME FILE [ARGS...]: runs --diff; stdout in $tmp/NAME.out,
# stderr in $tmp/NAME.err, the exit status in $rc.
diff_run() {
  local name=$1 file=$2
  shift 2
  "$BIN" --script-test "$file" --diff --namespace "$ns" "$@" \
    >"$tmp/$name.out" 2>"$tmp/$name.err"
  rc=$?
}

# writes_since MARK: the audit entries since MARK that change something in
# $ns without dryRun=All (a dry run never reaches etcd). The cluster's own
# controllers ("system:" users) are not the diff: the endpointslice
# controller updates the headless Service's slices whenever it likes (seen
# on 1.20 in CI).
writes_since() {
  audit_since "$1" | jq -c --arg ns "$ns" 'select(.stage == "ResponseComplete"
    and ((.user.username | startswith("system:")) | not)
    and (.verb | test("create|update|patch|delete"))
    and .objectRef.namespace == $ns
    and ((.requestURI | test("dryRun=All")) | not))
    | [.verb, .objectRef.resource, .objectRef.name]'
}

# the CRD as this apiserver takes it (without its CEL rules below 1.28)
crd_install --force-conflicts >/dev/null
"$KUBECTL" wait --for condition=established --timeout=60s \
  crd/dittoservers.dittofs.dittofs.com >/dev/null
"$KUBECTL" create namespace "$ns" >/dev/null

# The README sample with the stand-in image, no resource requests, and no
# replicas: no pod, so the status is stable between the operator's write
# and the review.
"$KUBECTL" create --dry-run=client -o json -f "$root/deploy/samples/dittoserver.yaml" |
  jq --arg img "$STANDIN" '.spec.image = $img | .spec.replicas = 0
    | del(.spec.resources.requests) | del(.metadata.namespace)' >"$tmp/cr.json"

# --- 1. not in the cluster --------------------------------------------------
diff_run missing "$tmp/cr.json"
expect_eq "a DittoServer not in the cluster: exit 1" 1 "$rc"
check "... and it says so" grep -q "DittoServer $ns/$ds does not exist in the cluster" "$tmp/missing.err"

# --- 2. a new DittoServer: everything to create, nothing written -------------
k apply -f "$tmp/cr.json" >/dev/null
mark=$(audit_mark)
diff_run new "$tmp/cr.json"
expect_eq "nothing rendered yet: exit 8" 8 "$rc"
for obj in "ConfigMap/$ns/$ds-config" "Service/$ns/$ds" "Service/$ns/$ds-headless" \
  "StatefulSet/$ns/$ds"; do
  check "$obj to create (--- /dev/null, +++ dry-run/$obj)" \
    grep -qxF -- "+++ dry-run/$obj" "$tmp/new.out"
done
expect_eq "four objects to create, the status changes" \
  "0 to change, 4 to create, 0 to delete; the status changes" "$(tail -n1 "$tmp/new.err")"
check "the created StatefulSet shows the stand-in image" \
  grep -qF "+        image: $STANDIN" "$tmp/new.out"
check "the status shows phase Stopped" grep -qxF "+phase: Stopped" "$tmp/new.out"

expect_eq "no write without dryRun=All in the audit log" "" "$(writes_since "$mark")"
expect_eq "no child exists" "" \
  "$(k get configmaps,services,statefulsets -l "dittofs.dittofs.com/server=$ds" -o name)"
expect_eq "the DittoServer has no status" "" "$(k get ditto "$ds" -o jsonpath='{.status}')"

# --- 3. converged: no difference --------------------------------------------
"$BIN" --kubeconfig "$KUBECONFIG" --namespace "$ns" --metrics-bind-address 127.0.0.1:0 \
  --health-probe-bind-address 127.0.0.1:0 >"$tmp/op.log" 2>&1 &
op_pid=$!
converged() {
  [ "$(k get ditto "$ds" -o jsonpath='{.status.conditions[?(@.type=="Reconciled")].reason}')" = ChildrenUpToDate ]
}
check "the operator converges the DittoServer" wait_for 60 converged
kill -TERM "$op_pid"
wait "$op_pid" 2>/dev/null
op_pid=
diff_run same "$tmp/cr.json"
expect_eq "converged: exit 0" 0 "$rc"
expect_eq "converged: an empty diff" "" "$(cat "$tmp/same.out")"
expect_eq "converged: nothing to do" \
  "0 to change, 0 to create, 0 to delete; the status unchanged" "$(tail -n1 "$tmp/same.err")"

# --- 4. a spec change in FILE ----------------------------------------------
rv=$(k get statefulset "$ds" -o jsonpath='{.metadata.resourceVersion}')
jq '.spec.resources.limits.memory = "8Gi"' "$tmp/cr.json" >"$tmp/cr8.json"
mark=$(audit_mark)
diff_run mem "$tmp/cr8.json"
expect_eq "a memory limit change: exit 8" 8 "$rc"
check "the StatefulSet's limit: -4Gi" grep -qE -- "^- +memory: 4Gi$" "$tmp/mem.out"
check "the StatefulSet's limit: +8Gi" grep -qE -- "^\+ +memory: 8Gi$" "$tmp/mem.out"
expect_eq "and its applied-hash annotation: the only other change" 2 \
  "$(grep -cE '^[-+] +dittofs.dittofs.com/applied-hash: ' "$tmp/mem.out")"
expect_eq "two lines out, two in" "2 2" \
  "$(grep -c '^-[^-]' "$tmp/mem.out") $(grep -c '^+[^+]' "$tmp/mem.out")"
expect_eq "only the StatefulSet changes" "+++ dry-run/StatefulSet/$ns/$ds" \
  "$(grep '^+++ ' "$tmp/mem.out")"
expect_eq "one object to change" \
  "1 to change, 0 to create, 0 to delete; the status unchanged" "$(tail -n1 "$tmp/mem.err")"
expect_eq "no write without dryRun=All" "" "$(writes_since "$mark")"
expect_eq "the live StatefulSet is untouched" "$rv" \
  "$(k get statefulset "$ds" -o jsonpath='{.metadata.resourceVersion}')"
expect_eq "the live DittoServer keeps its spec" "4Gi" \
  "$(k get ditto "$ds" -o jsonpath='{.spec.resources.limits.memory}')"

# --- 5. a policy change -------------------------------------------------------
mkdir -p "$tmp/policies"
cat >"$tmp/policies/dittoserver.lua" <<'EOF'
-- The default policy, plus a team label on every object it renders.
local default = require("dittoserver.default")
local p = default.new()
local render = p.render
function p.render(ds, ctx, observed)
  local objects = render(ds, ctx, observed)
  for _, o in ipairs(objects) do
    o.metadata.labels = o.metadata.labels or {}
    o.metadata.labels["example.com/team"] = "storage"
  end
  return objects
end
return p
EOF
diff_run policy "$tmp/cr.json" --policies "$tmp/policies"
expect_eq "a label added by a policy: exit 8" 8 "$rc"
expect_eq "every child changes by that label" 4 \
  "$(grep -cxF '+    example.com/team: storage' "$tmp/policy.out")"
expect_eq "four objects to change" \
  "4 to change, 0 to create, 0 to delete; the status unchanged" "$(tail -n1 "$tmp/policy.err")"

# --- 6. an owned child no longer rendered -------------------------------------
uid=$(k get ditto "$ds" -o jsonpath='{.metadata.uid}')
k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: ConfigMap
metadata:
  name: $ds-stale
  labels:
    app.kubernetes.io/managed-by: dittofs-operator
    dittofs.dittofs.com/server: $ds
  ownerReferences:
  - apiVersion: dittofs.dittofs.com/v1alpha1
    kind: DittoServer
    name: $ds
    uid: $uid
    controller: true
data: {a: b}
EOF
diff_run prune "$tmp/cr.json"
expect_eq "an owned child not rendered: exit 8" 8 "$rc"
check "it is to delete (+++ /dev/null)" \
  sh -c "grep -A1 -xF -- '--- live/ConfigMap/$ns/$ds-stale' '$tmp/prune.out' | grep -qxF '+++ /dev/null'"
expect_eq "one to delete" \
  "0 to change, 0 to create, 1 to delete; the status unchanged" "$(tail -n1 "$tmp/prune.err")"
check "the stale ConfigMap still exists (read-only)" k get configmap "$ds-stale"

tap_summary
