#!/usr/bin/env bash
# spec/integration/pods_test.sh: DittoServers on a real node (kubelet +
# containerd + CNI + kube-proxy + local-path provisioner, deploy/local/node.sh),
# the operator under its ServiceAccount and RBAC (deploy/rbac/).
#
# The pods run the DittoFS stand-in image (deploy/local/standin/: DittoFS's
# source cannot be fetched on these machines); everything else is real: the
# scheduler places the pods, the kubelet runs them and reports their status,
# the PVCs are provisioned and bound, kube-proxy routes the Services.
#
#   1. every sample of deploy/samples/ reaches Running from real kubelet
#      signals (the S3 one with its credentials Secret), its pod runs the
#      rendered config, its Service answers on the metrics port;
#   2. the README sample: a file written through the Service's ClusterIP is
#      read back; the pod is deleted, the StatefulSet brings it back, the
#      file is still there (the PVC kept it);
#   3. failures a user must see in the status: a missing image
#      (ErrImagePull/ImagePullBackOff, phase Failed), a server that crashes
#      (CrashLoopBackOff with its termination message, phase Failed), a PVC
#      that cannot bind (Unschedulable, phase Pending);
#   4. the operator restarted while real pods run: zero writes (audit log).
# Output: one "ok N - ..." / "not ok N - ..." line per check, then a summary.
set -uo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tap.sh
. "$root/spec/integration/tap.sh"
# shellcheck source=crd_install.sh
. "$root/spec/integration/crd_install.sh"
KUBECTL=${DITTOFS_KUBECTL:-kubectl}
BIN=${DITTOFS_OPERATOR:-$root/build/dittofs-operator}
STANDIN=${DITTOFS_STANDIN_IMAGE:-dittofs-local/dittofs-standin:0.1}
CRASH=${DITTOFS_STANDIN_CRASH_IMAGE:-dittofs-local/dittofs-standin:crash}
: "${KUBECONFIG:?run through spec/integration/with-cluster}"
: "${DITTOFS_AUDIT_LOG:?run through spec/integration/with-cluster}"
ns="pods-test-$$"
opns=dittofs-system
sa_user="system:serviceaccount:$opns:dittofs-operator"
tmp=$(mktemp -d)
pids=()

cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
  wait 2>/dev/null
  if [ "${failed:-0}" -gt 0 ]; then
    "$KUBECTL" -n "$ns" get pods,pvc,ditto -o wide 2>&1 | sed 's/^/#   /'
    for f in "$tmp"/*.log; do
      [ -f "$f" ] || continue
      echo "# --- last lines of $f"
      tail -n 30 "$f" | sed 's/^/#   /'
    done
  fi
  "$KUBECTL" delete namespace "$ns" --wait=false >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT

k() { "$KUBECTL" -n "$ns" "$@"; }
jp() { "$KUBECTL" -n "$ns" get "$1" -o "jsonpath=$2" 2>/dev/null; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

start_operator() {
  local log=$1
  shift
  "$BIN" --kubeconfig "$tmp/sa.kubeconfig" --metrics-bind-address 127.0.0.1:0 \
    --health-probe-bind-address 127.0.0.1:0 --namespace "$ns" "$@" >"$log" 2>&1 &
  last_pid=$!
  pids+=("$last_pid")
}

# sample FILE: the sample's documents as JSON, with the stand-in image,
# without resource requests (one 2-core node hosts every sample at once) and
# with the local StorageClass where a sample names a cloud one (gp3).
sample() {
  "$KUBECTL" create --dry-run=client -o json -f "$1" |
    jq -c --arg img "${2:-$STANDIN}" '(if .kind == "List" then .items[] else . end) |
      (if .kind == "DittoServer" then .spec.image = $img | del(.spec.resources) |
        (if .spec.storage.storageClassName then .spec.storage.storageClassName = "standard" else . end)
       else . end) | del(.metadata.namespace)'
}
phase() { jp "ditto/$1" '{.status.phase}'; }
phase_is() { [ "$(phase "$1")" = "$2" ]; }
ready_reason() { jp "ditto/$1" '{.status.conditions[?(@.type=="Ready")].reason}'; }
ready_msg() { jp "ditto/$1" '{.status.conditions[?(@.type=="Ready")].message}'; }
svc_url() { echo "http://$(jp "service/$1" '{.spec.clusterIP}'):9090"; }

# --- setup ------------------------------------------------------------------
node=${DITTOFS_NODE_NAME:-dittofs-node}
check "the node $node is Ready" wait_for 60 sh -c \
  "[ \"\$($KUBECTL get node $node -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}')\" = True ]"
check "a default StorageClass 'standard'" "$KUBECTL" get storageclass standard
# the CRD as this apiserver takes it (without its CEL rules below 1.28)
crd_install --force-conflicts >/dev/null
"$KUBECTL" wait --for condition=established --timeout=60s crd/dittoservers.dittofs.dittofs.com >/dev/null
"$KUBECTL" apply --server-side --force-conflicts -k "$root/deploy/rbac" >/dev/null
check "the ServiceAccount's kubeconfig" "$root/deploy/local/cluster.sh" \
  sa-kubeconfig "$opns" dittofs-operator "$tmp/sa.kubeconfig"
"$KUBECTL" create namespace "$ns" >/dev/null
start_operator "$tmp/op.log"
op=$last_pid

# --- 1. every sample to Running -------------------------------------------------
samples=()
t0=$(now_ms)
for f in "$root"/deploy/samples/*.yaml; do
  sample "$f" >"$tmp/$(basename "$f" .yaml).json"
  k apply -f "$tmp/$(basename "$f" .yaml).json" >/dev/null ||
    not_ok "apply $(basename "$f")"
  samples+=("$(jq -r 'select(.kind == "DittoServer") | .metadata.name' "$tmp/$(basename "$f" .yaml).json")")
done
for s in "${samples[@]}"; do
  want=Running
  [ "$(jp "ditto/$s" '{.spec.replicas}')" = 0 ] && want=Stopped
  if wait_for 180 phase_is "$s" "$want"; then
    ok "sample $s: $want"
  else
    not_ok "sample $s: $want" "phase '$(phase "$s")', Ready: $(ready_reason "$s") $(ready_msg "$s")"
    continue
  fi
  [ "$want" = Running ] || continue
  expect_eq "sample $s: the pod is Ready (kubelet)" True \
    "$(jp "pod/$s-0" '{.status.conditions[?(@.type=="Ready")].status}')"
  expect_eq "sample $s: availableReplicas 1" 1 "$(jp "ditto/$s" '{.status.availableReplicas}')"
  check "sample $s: the server's metrics answer on the Service's metrics port" \
    wait_for 20 sh -c "curl -sf --max-time 2 $(svc_url "$s")/metrics | grep -q '^dittofs_standin_up 1'"
done
echo "# all samples Running/Stopped after $(($(now_ms) - t0)) ms"
cp=$(jq -r 'select(.kind == "DittoServer") | .metadata.name' "$tmp/dittoserver-custom-port.json")
port=$(jp "ditto/$cp" '{.spec.nfsPort}')
check "the custom-port sample's server listens on its NFS port ($port) through the Service" \
  bash -c "exec 3<>/dev/tcp/$(jp "service/$cp" '{.spec.clusterIP}')/$port"
check "the S3 sample's pod gets the credentials from the Secret, not the ConfigMap" \
  sh -c "$KUBECTL -n $ns get pod dittofs-s3-0 -o json | jq -e '[.spec.containers[0].env[] | select(.valueFrom.secretKeyRef.name == \"dittofs-s3-credentials\")] | length == 2' &&
    ! $KUBECTL -n $ns get configmap dittofs-s3-config -o yaml | grep -q REPLACE_WITH"
check "PVCs bound by the provisioner" sh -c \
  "[ -z \"\$($KUBECTL -n $ns get pvc -o jsonpath='{range .items[?(@.status.phase!=\"Bound\")]}{.metadata.name} {end}')\" ]"

# --- 2. data through the Service survives the pod ------------------------------
ds=dittofs-sample
url=$(svc_url "$ds")
body="written at $(date +%s%N) through $url"
check "a file written through the Service's ClusterIP" \
  curl -sf --max-time 5 -X PUT --data-binary "$body" "$url/files/hello.txt"
expect_eq "and read back" "$body" "$(curl -sf --max-time 5 "$url/files/hello.txt")"
uid=$(jp "pod/$ds-0" '{.metadata.uid}')
k delete pod "$ds-0" --wait=false >/dev/null
check "the deleted pod comes back (StatefulSet)" wait_for 120 sh -c \
  "u=\$($KUBECTL -n $ns get pod $ds-0 -o jsonpath='{.metadata.uid}' 2>/dev/null); [ -n \"\$u\" ] && [ \"\$u\" != $uid ] &&
   [ \"\$($KUBECTL -n $ns get pod $ds-0 -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}')\" = True ]"
check "the DittoServer is Running again" wait_for 30 phase_is "$ds" Running
expect_eq "the file is still there (the PVC kept it)" "$body" \
  "$(curl -sf --max-time 5 "$url/files/hello.txt")"

# --- 3. what a user must see ----------------------------------------------------
mk() { # mk NAME IMAGE [STORAGECLASS]
  cat <<EOF
apiVersion: dittofs.dittofs.com/v1alpha1
kind: DittoServer
metadata:
  name: $1
spec:
  image: $2
  storage:
    metadataSize: 1Gi
EOF
  [ -n "${3:-}" ] && echo "    storageClassName: $3"
  return 0
}
mk noimage dittofs-local/does-not-exist:1 | k apply -f - >/dev/null
mk crash "$CRASH" | k apply -f - >/dev/null
mk nopvc "$STANDIN" no-such-class | k apply -f - >/dev/null
check "a missing image: phase Failed" wait_for 90 phase_is noimage Failed
check "a missing image: Ready=False ErrImagePull or ImagePullBackOff, naming the image" sh -c \
  "r=\$($KUBECTL -n $ns get ditto noimage -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].reason}');
   case \$r in ErrImagePull|ImagePullBackOff) ;; *) echo \"reason \$r\"; exit 1;; esac;
   $KUBECTL -n $ns get ditto noimage -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].message}' | grep -q does-not-exist"
check "a crashing server: CrashLoopBackOff" wait_for 120 sh -c \
  "[ \"\$($KUBECTL -n $ns get ditto crash -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].reason}')\" = CrashLoopBackOff ]"
check "a crashing server: its termination message in the condition" \
  sh -c "$KUBECTL -n $ns get ditto crash -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].message}' | grep -q 'simulated startup failure'"
expect_eq "a crashing server: phase Failed" Failed "$(phase crash)"
check "a PVC that cannot bind: Unschedulable" wait_for 60 sh -c \
  "[ \"\$($KUBECTL -n $ns get ditto nopvc -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].reason}')\" = Unschedulable ]"
check "a PVC that cannot bind: the scheduler's message" \
  sh -c "$KUBECTL -n $ns get ditto nopvc -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].message}' | grep -qi 'persistentvolumeclaim'"
expect_eq "a PVC that cannot bind: phase Pending" Pending "$(phase nopvc)"
k patch ditto noimage --type merge -p "{\"spec\":{\"image\":\"$STANDIN\"}}" >/dev/null
k delete pod noimage-0 --wait=false >/dev/null 2>&1
check "the image fixed: Running" wait_for 120 phase_is noimage Running
expect_eq "the image fixed: Ready=True" True "$(jp ditto/noimage '{.status.conditions[?(@.type=="Ready")].status}')"

# --- 4. an operator restart while real pods run writes nothing ---------------
settled() {
  local a b
  a=$(grep -c "$sa_user" "$DITTOFS_AUDIT_LOG")
  sleep 4
  b=$(grep -c "$sa_user" "$DITTOFS_AUDIT_LOG")
  [ "$a" = "$b" ]
}
k delete ditto crash nopvc --wait=false >/dev/null
kill -TERM "$op"
wait "$op"
wait_for 60 settled
mark=$(audit_mark)
start_operator "$tmp/op2.log"
op=$last_pid
check "the restarted operator reconciles every DittoServer" wait_for 30 sh -c \
  "[ \$(grep -c 'msg=\"reconciled\"' '$tmp/op2.log') -ge ${#samples[@]} ]"
sleep 8
writes=$(audit_since "$mark" |
  jq -c "select(.user.username == \"$sa_user\" and (.verb | test(\"create|update|patch|delete\")))" | wc -l)
expect_eq "zero writes after a restart while the pods run" 0 "$writes"
kill -TERM "$op"
wait "$op"
expect_eq "the operator exits 0 on SIGTERM" 0 "$?"

tap_summary
