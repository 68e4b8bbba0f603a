#!/usr/bin/env bash
# spec/integration/reload_test.sh: custom policies reloaded live (issue 9
# section 3) on the local control plane (run through
# spec/integration/with-cluster). The operator runs under the
# ServiceAccount and RBAC of deploy/rbac/ with --policies on a directory
# that this script updates exactly as the kubelet's AtomicWriter updates a
# ConfigMap volume (cm_write below), and --policies-configmap naming a real
# ConfigMap that receives the Events.
#
#   1. an empty directory (the bundle's empty ConfigMap): the embedded
#      policies; three DittoServers converge;
#   2. a changed valid policy (a label on every object): noticed and
#      accepted, every StatefulSet and ConfigMap gets the label, a Normal
#      PolicyReloaded Event on the ConfigMap (with its uid), the metrics
#      dittofs_policy_reload_total{result="accepted"} and
#      dittofs_policy_info{hash} move;
#   3. a syntax error, a runtime error, an endless loop, a policy rendering
#      a Secret: each refused with no write at all (the apiserver's audit
#      log), a Warning PolicyRejected Event and a log line with file:line
#      (the timeout and the Secret: their message), result="rejected",
#      /readyz 200, the active set unchanged;
#   4. the same valid set again: nothing changes;
#   5. the directory emptied: back to the embedded set, the label removed.
# DITTOFS_TEST_NAMESPACE names the test namespace (default reload-test-PID).
# Output: one "ok N - ..." / "not ok N - ..." line per check, then a
# summary; exit status 1 when any check failed.
set -uo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tap.sh
. "$root/spec/integration/tap.sh"
# shellcheck source=crd_install.sh
. "$root/spec/integration/crd_install.sh"
# shellcheck source=configmap_volume.sh
. "$root/spec/integration/configmap_volume.sh"
KUBECTL=${DITTOFS_KUBECTL:-kubectl}
BIN=${DITTOFS_OPERATOR:-$root/build/dittofs-operator}
STANDIN=${DITTOFS_STANDIN_IMAGE:-dittofs-local/dittofs-standin:0.1}
: "${KUBECONFIG:?run through spec/integration/with-cluster}"
: "${DITTOFS_AUDIT_LOG:?run through spec/integration/with-cluster}"
ns=${DITTOFS_TEST_NAMESPACE:-reload-test-$$}
opns=dittofs-system
sa_user="system:serviceaccount:$opns:dittofs-operator"
cm=reload-policies
tmp=$(mktemp -d)
pol="$tmp/policies"
pids=()

cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
  wait 2>/dev/null
  "$KUBECTL" delete namespace "$ns" --wait=false >/dev/null 2>&1 || true
  if [ "${failed:-0}" -gt 0 ] && [ -f "$tmp/op.log" ]; then
    echo "# --- last lines of the operator's log"
    tail -n 40 "$tmp/op.log" | sed 's/^/#   /'
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

now_ms() { echo $(($(date +%s%N) / 1000000)); }

k() { "$KUBECTL" -n "$ns" "$@"; }
metrics() { curl -sf "http://127.0.0.1:$mport/metrics"; }
# reloads RESULT: dittofs_policy_reload_total{result=RESULT}
reloads() {
  metrics | sed -n "s/^dittofs_policy_reload_total{result=\"$1\"} //p"
}
# policy_info: "HASH ORIGIN" of the one dittofs_policy_info series
policy_info() {
  metrics | sed -n 's/^dittofs_policy_info{hash="\([0-9a-f]*\)",origin="\([^"]*\)"} 1$/\1 \2/p'
}
info_lines() { metrics | grep -c '^dittofs_policy_info{'; }
# labelled KIND N: N objects of KIND carry the test policy's label
labelled() {
  [ "$(k get "$1" -l 'example.com/policy=v2,app.kubernetes.io/managed-by=dittofs-operator' \
    -o name | wc -l)" = "$2" ]
}
# operator_writes MARK: mutating requests of the operator in $ns since
# MARK, but Events (the reload reports itself through them). Other tests
# may run operators under the same ServiceAccount at the same time: only
# this namespace counts (this operator watches nothing else).
operator_writes() {
  audit_since "$1" |
    jq -c "select(.user.username == \"$sa_user\" and
      .objectRef.namespace == \"$ns\" and
      (.verb | test(\"create|update|patch|delete\")) and
      .objectRef.resource != \"events\")" | wc -l
}
# events TYPE REASON: the messages of those Events on the policies ConfigMap
# (selected by its uid, as kubectl describe does)
events() {
  k get events --field-selector \
    "involvedObject.kind=ConfigMap,involvedObject.name=$cm,involvedObject.uid=$cm_uid,type=$1,reason=$2" \
    -o jsonpath='{range .items[*]}{.message}{"\n"}{end}'
}
# has_event TYPE REASON TEXT: such an Event's message contains TEXT
has_event() { events "$1" "$2" | grep -qF -- "$3"; }
# reloads_above RESULT N: dittofs_policy_reload_total{result=RESULT} > N
reloads_above() { [ "$(reloads "$1")" -gt "$2" ]; }
# quiet: the operator wrote nothing (Events aside) for 3 s
quiet() {
  local m
  m=$(audit_mark)
  sleep 3
  [ "$(operator_writes "$m")" = 0 ]
}

# --- the flags ---------------------------------------------------------------
bad_configmap() {
  local out rc
  out=$("$BIN" --policies-configmap "$1" --version 2>&1 >/dev/null)
  rc=$?
  [ "$rc" = 2 ] && grep -q "is not a ConfigMap name" <<<"$out" || { echo "rc=$rc: $out"; return 1; }
}
check "usage: --policies-configmap Bad_Name" bad_configmap Bad_Name
check "usage: --policies-configmap /name" bad_configmap /name
check "--policies-configmap ns/name and name are accepted" sh -c \
  "'$BIN' --policies-configmap ns-1/cm.v1 --version && DITTOFS_OPERATOR_POLICIES_CONFIGMAP=cm '$BIN' --version"
mkdir "$tmp/empty"
embedded=$("$BIN" --script-test "$root/deploy/samples/dittoserver.yaml" 2>&1)
check "--script-test with a policy directory without *.lua: the embedded policies" \
  sh -c "[ \"\$('$BIN' --script-test '$root/deploy/samples/dittoserver.yaml' --policies '$tmp/empty' 2>/dev/null)\" = \"\$1\" ]" _ "$embedded"

# --- setup: CRD, RBAC, the ServiceAccount's kubeconfig ---------------------
# the CRD as this apiserver takes it (without its CEL rules below 1.28)
check "CRD installed" crd_install --force-conflicts
"$KUBECTL" wait --for condition=established --timeout=60s \
  crd/dittoservers.dittofs.dittofs.com >/dev/null
check "RBAC of deploy/rbac installed" "$KUBECTL" apply --server-side \
  --force-conflicts -k "$root/deploy/rbac"
check "the ServiceAccount's kubeconfig" "$root/deploy/local/cluster.sh" \
  sa-kubeconfig "$opns" dittofs-operator "$tmp/sa.kubeconfig"
"$KUBECTL" create namespace "$ns" >/dev/null
check "the policies ConfigMap (it receives the Events)" \
  k create configmap "$cm"
cm_uid=$(k get configmap "$cm" -o jsonpath='{.metadata.uid}')

# --- 1. an empty directory: the embedded policies ----------------------------
mkdir "$pol"
cm_write "$pol"
"$BIN" --kubeconfig "$tmp/sa.kubeconfig" --namespace "$ns" \
  --policies "$pol" --policies-configmap "$ns/$cm" \
  --metrics-bind-address 127.0.0.1:0 --health-probe-bind-address 127.0.0.1:0 \
  --log-level debug >"$tmp/op.log" 2>&1 &
op=$!
pids+=("$op")
wait_for 10 grep -q 'health_port=' "$tmp/op.log"
mport=$(sed -n 's/.*metrics_port=\([0-9]*\).*/\1/p' "$tmp/op.log" | head -n1)
hport=$(sed -n 's/.*health_port=\([0-9]*\).*/\1/p' "$tmp/op.log" | head -n1)
check "/readyz 200 once the caches are synced" \
  wait_for 20 curl -sf "http://127.0.0.1:$hport/readyz"
check "an empty policy directory starts the embedded policies" \
  grep -q 'msg="no \*.lua in the policy directory' "$tmp/op.log"
read -r hash0 origin0 <<<"$(policy_info)"
expect_eq "dittofs_policy_info: origin embedded" "embedded" "$origin0"
expect_eq "dittofs_policy_reload_total: both results exported at 0" "0 0" \
  "$(reloads accepted) $(reloads rejected)"

for i in 1 2 3; do
  cat <<EOF
apiVersion: dittofs.dittofs.com/v1alpha1
kind: DittoServer
metadata:
  name: r-$i
spec:
  image: $STANDIN
  replicas: 0
  storage:
    metadataSize: 1Gi
---
EOF
done >"$tmp/ds.yaml"
k apply -f "$tmp/ds.yaml" >/dev/null
converged() {
  k get ditto -o json | jq -e '[.items[] | select(.status.observedGeneration == .metadata.generation and
    (.status.conditions[] | select(.type=="Reconciled") | .reason) == "ChildrenUpToDate")] | length == 3' >/dev/null
}
check "three DittoServers converge" wait_for 60 converged
check "no label of the test policy yet" labelled statefulsets 0

# --- 2. a changed valid policy -----------------------------------------------
mkdir "$tmp/v2" "$tmp/syntax" "$tmp/runtime" "$tmp/loop" "$tmp/secret"
cat >"$tmp/v2/dittoserver.lua" <<'EOF'
-- The default policy plus a label on every object it renders.
local policy = require("dittoserver.default").new()
local render = policy.render
function policy.render(ds, ctx)
  local objects = render(ds, ctx)
  for _, o in ipairs(objects) do
    o.metadata.labels = o.metadata.labels or {}
    o.metadata.labels["example.com/policy"] = "v2"
  end
  return objects
end
return policy
EOF
wait_for 30 quiet
cm_write "$pol" "$tmp/v2"
t0=$swapped_ms
check "the ..data swap is noticed and the set accepted" \
  wait_for 10 grep -q 'msg="policies reloaded' "$tmp/op.log"
check "every StatefulSet gets the new label" wait_for 20 labelled statefulsets 3
echo "# swap -> 3 StatefulSets relabelled: $(($(now_ms) - t0)) ms (kubectl polling included)"
check "every ConfigMap the policy renders too" labelled configmaps 3
check "and the Services" labelled services 6
read -r hash1 origin1 <<<"$(policy_info)"
check "dittofs_policy_info: a new hash ($hash0 -> $hash1)" \
  test -n "$hash1" -a "$hash1" != "$hash0"
expect_eq "dittofs_policy_info: origin the directory" "$pol" "$origin1"
expect_eq "dittofs_policy_info: one series" 1 "$(info_lines)"
expect_eq "dittofs_policy_reload_total{result=\"accepted\"} 1" 1 "$(reloads accepted)"
check "a Normal PolicyReloaded Event on the ConfigMap (by its uid), naming the new hash" \
  wait_for 10 has_event Normal PolicyReloaded "policies $hash1 from $pol replace $hash0"

# --- 3. refused sets: nothing written ---------------------------------------
printf '%s\n' 'local policy = require("dittoserver.default").new()' \
  'return = policy' >"$tmp/syntax/dittoserver.lua"
cat >"$tmp/runtime/dittoserver.lua" <<'EOF'
local policy = require("dittoserver.default").new()
function policy.render(ds)
  error("reload-test: cannot render " .. ds.metadata.name)
end
return policy
EOF
cat >"$tmp/loop/dittoserver.lua" <<'EOF'
local policy = require("dittoserver.default").new()
function policy.render()
  while true do end
end
return policy
EOF
cat >"$tmp/secret/dittoserver.lua" <<'EOF'
local policy = require("dittoserver.default").new()
local render = policy.render
function policy.render(ds, ctx)
  local objects = render(ds, ctx)
  objects[#objects + 1] = {
    apiVersion = "v1",
    kind = "Secret",
    metadata = { name = ds.metadata.name .. "-token" },
    stringData = { token = "x" },
  }
  return objects
end
return policy
EOF

# refused WHAT SRC WANT: swaps SRC in and checks the refusal (WANT: a fixed
# string of the message).
refused() {
  local what=$1 src=$2 want=$3 mark before
  wait_for 30 quiet
  mark=$(audit_mark)
  before=$(reloads rejected)
  cm_write "$pol" "$src"
  if wait_for 20 reloads_above rejected "$before"; then
    ok "$what: refused ($(($(now_ms) - swapped_ms)) ms after the swap)"
  else
    not_ok "$what: refused" "$(tail -n 5 "$tmp/op.log")"
  fi
  sleep 2 # what a wrongly accepted set would write, by now
  expect_eq "$what: no write at all (audit log; Events aside)" 0 \
    "$(operator_writes "$mark")"
  check "$what: the log line says why" \
    grep -qF "msg=\"policies refused: the active ones stay\" dir=$pol active=$hash1 error=\"$ns/r-" "$tmp/op.log"
  check "$what: ... with '$want'" last_refusal_has "$want"
  check "$what: a Warning PolicyRejected Event on the ConfigMap says it" \
    wait_for 10 has_event Warning PolicyRejected "$want"
  check "$what: /readyz stays 200" curl -sf "http://127.0.0.1:$hport/readyz"
  expect_eq "$what: the active set is unchanged" "$hash1 $pol" "$(policy_info)"
}
last_refusal_has() {
  grep 'msg="policies refused' "$tmp/op.log" | tail -n1 | grep -qF -- "$1"
}
# A syntax error is refused while loading (no DittoServer named).
syntax_refused() {
  local mark before
  wait_for 30 quiet
  mark=$(audit_mark)
  before=$(reloads rejected)
  cm_write "$pol" "$tmp/syntax"
  check "syntax error: refused" wait_for 20 reloads_above rejected "$before"
  sleep 2
  expect_eq "syntax error: no write at all" 0 "$(operator_writes "$mark")"
  local want="$pol/dittoserver.lua:2: unexpected symbol near '='"
  check "syntax error: the log line has file:line" grep -qF -- "$want" "$tmp/op.log"
  check "syntax error: a Warning PolicyRejected Event with file:line" \
    wait_for 10 has_event Warning PolicyRejected "$want"
  check "syntax error: /readyz stays 200" curl -sf "http://127.0.0.1:$hport/readyz"
  expect_eq "syntax error: the active set is unchanged" "$hash1 $pol" "$(policy_info)"
}
syntax_refused
refused "runtime error" "$tmp/runtime" "$pol/dittoserver.lua:3: reload-test: cannot render r-"
refused "endless loop" "$tmp/loop" "policy timeout after"
refused "a Secret rendered" "$tmp/secret" "v1 Secret"
expect_eq "dittofs_policy_reload_total{result=\"rejected\"} 4" 4 "$(reloads rejected)"
check "the operator is still running" kill -0 "$op"
check "the StatefulSets still carry the active set's label" labelled statefulsets 3

# --- 4. the active set again: nothing to do ---------------------------------
wait_for 30 quiet
mark=$(audit_mark)
cm_write "$pol" "$tmp/v2"
check "the same set again: noticed, nothing changes" \
  wait_for 10 grep -q 'msg="policy directory changed, policies did not"' "$tmp/op.log"
sleep 2
expect_eq "... and nothing is written" 0 "$(operator_writes "$mark")"
expect_eq "... nor counted" "1 4" "$(reloads accepted) $(reloads rejected)"

# --- 5. emptied: back to the embedded policies ------------------------------
cm_write "$pol"
check "emptied: accepted" wait_for 10 reloads_above accepted 1
expect_eq "back to the embedded set (its hash)" "$hash0 embedded" "$(policy_info)"
check "the label goes from every StatefulSet" wait_for 20 labelled statefulsets 0
check "and from the ConfigMaps" labelled configmaps 0
check "every DittoServer converged again" wait_for 30 converged

kill -TERM "$op"
wait "$op"
expect_eq "the operator exits 0 on SIGTERM" 0 "$?"

tap_summary
