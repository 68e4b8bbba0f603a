#!/usr/bin/env bash
# spec/integration/controller_test.sh: the operator end to end on the local
# control plane (kube-apiserver + kube-controller-manager; run through
# spec/integration/with-cluster). The operator runs under the
# ServiceAccount and RBAC of deploy/rbac/, never as admin.
#
#   1. the README sample (with the DittoFS stand-in image) reconciles into
#      exactly its four children, owned by the DittoServer; its pod runs on
#      the real node (deploy/local/node.sh) -> Running,
#      Ready=True, availableReplicas 1; Events; /metrics, /healthz, /readyz;
#   2. a spec change rolls the pod template (config hash) and raises
#      observedGeneration by one;
#   3. a deleted child is restored, an edited owned field is restored, a
#      label another manager adds to a child survives;
#   4. a CR that passes the schema but fails validate(): Reconciled=False
#      InvalidSpec, a Warning Event, no children;
#   5. replicas 0 -> Stopped;
#   6. deleting the DittoServer garbage-collects its children, keeps PVCs;
#   7. 100 converged DittoServers and a forced resync: zero mutating
#      requests by the operator (counted in the apiserver's audit log);
#   8. two operators with --leader-elect: one writes; kill -9 of the leader
#      hands over within 20 s; SIGTERM of the leader within 3 s;
#   9. a failing policy (error, endless loop): Reconciled=False PolicyError,
#      a Warning Event, no children, the operator keeps running.
# Output: one "ok N - ..." / "not ok N - ..." line per check, then a
# summary; exit status 1 when any check failed.
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
ns="ctl-test-$$"
ns2="ctl-fleet-$$"
ns3="ctl-le-$$"
ns4="ctl-bad-$$"
opns=dittofs-system
sa_user="system:serviceaccount:$opns:dittofs-operator"
tmp=$(mktemp -d)
pids=()

cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
  wait 2>/dev/null
  for x in "$ns" "$ns2" "$ns3" "$ns4"; do
    "$KUBECTL" delete namespace "$x" --wait=false >/dev/null 2>&1 || true
  done
  "$KUBECTL" -n "$opns" delete lease "ctl-test-$$" >/dev/null 2>&1 || true
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
jp() { "$KUBECTL" -n "$1" get "$2" -o "jsonpath=$3" 2>/dev/null; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# start_operator LOG ARGS...: runs the operator in the background under the
# ServiceAccount's kubeconfig; sets $last_pid.
start_operator() {
  local log=$1
  shift
  "$BIN" --kubeconfig "$tmp/sa.kubeconfig" --metrics-bind-address 127.0.0.1:0 \
    --health-probe-bind-address 127.0.0.1:0 --log-level debug "$@" \
    >"$log" 2>&1 &
  last_pid=$!
  pids+=("$last_pid")
}

# port_of LOG KEY: the port the operator logged ("metrics_port=N").
port_of() {
  wait_for 10 grep -q "$2=" "$1"
  sed -n "s/.*$2=\([0-9]*\).*/\1/p" "$1" | head -n1
}

# --- usage errors: exit 2 and say what is wrong ------------------------------
usage_fails() {
  local want=$1
  shift
  local out rc
  # --version last: should the bad value be accepted, the check fails at
  # once instead of starting the operator
  out=$("$BIN" "$@" --version 2>&1 >/dev/null)
  rc=$?
  [ "$rc" = 2 ] && grep -q -- "$want" <<<"$out" || { echo "rc=$rc: $out"; return 1; }
}
check "usage: --workers 0" usage_fails "'0' is not a number from 1 to 1024" --workers 0
check "usage: --resync-period 5x" usage_fails "is not a duration" --resync-period 5x
check "usage: --selector a=(" usage_fails "--selector: " --selector "a=("
check "usage: --metrics-bind-address foo" usage_fails "is not 0, :PORT or HOST:PORT" \
  --metrics-bind-address foo
env_usage_fails() {
  local out rc
  out=$(DITTOFS_OPERATOR_LEADER_ELECT=maybe "$BIN" --version 2>&1 >/dev/null)
  rc=$?
  [ "$rc" = 2 ] && grep -q 'DITTOFS_OPERATOR_LEADER_ELECT: --leader-elect' <<<"$out" ||
    { echo "rc=$rc: $out"; return 1; }
}
check "usage: \$DITTOFS_OPERATOR_LEADER_ELECT=maybe" env_usage_fails
check "--help lists every run-mode flag" sh -c "'$BIN' --help | grep -q -- --health-probe-bind-address && '$BIN' --help | grep -q DITTOFS_OPERATOR_RESYNC_PERIOD"

# --- setup: CRD, RBAC, the ServiceAccount's kubeconfig ---------------------
# the CRD as this apiserver takes it (without its CEL rules below 1.28)
check "CRD installed" crd_install --force-conflicts
"$KUBECTL" wait --for condition=established --timeout=60s \
  crd/dittoservers.dittofs.dittofs.com >/dev/null
check "RBAC of deploy/rbac installed" "$KUBECTL" apply --server-side \
  --force-conflicts -k "$root/deploy/rbac"
check "the ServiceAccount's kubeconfig" "$root/deploy/local/cluster.sh" \
  sa-kubeconfig "$opns" dittofs-operator "$tmp/sa.kubeconfig"
for x in "$ns" "$ns2" "$ns3" "$ns4"; do "$KUBECTL" create namespace "$x" >/dev/null; done

# --- 1. the README sample ---------------------------------------------------
start_operator "$tmp/op.log" --namespace "$ns"
op=$last_pid
mport=$(port_of "$tmp/op.log" metrics_port)
hport=$(port_of "$tmp/op.log" health_port)
check "/readyz turns 200 once the caches are synced" \
  wait_for 20 curl -sf "http://127.0.0.1:$hport/readyz"
check "/healthz is 200" curl -sf "http://127.0.0.1:$hport/healthz"

# The README sample as it is, but the image: the DittoFS stand-in that the
# node has (nothing can be pulled here), and no resource requests.
"$KUBECTL" create --dry-run=client -o json -f "$root/deploy/samples/dittoserver.yaml" |
  jq --arg img "$STANDIN" '.spec.image = $img | del(.spec.resources) | del(.metadata.namespace)' >"$tmp/sample.json"
k apply -f "$tmp/sample.json" >/dev/null
ds=dittofs-sample
uid=$(jp "$ns" "dittoserver/$ds" '{.metadata.uid}')
check "the sample becomes Running (its pod runs on the node)" \
  wait_for 120 sh -c "[ \"\$($KUBECTL -n $ns get ditto $ds -o jsonpath='{.status.phase}')\" = Running ]"
children=$(k get configmaps,services,statefulsets -l "dittofs.dittofs.com/server=$ds" \
  -o jsonpath='{range .items[*]}{.kind}/{.metadata.name}{" "}{end}')
expect_eq "exactly the expected children" \
  "ConfigMap/$ds-config Service/$ds Service/$ds-headless StatefulSet/$ds " "$children"
owners=$(k get configmaps,services,statefulsets -l "dittofs.dittofs.com/server=$ds" \
  -o jsonpath='{range .items[*]}{.metadata.ownerReferences[0].uid}/{.metadata.ownerReferences[0].controller}{" "}{end}')
expect_eq "every child is controlled by the DittoServer" \
  "$uid/true $uid/true $uid/true $uid/true " "$owners"
expect_eq "managed-by label on the children" "dittofs-operator" \
  "$(jp "$ns" "statefulset/$ds" '{.metadata.labels.app\.kubernetes\.io/managed-by}')"
expect_eq "Ready=True" "True" \
  "$(jp "$ns" "ditto/$ds" '{.status.conditions[?(@.type=="Ready")].status}')"
expect_eq "Reconciled=True ChildrenUpToDate" "True/ChildrenUpToDate" \
  "$(jp "$ns" "ditto/$ds" '{.status.conditions[?(@.type=="Reconciled")].status}/{.status.conditions[?(@.type=="Reconciled")].reason}')"
expect_eq "availableReplicas 1" "1" "$(jp "$ns" "ditto/$ds" '{.status.availableReplicas}')"
gen=$(jp "$ns" "ditto/$ds" '{.metadata.generation}')
expect_eq "observedGeneration = generation" "$gen" \
  "$(jp "$ns" "ditto/$ds" '{.status.observedGeneration}')"
ltt=$(jp "$ns" "ditto/$ds" '{.status.conditions[?(@.type=="Ready")].lastTransitionTime}')
check "conditions carry lastTransitionTime" test -n "$ltt"
check "a Normal Created Event on the DittoServer" \
  wait_for 10 sh -c "$KUBECTL -n $ns get events --field-selector involvedObject.name=$ds,reason=Created -o name | grep -q ."
metrics=$(curl -sf "http://127.0.0.1:$mport/metrics")
for m in 'controller_runtime_reconcile_total{controller="dittoserver",result="success"}' \
  controller_runtime_reconcile_time_seconds_bucket workqueue_depth workqueue_adds_total \
  workqueue_queue_duration_seconds_bucket 'rest_client_requests_total{code="200",method="PATCH"' \
  process_resident_memory_bytes process_cpu_seconds_total dittofs_policy_info \
  dittofs_policy_evaluation_seconds_bucket; do
  if grep -qF "$m" <<<"$metrics"; then ok "/metrics has $m"; else not_ok "/metrics has $m"; fi
done
log_lines_ok() {
  grep 'msg="reconciled"' "$1" | grep -v 'key=.*result=.*duration=' | grep -q . && return 1
  grep -q "msg=\"reconciled\" key=$ns/$ds result=success duration=" "$1"
}
check "every reconcile log line has key, result and duration" log_lines_ok "$tmp/op.log"
check "no token in the log" sh -c "! grep -q \"\$(sed -n 's/.*token: //p' '$tmp/sa.kubeconfig' | head -c 40)\" '$tmp/op.log'"

# --- 2. a spec change rolls the pod template --------------------------------
hash1=$(jp "$ns" "statefulset/$ds" '{.spec.template.metadata.annotations.dittofs\.dittofs\.com/config-hash}')
k patch ditto "$ds" --type merge -p '{"spec":{"nfsPort":12049}}' >/dev/null
check "the StatefulSet gets a new config hash" \
  wait_for 20 sh -c "[ \"\$($KUBECTL -n $ns get statefulset $ds -o jsonpath='{.spec.template.metadata.annotations.dittofs\.dittofs\.com/config-hash}')\" != '$hash1' ]"
check "the ConfigMap holds the new port" \
  sh -c "$KUBECTL -n $ns get configmap $ds-config -o jsonpath='{.data.config\.yaml}' | grep -q 'port: 12049'"
check "observedGeneration goes up by one" \
  wait_for 20 sh -c "[ \"\$($KUBECTL -n $ns get ditto $ds -o jsonpath='{.status.observedGeneration}')\" = $((gen + 1)) ]"

k patch ditto "$ds" --type merge -p '{"spec":{"resources":{"limits":{"memory":"256Mi"}}}}' >/dev/null
check "a field the policy renders is applied (resources)" \
  wait_for 20 sh -c "[ -n \"\$($KUBECTL -n $ns get statefulset $ds -o jsonpath='{.spec.template.spec.containers[0].resources.limits}')\" ]"
k patch ditto "$ds" --type merge -p '{"spec":{"resources":null}}' >/dev/null
check "a field the policy stops rendering is removed (resources)" \
  wait_for 20 sh -c "[ -z \"\$($KUBECTL -n $ns get statefulset $ds -o jsonpath='{.spec.template.spec.containers[0].resources.limits}')\" ]"
check "every child carries the applied-hash annotation" \
  sh -c "[ \$($KUBECTL -n $ns get configmaps,services,statefulsets -l dittofs.dittofs.com/server=$ds -o json | jq '[.items[].metadata.annotations[\"dittofs.dittofs.com/applied-hash\"] | select(. != null)] | length') = 4 ]"

# --- 3. repair --------------------------------------------------------------
old=$(jp "$ns" "service/$ds" '{.metadata.uid}')
k delete service "$ds" >/dev/null
check "a deleted Service is recreated" \
  wait_for 20 sh -c "u=\$($KUBECTL -n $ns get service $ds -o jsonpath='{.metadata.uid}' 2>/dev/null); [ -n \"\$u\" ] && [ \"\$u\" != '$old' ]"
k patch configmap "$ds-config" --type merge -p '{"data":{"config.yaml":"tampered"}}' >/dev/null
check "an edited ConfigMap is restored" \
  wait_for 20 sh -c "$KUBECTL -n $ns get configmap $ds-config -o jsonpath='{.data.config\.yaml}' | grep -q 'port: 12049'"
k label statefulset "$ds" team=storage >/dev/null
k patch statefulset "$ds" --type merge \
  -p '{"spec":{"template":{"spec":{"containers":[{"name":"dittofs","image":"example.org/evil:1"}]}}}}' >/dev/null
check "an edited image is restored" \
  wait_for 20 sh -c "[ \"\$($KUBECTL -n $ns get statefulset $ds -o jsonpath='{.spec.template.spec.containers[0].image}')\" = $STANDIN ]"
sleep 1
expect_eq "a label another manager added survives" "storage" \
  "$(jp "$ns" "statefulset/$ds" '{.metadata.labels.team}')"

# --- 3b. an immutable change (volumeClaimTemplates) never loops ----------
hash2=$(jp "$ns" "statefulset/$ds" '{.spec.template.metadata.annotations.dittofs\.dittofs\.com/config-hash}')
mark=$(audit_mark)
k patch ditto "$ds" --type merge \
  -p '{"spec":{"nfsPort":12050,"storage":{"metadataSize":"20Gi"}}}' >/dev/null
check "a storage change: Reconciled=False StorageImmutable" \
  wait_for 20 sh -c "[ \"\$($KUBECTL -n $ns get ditto $ds -o jsonpath='{.status.conditions[?(@.type==\"Reconciled\")].reason}')\" = StorageImmutable ]"
check "every other change is still applied (ConfigMap)" \
  wait_for 20 sh -c "$KUBECTL -n $ns get configmap $ds-config -o jsonpath='{.data.config\.yaml}' | grep -q 'port: 12050'"
check "every other change is still applied (pod template)" \
  wait_for 20 sh -c "[ \"\$($KUBECTL -n $ns get statefulset $ds -o jsonpath='{.spec.template.metadata.annotations.dittofs\.dittofs\.com/config-hash}')\" != '$hash2' ]"
# 1.20 answers "spec: Forbidden: updates to statefulset spec ...", current
# releases "spec.volumeClaimTemplates: Invalid value: [the templates]: field
# is immutable" (the Event keeps the first 1024 bytes)
check "a Warning ApplyFailed Event with the apiserver's message" \
  wait_for 10 sh -c "$KUBECTL -n $ns get events --field-selector involvedObject.name=$ds,reason=ApplyFailed,type=Warning -o jsonpath='{.items[*].message}' | grep -qE 'StatefulSet $ds.*(Forbidden|volumeClaimTemplates: Invalid value)'"
expect_eq "the volume claim templates keep their size" "10Gi" \
  "$(jp "$ns" "statefulset/$ds" '{.spec.volumeClaimTemplates[0].spec.resources.requests.storage}')"
sleep 8
sts_patches=$(audit_since "$mark" |
  jq -c "select(.user.username == \"$sa_user\" and .verb == \"patch\" and
    .objectRef.resource == \"statefulsets\" and .objectRef.namespace == \"$ns\")" | wc -l)
check "bounded: at most 3 StatefulSet applies in 8 s ($sts_patches)" test "$sts_patches" -le 3
k patch ditto "$ds" --type merge -p '{"spec":{"storage":{"metadataSize":"10Gi"}}}' >/dev/null
check "restoring spec.storage: Reconciled=True again" \
  wait_for 20 sh -c "[ \"\$($KUBECTL -n $ns get ditto $ds -o jsonpath='{.status.conditions[?(@.type==\"Reconciled\")].reason}')\" = ChildrenUpToDate ]"

# --- 4. invalid spec -------------------------------------------------------
cat >"$tmp/bad.yaml" <<EOF
apiVersion: dittofs.dittofs.com/v1alpha1
kind: DittoServer
metadata:
  name: bad
spec:
  image: ghcr.io/marmos91/dittofs:latest
  replicas: 2
  storage:
    metadataSize: 1Gi
EOF
check "a CR that fails validate() passes the schema" k apply -f "$tmp/bad.yaml"
check "Reconciled=False InvalidSpec" \
  wait_for 20 sh -c "[ \"\$($KUBECTL -n $ns get ditto bad -o jsonpath='{.status.conditions[?(@.type==\"Reconciled\")].reason}')\" = InvalidSpec ]"
expect_eq "phase Failed" "Failed" "$(jp "$ns" ditto/bad '{.status.phase}')"
check "a Warning InvalidSpec Event" \
  wait_for 10 sh -c "$KUBECTL -n $ns get events --field-selector involvedObject.name=bad,reason=InvalidSpec,type=Warning -o name | grep -q ."
expect_eq "no children for an invalid spec" "" \
  "$(k get configmaps,services,statefulsets -l dittofs.dittofs.com/server=bad -o name)"

# --- 5. replicas 0 ---------------------------------------------------------
k patch ditto "$ds" --type merge -p '{"spec":{"replicas":0}}' >/dev/null
check "replicas 0 -> Stopped" \
  wait_for 30 sh -c "[ \"\$($KUBECTL -n $ns get ditto $ds -o jsonpath='{.status.phase}')\" = Stopped ]"
expect_eq "the StatefulSet is scaled to 0" "0" "$(jp "$ns" "statefulset/$ds" '{.spec.replicas}')"

# --- 6. deletion -------------------------------------------------------------
pvcs=$(k get pvc -l "app.kubernetes.io/instance=$ds" -o name | sort)
check "the StatefulSet controller made PVCs" test -n "$pvcs"
k delete ditto "$ds" --wait=true --timeout=30s >/dev/null
if wait_for 90 sh -c "[ -z \"\$($KUBECTL -n $ns get configmaps,services,statefulsets -l dittofs.dittofs.com/server=$ds -o name)\" ]"; then
  ok "children are garbage-collected"
else
  not_ok "children are garbage-collected" "$(k get configmaps,services,statefulsets \
    -l dittofs.dittofs.com/server=$ds -o json | jq -c '.items[].metadata |
    {name, uid, creationTimestamp, deletionTimestamp, ownerReferences, finalizers}')"
fi
expect_eq "PVCs are kept" "$pvcs" "$(k get pvc -l "app.kubernetes.io/instance=$ds" -o name | sort)"

kill -TERM "$op"
t0=$(now_ms)
wait "$op"
rc=$?
expect_eq "SIGTERM: exit status 0" 0 "$rc"
check "SIGTERM: stopped within 3 s" test $(($(now_ms) - t0)) -lt 3000

# --- 7. 100 converged DittoServers, a forced resync, zero writes -----------
# replicas 0: 100 servers' pods do not fit one 2-core node; the writes
# counted here are the operator's, which pods do not change.
{
  for i in $(seq 1 100); do
    cat <<EOF
apiVersion: dittofs.dittofs.com/v1alpha1
kind: DittoServer
metadata:
  name: fleet-$i
spec:
  image: $STANDIN
  replicas: 0
  storage:
    metadataSize: 1Gi
---
EOF
  done
} >"$tmp/fleet.yaml"
"$KUBECTL" -n "$ns2" apply -f "$tmp/fleet.yaml" >/dev/null
start_operator "$tmp/fleet.log" --namespace "$ns2" --resync-period 20s
fleet=$last_pid
converged() {
  "$KUBECTL" -n "$ns2" get ditto -o json |
    jq -e '[.items[] | select(.status.observedGeneration == .metadata.generation and
      (.status.conditions[] | select(.type=="Reconciled") | .reason) == "ChildrenUpToDate")] | length == 100' >/dev/null
}
check "100 DittoServers converge" wait_for 180 converged
# Quiet: the StatefulSet controller has settled and the operator wrote
# nothing for 5 s; then wait for the next periodic resync to complete.
quiet() {
  local a b
  a=$(grep -c "user.*$sa_user" "$DITTOFS_AUDIT_LOG" 2>/dev/null)
  sleep 5
  b=$(grep -c "user.*$sa_user" "$DITTOFS_AUDIT_LOG" 2>/dev/null)
  [ "$a" = "$b" ]
}
wait_for 60 quiet
mark=$(audit_mark)
resyncs=$(grep -c 'msg="periodic resync"' "$tmp/fleet.log")
check "a periodic resync runs" \
  wait_for 40 sh -c "[ \$(grep -c 'msg=\"periodic resync\"' '$tmp/fleet.log') -gt $resyncs ]"
sleep 3
after=$(grep -n 'msg="periodic resync"' "$tmp/fleet.log" | tail -n1 | cut -d: -f1)
recs=$(tail -n +"$after" "$tmp/fleet.log" | grep -c 'msg="reconciled"')
check "the resync reconciled all 100" test "$recs" -ge 100
writes=$(audit_since "$mark" |
  jq -c "select(.user.username == \"$sa_user\" and
    (.verb | test(\"create|update|patch|delete\")))" | wc -l)
expect_eq "zero mutating requests during the resync" 0 "$writes"
reads=$(audit_since "$mark" |
  jq -c "select(.user.username == \"$sa_user\" and .verb == \"get\")" | wc -l)
expect_eq "and no GETs either (everything from the cache)" 0 "$reads"
kill -TERM "$fleet"
wait "$fleet"

# --- 8. leader election ------------------------------------------------------
lease="ctl-test-$$"
le_args=(--namespace "$ns3" --leader-elect --leader-election-namespace "$opns"
  --leader-election-id "$lease")
start_operator "$tmp/a.log" "${le_args[@]}"
a=$last_pid
check "A becomes leader" wait_for 20 grep -q 'became leader' "$tmp/a.log"
start_operator "$tmp/b.log" "${le_args[@]}"
b=$last_pid
sleep 3
check "B stays a standby" sh -c "! grep -q 'became leader' '$tmp/b.log'"
cat >"$tmp/le.yaml" <<EOF
apiVersion: dittofs.dittofs.com/v1alpha1
kind: DittoServer
metadata:
  name: le-1
spec:
  image: $STANDIN
  replicas: 0
  storage:
    metadataSize: 1Gi
EOF
"$KUBECTL" -n "$ns3" apply -f "$tmp/le.yaml" >/dev/null
check "the leader reconciles" wait_for 20 grep -q "msg=\"reconciled\" key=$ns3/le-1" "$tmp/a.log"
check "the standby does not" sh -c "! grep -q 'msg=.reconciled' '$tmp/b.log'"
kill -9 "$a"
t0=$(now_ms)
check "kill -9 of the leader: B leads within 20 s" \
  wait_for 20 grep -q 'became leader' "$tmp/b.log"
echo "# handover after kill -9: $(($(now_ms) - t0)) ms"
start_operator "$tmp/c.log" "${le_args[@]}"
c=$last_pid
sleep 2
kill -TERM "$b"
t0=$(now_ms)
check "SIGTERM of the leader: C leads within 3 s" \
  wait_for 3 grep -q 'became leader' "$tmp/c.log"
echo "# handover after SIGTERM: $(($(now_ms) - t0)) ms"
wait "$b"
expect_eq "the released leader exits 0" 0 "$?"
"$KUBECTL" -n "$ns3" patch ditto le-1 --type merge -p '{"spec":{"nfsPort":2050}}' >/dev/null
check "the new leader reconciles" \
  wait_for 20 sh -c "$KUBECTL -n $ns3 get configmap le-1-config -o jsonpath='{.data.config\.yaml}' | grep -q 'port: 2050'"
kill -TERM "$c"
wait "$c"

# --- 9. a failing policy ----------------------------------------------------
mkdir -p "$tmp/policies"
cat >"$tmp/policies/dittoserver.lua" <<'EOF'
local M = {}
function M.render(ds)
  if ds.metadata.name == "spin" then
    while true do end
  end
  error("boom: " .. ds.metadata.name)
end
function M.status(ds)
  return { phase = "Pending" }
end
return M
EOF
start_operator "$tmp/bad.log" --namespace "$ns4" --policies "$tmp/policies"
bad=$last_pid
for x in boom spin; do
  sed "s/name: le-1/name: $x/" "$tmp/le.yaml" | "$KUBECTL" -n "$ns4" apply -f - >/dev/null
done
check "a policy error: Reconciled=False PolicyError with file:line" \
  wait_for 20 sh -c "$KUBECTL -n $ns4 get ditto boom -o jsonpath='{.status.conditions[?(@.type==\"Reconciled\")].reason} {.status.conditions[?(@.type==\"Reconciled\")].message}' | grep -q '^PolicyError .*dittoserver.lua:6: boom: boom'"
check "an endless loop: PolicyError, policy timeout" \
  wait_for 20 sh -c "$KUBECTL -n $ns4 get ditto spin -o jsonpath='{.status.conditions[?(@.type==\"Reconciled\")].message}' | grep -q 'timeout'"
check "a Warning PolicyError Event" \
  wait_for 10 sh -c "$KUBECTL -n $ns4 get events --field-selector involvedObject.name=boom,reason=PolicyError,type=Warning -o name | grep -q ."
expect_eq "no children from a failing policy" "" \
  "$("$KUBECTL" -n "$ns4" get configmaps,services,statefulsets -l app.kubernetes.io/managed-by=dittofs-operator -o name)"
check "the operator keeps running" kill -0 "$bad"
check "and retries with backoff" \
  wait_for 20 sh -c "[ \$(grep -c 'key=$ns4/boom result=error' '$tmp/bad.log') -ge 3 ]"
kill -TERM "$bad"
wait "$bad"

tap_summary
