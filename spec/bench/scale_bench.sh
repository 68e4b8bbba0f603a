#!/usr/bin/env bash
# controller_bench.sh at a large N (default 10,000), each part on a fresh
# control plane: the reference's namespace of N DittoServers takes longer to
# delete than the operator's run takes to set up, and a second part on the
# same apiserver and etcd would start from the first one's N objects.
#   spec/bench/scale_bench.sh [PARTS]   (PARTS default "ref op")
# Per part: the local cluster (deploy/local/cluster.sh) is stopped and its
# state removed, then started again without a node (DITTOFS_NODE=0) and with
# kube-controller-manager at QPS 200/400 (at its default 20 it needs about 30
# minutes for the pods and PVCs of 10,000 StatefulSets; both parts get the
# same). The operator part runs at the operator's defaults with 50 latency
# samples, idle CPU over IDLE=60 s and, with RESTART=1 (the default here),
# the restart measurement.
# Env: N=10000 BUILD_DIR=build OUT=<dir> (OUT/ref, OUT/op: each part's logs
# and summary.json); everything else as controller_bench.sh. Stops the
# cluster at the end. About 50 minutes at 10,000 on 2 cores.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
parts=${1:-ref op}
out=${OUT:-$(mktemp -d /tmp/scale-bench.XXXXXX)}
export N=${N:-10000} DITTOFS_NODE=0
export DITTOFS_KCM_EXTRA_ARGS=${DITTOFS_KCM_EXTRA_ARGS:---kube-api-qps=200 --kube-api-burst=400}
dir=${DITTOFS_CLUSTER_DIR:-/tmp/dittofs-cluster}

fresh() {
  deploy/local/cluster.sh stop --purge >/dev/null 2>&1 || true
  eval "$(deploy/local/cluster.sh start 2>"$out/cluster-start.log")"
  export KUBECONFIG DITTOFS_CLUSTER_DIR
}

for part in $parts; do
  echo "# scale_bench: $part, N=$N, fresh control plane in $dir ($(date +%T))"
  mkdir -p "$out/$part"
  fresh
  case $part in
  ref)
    PARTS=ref KEEP=1 TIMEOUT=${TIMEOUT:-3600} OUT=$out/ref \
      spec/bench/controller_bench.sh
    ;;
  op)
    PARTS=op OP_RUNS=default LAT_RUNS=${LAT_RUNS:-50} LAT_QUIET=${LAT_QUIET:-900} \
      IDLE=${IDLE:-60} SETTLE=1 KEEP=1 RESTART=${RESTART:-1} \
      TIMEOUT=${TIMEOUT:-3600} OUT=$out/op spec/bench/controller_bench.sh
    ;;
  *)
    echo "scale_bench: unknown part '$part' (ref, op)" >&2
    exit 2
    ;;
  esac
done
deploy/local/cluster.sh stop --purge >/dev/null 2>&1 || true
echo "# scale_bench: done ($(date +%T)); logs and summaries in $out"
