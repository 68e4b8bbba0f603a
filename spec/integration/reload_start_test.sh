#!/usr/bin/env bash
# spec/integration/reload_start_test.sh: the operator started on a policy
# directory whose set cannot be loaded (issue 9 section 3) on the local
# control plane (run through spec/integration/with-cluster). A bad
# ConfigMap must not crash-loop the replicas that restart: the process
# waits for a valid set. The operator runs under the ServiceAccount and
# RBAC of deploy/rbac/ with --leader-elect, --policies on a directory that
# this script updates as the kubelet updates a ConfigMap volume (cm_write)
# and --policies-configmap naming a real ConfigMap.
#
#   0. an unreadable directory stays fatal (exit 4);
#   1. a syntax error at start, SIGTERM while waiting: exit 0;
#   2. a syntax error at start: alive after 5 s, /healthz 200, /readyz 500
#      "no valid policies: FILE:LINE: ...", the log line with file:line, a
#      Warning PolicyRejected Event on the ConfigMap,
#      dittofs_policy_reload_total{result="rejected"} 1, no
#      dittofs_policy_info, the Lease not taken, no write but the Event
#      (the apiserver's audit log), the waiting DittoServer untouched;
#   3. a dittoserver.lua over the 1 MiB limit instead: another Warning,
#      still waiting;
#   4. a valid set: "policies loaded", a Normal PolicyReloaded Event,
#      result="accepted" 1, dittofs_policy_info, the Lease taken, /readyz
#      200, the DittoServer reconciled with that set; SIGTERM: exit 0.
# DITTOFS_TEST_NAMESPACE names the test namespace (default
# reload-start-PID). Output: one "ok N - ..." / "not ok N - ..." line per
# check, then a summary; exit status 1 when any check failed.
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
ns=${DITTOFS_TEST_NAMESPACE:-reload-start-$$}
opns=dittofs-system
sa_user="system:serviceaccount:$opns:dittofs-operator"
cm=start-policies
lease="reload-start-$$"
tmp=$(mktemp -d)
pol="$tmp/policies"
pids=()

cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
  wait 2>/dev/null
  "$KUBECTL" delete namespace "$ns" --wait=false >/dev/null 2>&1 || true
  "$KUBECTL" -n "$opns" delete lease "$lease" >/dev/null 2>&1 || true
  if [ "${failed:-0}" -gt 0 ]; then
    for f in "$tmp"/*.log; do
      [ -f "$f" ] || continue
      echo "# --- last lines of $f"
      tail -n 30 "$f" | sed 's/^/#   /'
    done
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

k() { "$KUBECTL" -n "$ns" "$@"; }
metrics() { curl -sf "http://127.0.0.1:$mport/metrics"; }
# reloads RESULT: dittofs_policy_reload_total{result=RESULT}
reloads() {
  metrics | sed -n "s/^dittofs_policy_reload_total{result=\"$1\"} //p"
}
reloads_above() { [ "$(reloads "$1")" -gt "$2" ]; }
policy_info() {
  metrics | sed -n 's/^dittofs_policy_info{hash="\([0-9a-f]*\)",origin="\([^"]*\)"} 1$/\1 \2/p'
}
info_lines() { metrics | grep -c '^dittofs_policy_info{'; }
# readyz: "CODE BODY" of /readyz
readyz() {
  curl -s -o "$tmp/readyz.body" -w '%{http_code}' "http://127.0.0.1:$hport/readyz"
  echo " $(cat "$tmp/readyz.body")"
}
# events TYPE REASON: the messages of those Events on the policies ConfigMap
# (selected by its uid, as kubectl describe does)
events() {
  k get events --field-selector \
    "involvedObject.kind=ConfigMap,involvedObject.name=$cm,involvedObject.uid=$cm_uid,type=$1,reason=$2" \
    -o jsonpath='{range .items[*]}{.message}{"\n"}{end}'
}
has_event() { events "$1" "$2" | grep -qF -- "$3"; }
# writes MARK: mutating requests of the ServiceAccount since MARK in $ns
# (this operator watches nothing else) or on this test's Lease, Events
# aside. Other tests may run operators under the same ServiceAccount.
writes() {
  audit_since "$1" |
    jq -c "select(.user.username == \"$sa_user\" and
      (.verb | test(\"create|update|patch|delete\")) and
      ((.objectRef.namespace == \"$ns\" and .objectRef.resource != \"events\") or
       (.objectRef.resource == \"leases\" and .objectRef.name == \"$lease\")))" | wc -l
}
# event_writes MARK: the Events the ServiceAccount wrote in $ns since MARK
event_writes() {
  audit_since "$1" |
    jq -c "select(.user.username == \"$sa_user\" and
      .objectRef.namespace == \"$ns\" and .objectRef.resource == \"events\" and
      (.verb | test(\"create|update|patch\")))" | wc -l
}
holder() {
  "$KUBECTL" -n "$opns" get lease "$lease" -o 'jsonpath={.spec.holderIdentity}' 2>/dev/null
}
no_lease() {
  local out
  out=$("$KUBECTL" -n "$opns" get lease "$lease" 2>&1)
  grep -q NotFound <<<"$out" || { echo "$out"; return 1; }
}
# start_operator LOG ARGS...: the operator on $pol; sets $op, $mport, $hport
start_operator() {
  local log=$1
  shift
  "$BIN" --kubeconfig "$tmp/sa.kubeconfig" --namespace "$ns" \
    --policies "$pol" --policies-configmap "$ns/$cm" \
    --metrics-bind-address 127.0.0.1:0 --health-probe-bind-address 127.0.0.1:0 \
    --log-level debug "$@" >"$log" 2>&1 &
  op=$!
  pids+=("$op")
  wait_for 10 grep -q 'health_port=' "$log"
  mport=$(sed -n 's/.*metrics_port=\([0-9]*\).*/\1/p' "$log" | head -n1)
  hport=$(sed -n 's/.*health_port=\([0-9]*\).*/\1/p' "$log" | head -n1)
}

# --- the policy sets ---------------------------------------------------------
mkdir "$tmp/syntax" "$tmp/big" "$tmp/good" "$pol"
printf '%s\n' 'local policy = require("dittoserver.default").new()' \
  'return = policy' >"$tmp/syntax/dittoserver.lua"
{
  echo 'return require("dittoserver.default").new()'
  head -c 1100000 /dev/zero | tr '\0' '-' | fold -w 98
} >"$tmp/big/dittoserver.lua"
cat >"$tmp/good/dittoserver.lua" <<'EOF'
-- The default policy plus a label on every object it renders.
local policy = require("dittoserver.default").new()
local render = policy.render
function policy.render(ds, ctx)
  local objects = render(ds, ctx)
  for _, o in ipairs(objects) do
    o.metadata.labels = o.metadata.labels or {}
    o.metadata.labels["example.com/policy"] = "start"
  end
  return objects
end
return policy
EOF
syntax_err="$pol/dittoserver.lua:2: unexpected symbol near '='"
big_err="$pol/dittoserver.lua: file too large (limit 1 MiB)"

# --- 0. what stays fatal -----------------------------------------------------
unreadable() {
  local rc
  timeout 10 "$BIN" --kubeconfig /dev/null --policies "$tmp/none" \
    >"$tmp/none.log" 2>&1
  rc=$?
  [ "$rc" = 4 ] && grep -q 'cannot read the policy directory' "$tmp/none.log" ||
    { echo "rc=$rc: $(cat "$tmp/none.log")"; return 1; }
}
check "an unreadable policy directory: exit 4" unreadable

# --- setup: CRD, RBAC, the ServiceAccount's kubeconfig, a DittoServer --------
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
cat >"$tmp/ds.yaml" <<EOF
apiVersion: dittofs.dittofs.com/v1alpha1
kind: DittoServer
metadata:
  name: s-1
spec:
  image: $STANDIN
  replicas: 0
  storage:
    metadataSize: 1Gi
EOF
check "a DittoServer waits for the operator" k apply -f "$tmp/ds.yaml"
cm_write "$pol" "$tmp/syntax"

# --- 1. SIGTERM while waiting ------------------------------------------------
start_operator "$tmp/term.log"
check "SIGTERM test: waiting for valid policies" \
  wait_for 10 grep -qF "msg=\"cannot load the policies: waiting for a valid set, not reconciling\" dir=$pol error=\"$syntax_err\"" "$tmp/term.log"
kill -TERM "$op"
t0=$(($(date +%s%N) / 1000000))
wait "$op"
expect_eq "SIGTERM while waiting: exit 0" 0 "$?"
echo "# SIGTERM -> exit: $(($(date +%s%N) / 1000000 - t0)) ms"
check "... after a clean shutdown" grep -q 'msg="stopped"' "$tmp/term.log"

# --- 2. a syntax error at start: waiting -------------------------------------
le_args=(--leader-elect --leader-election-namespace "$opns"
  --leader-election-id "$lease")
mark=$(audit_mark)
start_operator "$tmp/op.log" "${le_args[@]}"
sleep 5
check "syntax error at start: still running after 5 s" kill -0 "$op"
check "/healthz 200 (alive: no restart)" \
  curl -sf "http://127.0.0.1:$hport/healthz"
expect_eq "/readyz 500 with the reason" "500 no valid policies: $syntax_err" \
  "$(readyz)"
check "the log line has file:line" grep -qF \
  "msg=\"cannot load the policies: waiting for a valid set, not reconciling\" dir=$pol error=\"$syntax_err\"" \
  "$tmp/op.log"
check "a Warning PolicyRejected Event on the ConfigMap with file:line" \
  wait_for 10 has_event Warning PolicyRejected \
  "policies refused, none active: the operator waits for a valid set without reconciling: $syntax_err"
expect_eq "dittofs_policy_reload_total: rejected 1, accepted 0" "0 1" \
  "$(reloads accepted) $(reloads rejected)"
expect_eq "no dittofs_policy_info (no active set)" 0 "$(info_lines)"
check "the Lease is not taken (not a candidate)" no_lease
check "no leader election begun" sh -c "! grep -q 'msg=\"leader election\"' '$tmp/op.log'"
sleep 2
expect_eq "no write at all (audit log; Events aside)" 0 "$(writes "$mark")"
check "... and the Event was written" test "$(event_writes "$mark")" -ge 1
expect_eq "the DittoServer is untouched (no status)" "" \
  "$(k get ditto s-1 -o jsonpath='{.status}')"
expect_eq "... and has no StatefulSet" 0 "$(k get statefulsets -o name | wc -l)"

# --- 3. still broken: a file too large --------------------------------------
# (Every set has the same file names: cm_write is slower than the kubelet,
# and a set halfway between two sets of names would be judged too.)
cm_write "$pol" "$tmp/big"
check "a file too large: refused too" wait_for 20 reloads_above rejected 1
check "... another Warning Event saying so" \
  wait_for 10 has_event Warning PolicyRejected "$big_err"
readyz_has() {
  local r
  r=$(readyz)
  grep -qF -- "$1" <<<"$r" || { echo "$r"; return 1; }
}
check "... /readyz 500 with the new reason" \
  readyz_has "500 no valid policies: $big_err"
expect_eq "... still no dittofs_policy_info" 0 "$(info_lines)"
check "... still no Lease" no_lease
check "... the operator still running" kill -0 "$op"
sleep 2
expect_eq "... still no write but Events" 0 "$(writes "$mark")"

# --- 4. a valid set: the start goes on ---------------------------------------
cm_write "$pol" "$tmp/good"
t0=$swapped_ms
check "a valid set: policies loaded" \
  wait_for 20 grep -q "msg=\"policies loaded\" origin=$pol" "$tmp/op.log"
echo "# swap -> policies loaded: $(($(date +%s%N) / 1000000 - t0)) ms"
expect_eq "dittofs_policy_reload_total: accepted 1, rejected 2" "1 2" \
  "$(reloads accepted) $(reloads rejected)"
read -r hash origin <<<"$(policy_info)"
expect_eq "dittofs_policy_info: the directory's set" "$pol" "$origin"
check "a Normal PolicyReloaded Event with its hash" \
  wait_for 10 has_event Normal PolicyReloaded \
  "policies $hash from $pol loaded, none was active; the operator starts"
check "it becomes leader" wait_for 20 grep -q 'became leader' "$tmp/op.log"
id=$(sed -n 's/.*msg="leader election".* identity=\([^ ]*\).*/\1/p' "$tmp/op.log" | head -n1)
check "the Lease is held by it ($id)" \
  sh -c "[ -n \"\$1\" ] && [ \"\$1\" = \"\$2\" ] || { echo \"holder: \$2\"; exit 1; }" _ "$id" "$(holder)"
check "/readyz 200" wait_for 20 curl -sf "http://127.0.0.1:$hport/readyz"
converged() {
  k get ditto s-1 -o json | jq -e '.status.observedGeneration == .metadata.generation and
    ([.status.conditions[] | select(.type=="Reconciled") | .reason] == ["ChildrenUpToDate"])' >/dev/null
}
check "the DittoServer is reconciled" wait_for 60 converged
check "... with the loaded set (its label on the StatefulSet)" \
  test "$(k get statefulsets -l example.com/policy=start -o name | wc -l)" = 1

kill -TERM "$op"
wait "$op"
expect_eq "SIGTERM: exit 0" 0 "$?"

tap_summary
