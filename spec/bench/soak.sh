#!/usr/bin/env bash
# Soak test against the local control plane (deploy/local/cluster.sh, without
# the node), issue 10 §3: MINUTES of churn at RATE operations a second over
# about N DittoServers whose pods become ready and unready, one operator
# (`dittofs-operator --namespace soak-PID`, QPS raised as in
# controller_bench.sh). After the warm-up, RSS, open fds and heap (glibc's
# bytes in use) must stay flat (growth <= GROWTH_MAX % over the last 30
# minutes, first vs last 5 minutes' means, or the last half of
# a shorter run), the reconcile p99 stable, and the operator must log no
# error (no fault is injected here, so every error line counts).
#
# The load (spec/bench/soak_load.py, one long-lived Python process per role,
# persistent HTTPS connections with the admin token; no kubectl per
# operation):
#   churn    fills the namespace to N DittoServers (deploy/samples/
#            dittoserver.yaml, FILL_RATE a second), then for MINUTES sends
#            RATE operations a second: creates (new names), spec updates
#            (image tag, memory limit, replicas 0 <-> 1) and deletes (and the
#            deleted server's two PVCs), weighted to keep the population
#            near N.
#   standin  THE POD STAND-IN, NOT A KUBELET. There is no node for N pods:
#            kube-controller-manager's StatefulSet controller creates them
#            and they would stay Pending. The stand-in creates a Node object
#            soak-standin-node (a stand-in as well: no kubelet, nothing
#            runs; its Lease and Ready condition renewed so that the node
#            lifecycle controller leaves it alone; tainted NoSchedule against
#            any real scheduler), binds every pod of the namespace to it
#            (pods/binding), then writes the pods' status (pods/status)
#            as a kubelet would: Running and not ready, ready, unready again
#            after FLIP s on average (a failing readiness probe, or with
#            probability CRASH a CrashLoopBackOff), ready again 5-30 s later;
#            and it deletes for good (grace 0) the pods being deleted, which
#            a bound pod waits for. The StatefulSet controller derives
#            readyReplicas from those pods, the operator's policy the
#            DittoServers' phase and Ready condition from readyReplicas and
#            the pods' container states (policies/dittoserver/status.lua).
#   sample   every INTERVAL s one CSV row on the operator (VmRSS; RssAnon;
#            heap = dittofs_heap_inuse_bytes, glibc's bytes allocated and
#            not freed (the policy sandboxes' Lua states included), and
#            dittofs_heap_free_bytes, the free bytes glibc keeps, which
#            RssAnon counts as well until malloc_trim returns them; open
#            fds; CPU; reconciles/s; the window's reconcile p50/p99 from the
#            deltas of controller_runtime_reconcile_time_seconds' buckets;
#            workqueue depth; informer cache bytes; error and warning log
#            lines; the churn's operations/s and the stand-in's pod counts).
#
# Usage: spec/bench/soak.sh
#        spec/bench/soak.sh report OUT   (the report and the plot again
#                                        from a finished run's files)
#   env: MINUTES=60 N=500 RATE=10 INTERVAL=10 FILL_RATE=25 FLIP=300
#        CRASH=0.25 GROWTH_MAX=5 QPS=1000 BURST=2000 WORKERS=4
#        POD_IPS=0 (1: the stand-in gives pods an IP; then every readiness
#        flip also costs the endpoints controllers two writes)
#        BUILD_DIR=build OUT=<dir> (default a temp dir) PLOT=1 (0: no PNG)
#        KEEP=1 (keep the namespace and the Node)
#        CLUSTER=private (default: a control plane of its own in
#        /tmp/dittofs-cluster-soak, started fresh and stopped at the end,
#        its kube-controller-manager at KCM_QPS/2*KCM_QPS: at the default 20
#        its garbage collector falls behind the deletes, ~10 per deleted
#        DittoServer, and the operator caches the growing backlog of
#        orphans, which is not the operator's growth) or shared (the
#        default local control plane, as it is)
#        KCM_QPS=200
# The node (deploy/local/node.sh: kubelet, kube-scheduler) must not run: a
# real scheduler would place the soak's pods on the real node. The script
# says so and stops rather than stopping it for everyone.
# Output: progress lines starting with "#", key=value results (the report
# of soak_load.py), summary_json=... (also $OUT/summary.json), the CSV
# ($OUT/samples.csv; per second: $OUT/ops.csv) and the plot ($OUT/soak.png,
# gnuplot; the Debian package gnuplot-nox is installed when missing).
# Exit 1 when a criterion fails.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
here=$root/spec/bench
build=${BUILD_DIR:-$root/build}
MINUTES=${MINUTES:-60}
N=${N:-500}
RATE=${RATE:-10}
INTERVAL=${INTERVAL:-10}
FILL_RATE=${FILL_RATE:-25}
FLIP=${FLIP:-300}
CRASH=${CRASH:-0.25}
GROWTH_MAX=${GROWTH_MAX:-5}
QPS=${QPS:-1000}
BURST=${BURST:-2000}
WORKERS=${WORKERS:-4}
PLOT=${PLOT:-1}
POD_IPS=${POD_IPS:-0}
KEEP=${KEEP:-0}
op=$build/dittofs-operator
load=$here/soak_load.py

# report_and_plot: the report (sets rc) and the PNG, from the files in $OUT.
report_and_plot() {
  echo "# soak: samples $OUT/samples.csv (per second: $OUT/ops.csv)"
  set +e
  python3 "$load" report --samples "$OUT/samples.csv" --hist "$OUT/hist.csv" \
    --lines "$OUT/log_lines.txt" --interval "$INTERVAL" \
    --growth-max "$GROWTH_MAX" | tee "$OUT/report.txt"
  rc=${PIPESTATUS[0]}
  set -e
  sed -n 's/^summary_json=//p' "$OUT/report.txt" >"$OUT/summary.json"
  [ "$PLOT" = 1 ] || return 0
  # x: minutes since the first sample; the dashed line starts the analysis
  # span (the growth criteria).
  local tfirst span dur
  tfirst=$(awk -F, 'NR == 2 { print $1 }' "$OUT/samples.csv")
  span=$(sed -n 's/^span_s=//p' "$OUT/report.txt")
  dur=$(sed -n 's/^duration_s=//p' "$OUT/report.txt")
  gnuplot <<EOF 2>"$OUT/gnuplot.err" || echo "# soak: gnuplot failed: $(cat "$OUT/gnuplot.err")"
set terminal pngcairo size 1100,1500 font "sans,9"
set output "$OUT/soak.png"
set datafile separator ","
set key top left horizontal
set grid
set xlabel "minutes"
set xrange [0:*]
set yrange [0:*]
set offsets 0, 0, graph 0.15, 0
x0 = ($dur - $span) / 60.0
set arrow 1 from x0, graph 0 to x0, graph 1 nohead dashtype 2 lc rgb "gray40"
t(c) = (column(c) - $tfirst) / 60.0
set multiplot layout 6,1 title "soak.sh: N=$N RATE=$RATE/s MINUTES=$MINUTES; pods: a stand-in, not a kubelet; right of the dashed line: the growth span"
set ylabel "RSS MiB"
plot "$OUT/samples.csv" every ::1 using (t(1)):(\$3/1024) with lines lw 2 title "VmRSS"
set ylabel "heap MiB"
plot "$OUT/samples.csv" every ::1 using (t(1)):(\$4/1024) with lines title "RssAnon", \
     "" every ::1 using (t(1)):(\$29/1048576) with lines lw 2 title "heap in use (mallinfo2)", \
     "" every ::1 using (t(1)):(\$30/1048576) with lines title "heap free, held by glibc", \
     "" every ::1 using (t(1)):((\$29-\$12)/1048576) with lines title "in use minus the cache", \
     "" every ::1 using (t(1)):(\$12/1048576) with lines title "informer cache"
set ylabel "open fds"
plot "$OUT/samples.csv" every ::1 using (t(1)):5 with lines lw 2 title "fds"
set ylabel "reconcile ms"
plot "$OUT/samples.csv" every ::1 using (t(1)):10 with lines lw 2 title "p99 (window)", \
     "" every ::1 using (t(1)):9 with lines title "p50 (window)"
set ylabel "per second"
plot "$OUT/samples.csv" every ::1 using (t(1)):18 with lines lw 2 title "churn ops/s", \
     "" every ::1 using (t(1)):7 with lines title "reconciles/s", \
     "" every ::1 using (t(1)):6 with lines title "operator CPU %"
set ylabel "pods"
plot "$OUT/samples.csv" every ::1 using (t(1)):22 with lines lw 2 title "ready", \
     "" every ::1 using (t(1)):23 with lines title "unready", \
     "" every ::1 using (t(1)):24 with lines title "pending", \
     "" every ::1 using (t(1)):19 with lines title "DittoServers", \
     "" every ::1 using (t(1)):(\$27-\$26) with lines title "GC backlog (StatefulSets of deleted DittoServers)"
unset multiplot
EOF
  [ -s "$OUT/soak.png" ] && echo "plot=$OUT/soak.png"
  return 0
}

# `soak.sh report OUT`: the report and the plot again from a run's files.
if [ "${1:-}" = report ]; then
  OUT=${2:?usage: soak.sh report OUT}
  # shellcheck source=/dev/null
  . "$OUT/params.env"
  rc=0
  report_and_plot
  exit "$rc"
fi

CLUSTER=${CLUSTER:-private}
KCM_QPS=${KCM_QPS:-200}
if [ "$CLUSTER" = private ]; then
  export DITTOFS_CLUSTER_DIR=/tmp/dittofs-cluster-soak
  export DITTOFS_KCM_EXTRA_ARGS="--kube-api-qps=$KCM_QPS --kube-api-burst=$((2 * KCM_QPS))"
  # fresh: no backlog of an earlier run's namespaces
  "$root/deploy/local/cluster.sh" stop >/dev/null 2>&1 || true
  rm -rf "$DITTOFS_CLUSTER_DIR"
fi
set -a
eval "$(DITTOFS_NODE=0 "$root/deploy/local/cluster.sh" start)"
set +a
KUBECTL=${DITTOFS_KUBECTL:-kubectl}
if [ "$CLUSTER" != private ] && "$root/deploy/local/node.sh" status 2>/dev/null | grep -q '^kube-scheduler *running'; then
  echo "# soak: the node is running (deploy/local/node.sh status): its scheduler" \
    "would place the soak's pods; stop it first (deploy/local/node.sh stop)" >&2
  exit 2
fi

OUT=${OUT:-$(mktemp -d /tmp/soak.XXXXXX)}
mkdir -p "$OUT"
ns=soak-$$
printf 'MINUTES=%s N=%s RATE=%s INTERVAL=%s GROWTH_MAX=%s PLOT=%s\n' \
  "$MINUTES" "$N" "$RATE" "$INTERVAL" "$GROWTH_MAX" "$PLOT" >"$OUT/params.env"
echo "# soak: MINUTES=$MINUTES N=$N RATE=$RATE INTERVAL=$INTERVAL FLIP=$FLIP CRASH=$CRASH" \
  "qps=$QPS burst=$BURST workers=$WORKERS namespace=$ns out=$OUT"
echo "# soak: pods are driven by a pod stand-in, not a kubelet, on Node" \
  "soak-standin-node, a Node object without a kubelet (see the header)"

pids=() # processes this script started, stopped in reverse on exit
cleanup() {
  local i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill "${pids[i]}" 2>/dev/null || true
  done
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    wait "${pids[i]}" 2>/dev/null || true
  done
  if [ "$KEEP" != 1 ]; then
    # Pods bound to the Node are deleted by the pod garbage collector once
    # the Node is gone (no kubelet confirms their deletion).
    "$KUBECTL" delete namespace "$ns" --wait=false >/dev/null 2>&1 || true
    "$KUBECTL" delete node soak-standin-node --wait=false >/dev/null 2>&1 || true
    if [ "$CLUSTER" = private ]; then
      "$root/deploy/local/cluster.sh" stop >/dev/null 2>&1 || true
    fi
  fi
}
trap cleanup EXIT

# gnuplot for the PNG, installed the way deploy/local/deps.sh installs.
if [ "$PLOT" = 1 ] && ! command -v gnuplot >/dev/null; then
  sudo=
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  echo "# soak: installing gnuplot-nox"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null >/dev/null
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    --no-install-recommends gnuplot-nox >/dev/null </dev/null
fi

[ -x "$op" ] || {
  cmake -S "$root" -B "$build" -DWERROR=ON >/dev/null
  cmake --build "$build" -j2 --target dittofs-operator >/dev/null
}

# The CRD, as this apiserver takes it (without its CEL rules below 1.28).
if ! "$KUBECTL" get crd dittoservers.dittofs.dittofs.com >/dev/null 2>&1; then
  # shellcheck source=spec/integration/crd_install.sh
  . "$root/spec/integration/crd_install.sh"
  crd_install --force-conflicts >/dev/null
fi
"$KUBECTL" wait --for condition=established --timeout=60s \
  crd/dittoservers.dittofs.dittofs.com >/dev/null
"$KUBECTL" create namespace "$ns" >/dev/null
"$KUBECTL" create --dry-run=client -o json \
  -f "$root/deploy/samples/dittoserver.yaml" >"$OUT/sample.json"

free_port() {
  local p i
  for ((i = 0; i < 200; i++)); do
    p=$((20000 + RANDOM % 12000))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && continue
    echo "$p"
    return 0
  done
  return 1
}

mport=$(free_port)
hport=$(free_port)
"$op" --kubeconfig "$KUBECONFIG" --namespace "$ns" --workers "$WORKERS" \
  --kube-api-qps "$QPS" --kube-api-burst "$BURST" \
  --metrics-bind-address "127.0.0.1:$mport" \
  --health-probe-bind-address "127.0.0.1:$hport" >"$OUT/operator.log" 2>&1 &
op_pid=$!
pids+=("$op_pid")
for ((i = 0; i < 300; i++)); do
  kill -0 "$op_pid" 2>/dev/null || { echo "# operator exited:"; tail -n 20 "$OUT/operator.log"; exit 1; }
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$hport/readyz")" = 200 ] && break
  sleep 0.1
done
echo "# soak: operator pid $op_pid, metrics 127.0.0.1:$mport, log $OUT/operator.log"

kube_args=(--server "$DITTOFS_APISERVER" --ca "$DITTOFS_CA_CERT"
  --token-file "$DITTOFS_ADMIN_TOKEN_FILE" --namespace "$ns")
python3 -u "$load" standin "${kube_args[@]}" --state "$OUT/standin.json" \
  --errors "$OUT/standin.err" --flip "$FLIP" --crash "$CRASH" --pod-ips "$POD_IPS" \
  >"$OUT/standin.log" 2>&1 &
pids+=($!)
standin_pid=$!
python3 -u "$load" sample --pid "$op_pid" \
  --metrics "http://127.0.0.1:$mport/metrics" --log "$OUT/operator.log" \
  --interval "$INTERVAL" --out "$OUT/samples.csv" --hist "$OUT/hist.csv" \
  --lines "$OUT/log_lines.txt" --churn-state "$OUT/churn.json" \
  --standin-state "$OUT/standin.json" >"$OUT/sample.log" 2>&1 &
pids+=($!)
sample_pid=$!
python3 -u "$load" churn "${kube_args[@]}" --state "$OUT/churn.json" \
  --errors "$OUT/churn.err" --sample "$OUT/sample.json" --n "$N" \
  --rate "$RATE" --fill-rate "$FILL_RATE" --minutes "$MINUTES" \
  --ops-csv "$OUT/ops.csv" >"$OUT/churn.log" 2>&1 &
pids+=($!)
churn_pid=$!

ls -l "/proc/$op_pid/fd" >"$OUT/fds_start.txt" 2>&1 || true
# Progress every minute until the churn ends.
t0=${EPOCHREALTIME%.*}
last=$t0
filled=0
while kill -0 "$churn_pid" 2>/dev/null; do
  for p in "$op_pid" "$standin_pid" "$sample_pid"; do
    kill -0 "$p" 2>/dev/null && continue
    echo "# soak: process $p exited early"
    tail -n 20 "$OUT/operator.log" "$OUT/standin.log" "$OUT/sample.log"
    exit 1
  done
  now=${EPOCHREALTIME%.*}
  if [ "$filled" = 0 ] && grep -q '"phase": "churn"' "$OUT/churn.json" 2>/dev/null; then
    filled=1
    echo "# soak: filled to N after $((now - t0)) s; churn for $MINUTES min"
  fi
  if [ $((now - last)) -ge 60 ] && [ -s "$OUT/samples.csv" ]; then
    last=$now
    tail -n 1 "$OUT/samples.csv" | awk -F, -v m=$(((now - t0) / 60)) '{
      printf "# %3d min: rss %.1f MiB anon %.1f MiB heap in use %.1f free %.1f MiB fds %d cpu %s%% rec/s %s p99 %s ms ops/s %s population %s pods ready/unready/pending %s/%s/%s gc backlog %d errors %d warns %d\n",
        m, $3 / 1024, $4 / 1024, $29 / 1048576, $30 / 1048576, $5, $6, $7, $10, $18, $19, $22, $23, $24, $27 - $26, $16, $17 }'
  fi
  sleep 2
done
{ ls -l "/proc/$op_pid/fd"; ss -tanp | grep "pid=$op_pid,"; } >"$OUT/fds_end.txt" 2>&1 || true
wait "$churn_pid" || { echo "# soak: churn failed"; tail -n 20 "$OUT/churn.log"; exit 1; }
cat "$OUT/churn.log"
# One more window so that the last operations' reconciles are sampled.
sleep "$INTERVAL"
kill "$sample_pid" 2>/dev/null || true
wait "$sample_pid" 2>/dev/null || true

echo "# soak: stand-in: $(cat "$OUT/standin.json")"
report_and_plot
echo "out=$OUT"
exit "$rc"
