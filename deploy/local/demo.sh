#!/usr/bin/env bash
# The README's run command: installs what is missing, builds the operator,
# starts the local control plane (etcd + kube-apiserver +
# kube-controller-manager, cached under ~/.cache after the first build),
# installs the DittoServer CRD and the operator's RBAC (deploy/rbac), runs
# the operator under its ServiceAccount, applies the README's sample, plays
# the kubelet so the pod turns ready, and shows the DittoServer Running with
# its children, Events and a few metrics. The operator is stopped (SIGTERM)
# at the end; the control plane keeps running.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
say() { printf '\n==> %s\n' "$*"; }

say "installing build dependencies"
deploy/local/deps.sh
say "building"
cmake -S . -B build >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
say "starting the local control plane"
deploy/local/cluster.sh start
set -a
eval "$(deploy/local/cluster.sh env)"
set +a
kubectl=${DITTOFS_KUBECTL:-kubectl}

say "installing the DittoServer CRD and the operator's RBAC"
"$kubectl" apply --server-side --force-conflicts -f crd/dittoserver.yaml
"$kubectl" wait --for condition=established --timeout=60s \
  crd/dittoservers.dittofs.dittofs.com
"$kubectl" apply --server-side --force-conflicts -k deploy/rbac

work=$(mktemp -d)
op_pid=
stop_operator() {
  if [ -n "$op_pid" ] && kill -0 "$op_pid" 2>/dev/null; then
    kill -TERM "$op_pid"
    wait "$op_pid" || true
  fi
  op_pid=
}
trap 'stop_operator; rm -rf "$work"' EXIT

say "running the operator as ServiceAccount dittofs-system/dittofs-operator"
deploy/local/cluster.sh sa-kubeconfig dittofs-system dittofs-operator \
  "$work/operator.kubeconfig"
log=/tmp/dittofs-operator-demo.log
build/dittofs-operator --kubeconfig "$work/operator.kubeconfig" \
  --metrics-bind-address 127.0.0.1:0 --health-probe-bind-address 127.0.0.1:0 \
  --leader-elect --leader-election-namespace dittofs-system >"$log" 2>&1 &
op_pid=$!
for _ in $(seq 1 100); do
  grep -q 'health_port=' "$log" && break
  sleep 0.1
done
health=$(sed -n 's/.*health_port=\([0-9]*\).*/\1/p' "$log" | head -n1)
metrics=$(sed -n 's/.*metrics_port=\([0-9]*\).*/\1/p' "$log" | head -n1)
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$health/readyz" >/dev/null && break
  sleep 0.2
done
echo "operator pid $op_pid, log $log, /readyz: $(curl -s "http://127.0.0.1:$health/readyz")"

name=dittofs-sample
say "applying the README sample (deploy/samples/dittoserver.yaml)"
"$kubectl" apply -f deploy/samples/dittoserver.yaml
for _ in $(seq 1 100); do
  "$kubectl" get statefulset "$name" >/dev/null 2>&1 && break
  sleep 0.2
done
"$kubectl" get configmap,service,statefulset -l "dittofs.dittofs.com/server=$name"

say "playing the kubelet: marking the pod Running and Ready"
deploy/local/kubelet.sh ready default "$name" --timeout 120

say "the reconciled DittoServer"
for _ in $(seq 1 100); do
  phase=$("$kubectl" get ditto "$name" -o jsonpath='{.status.phase}')
  [ "$phase" = Running ] && break
  sleep 0.2
done
"$kubectl" get ditto
"$kubectl" get ditto "$name" -o jsonpath='{range .status.conditions[*]}{.type}={.status} ({.reason}): {.message}{"\n"}{end}'
"$kubectl" get events --field-selector "involvedObject.name=$name,involvedObject.kind=DittoServer"

say "a few of the operator's metrics (http://127.0.0.1:$metrics/metrics)"
curl -s "http://127.0.0.1:$metrics/metrics" |
  grep -E '^(controller_runtime_reconcile_total|workqueue_depth|leader_election_master_status|process_resident_memory_bytes|dittofs_policy_info)' || true

say "the operator's log"
grep -E 'msg="(reconciled|became leader|controller started)"' "$log" | tail -n 8 || true

stop_operator
if [ "$phase" != Running ]; then
  echo "the DittoServer did not become Running (phase '$phase'); see $log" >&2
  exit 1
fi
say "done: the control plane keeps running (deploy/local/cluster.sh stop ends it);
    run the operator again with:
    build/dittofs-operator --kubeconfig $KUBECONFIG"
