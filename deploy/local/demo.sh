#!/usr/bin/env bash
# The README's run command: installs what is missing, builds the operator,
# starts the local test ground (etcd + kube-apiserver + kube-controller-manager
# of the current Kubernetes release, and a real node: containerd, kubelet,
# CNI, kube-scheduler, kube-proxy, a PVC provisioner; all cached under ~/.cache
# after the first build), installs the DittoServer CRD and the operator's RBAC
# (deploy/rbac), runs the operator under its ServiceAccount, applies the
# README's sample, waits for its real pod, writes and reads a file through the
# Service, and shows the DittoServer Running with its children, Events and a
# few metrics. The operator is stopped (SIGTERM) at the end; the test ground
# keeps running (deploy/local/cluster.sh stop ends it).
#
# The pod runs the DittoFS stand-in image (deploy/local/standin/): DittoFS's
# own source cannot be fetched on these machines (the Go module proxy refuses
# github.com/marmos91/dittofs), so no NFS client can mount the share here; the
# stand-in reads the rendered config, listens on the NFS port and serves a
# small file API on the metrics port, which the demo writes through.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
say() { printf '\n==> %s\n' "$*"; }

say "installing build dependencies"
deploy/local/deps.sh
say "building"
cmake -S . -B build >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
say "starting the local control plane and node (Kubernetes ${DITTOFS_KUBE_VERSION:-current})"
deploy/local/cluster.sh start >/dev/null
set -a
eval "$(deploy/local/cluster.sh env)"
set +a
kubectl=${DITTOFS_KUBECTL:-kubectl}

say "installing the DittoServer CRD and the operator's RBAC"
# Below Kubernetes 1.28 the apiserver does not know the CRD's CEL rules
# (x-kubernetes-validations): crd_install drops them there (README, Validation).
KUBECTL=$kubectl
# shellcheck source=../../spec/integration/crd_install.sh
. "$root/spec/integration/crd_install.sh"
crd_install --force-conflicts
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
standin=${DITTOFS_STANDIN_IMAGE:-dittofs-local/dittofs-standin:0.1}
say "applying the README sample (deploy/samples/dittoserver.yaml, image $standin)"
"$kubectl" create --dry-run=client -o json -f deploy/samples/dittoserver.yaml |
  jq --arg img "$standin" '.spec.image = $img' | "$kubectl" apply -f -
for _ in $(seq 1 100); do
  "$kubectl" get statefulset "$name" >/dev/null 2>&1 && break
  sleep 0.2
done
"$kubectl" get configmap,service,statefulset -l "dittofs.dittofs.com/server=$name"

say "waiting for the real pod (scheduler, PVCs from the provisioner, kubelet)"
"$kubectl" wait --for=condition=Ready --timeout=180s "pod/$name-0"
"$kubectl" get pod,pvc -l "app.kubernetes.io/instance=$name" -o wide

say "writing and reading a file through the Service's ClusterIP"
ip=$("$kubectl" get service "$name" -o jsonpath='{.spec.clusterIP}')
msg="hello from $(hostname) at $(date -u +%FT%TZ)"
curl -sf --max-time 5 -X PUT --data-binary "$msg" "http://$ip:9090/files/hello.txt"
got=$(curl -sf --max-time 5 "http://$ip:9090/files/hello.txt")
echo "wrote: $msg"
echo "read:  $got"
[ "$got" = "$msg" ] || { echo "the file read back differs" >&2; exit 1; }

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
