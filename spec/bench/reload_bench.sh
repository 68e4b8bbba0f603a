#!/usr/bin/env bash
# Live policy reload benchmark (issue 9 section 3, "Numbers") on the local
# control plane (deploy/local/cluster.sh start; the node is not needed):
#
#   accepted  N DittoServers (replicas 0) converged under the embedded
#             policies; the operator (a process with --kubeconfig, admin)
#             watches a policy directory that this script updates exactly as
#             the kubelet's AtomicWriter updates a ConfigMap volume (cm_write:
#             a new timestamped directory, ..data_tmp renamed over ..data).
#             Each of RUNS swaps brings a valid policy whose StatefulSet pod
#             template carries a new annotation value. Timed from the rename
#             (the moment the kubelet's update becomes visible) to:
#               detect_ms    the operator's "policies reloaded" log line
#                            (noticed, loaded, tried on N, swapped in);
#               converge_ms  the end of the reconcile that wrote the last of
#                            the N DittoServers (log time stamps, ms);
#             then every StatefulSet is checked for the new value, and the
#             operator's writes (the apiserver's audit log, Events aside)
#             are counted: N expected, one StatefulSet patch each; also
#             the CPU the operator used meanwhile and the p50 and max
#             duration of a reconcile that wrote.
#   rejected  a set with a runtime error in render, then one with an endless
#             loop: the operator's writes over SETTLE s after the refusal
#             (0 expected) and the time it spent on the refusal (the log's
#             ms=: load plus the trial on N DittoServers, during which the
#             event loop does nothing else).
#
# Usage: spec/bench/reload_bench.sh
#   env: N=100 RUNS=3 QPS=1000 BURST=2000 (the operator's --kube-api-qps and
#        --kube-api-burst)
#        WORKERS=4 SETTLE=5 BUILD_DIR=build KEEP=1 (keep the namespace)
# Output: "#" progress lines, key=value results, one JSON summary line.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$root/build}
BIN=${DITTOFS_OPERATOR:-$build/dittofs-operator}
N=${N:-100}
RUNS=${RUNS:-3}
QPS=${QPS:-1000}
BURST=${BURST:-2000}
WORKERS=${WORKERS:-4}
SETTLE=${SETTLE:-5}
STANDIN=${DITTOFS_STANDIN_IMAGE:-dittofs-local/dittofs-standin:0.1}

eval "$("$root/deploy/local/cluster.sh" env)"
KUBECTL=${DITTOFS_KUBECTL:-kubectl}
: "${KUBECONFIG:?the local control plane is not running: deploy/local/cluster.sh start}"
: "${DITTOFS_AUDIT_LOG:?no audit log in the environment of the control plane}"
admin=admin # the admin token's user (deploy/local/cluster.sh, tokens.csv)

ns="reload-bench-$$"
tmp=$(mktemp -d)
pol="$tmp/policies"
op=
cleanup() {
  [ -n "$op" ] && kill -9 "$op" 2>/dev/null
  wait 2>/dev/null || true
  if [ -z "${KEEP:-}" ]; then
    "$KUBECTL" delete namespace "$ns" --wait=false >/dev/null 2>&1 || true
    rm -rf "$tmp"
  else
    echo "# kept: namespace $ns, $tmp"
  fi
}
trap cleanup EXIT

now_ms() { echo $(($(date +%s%N) / 1000000)); }
# log_ms LINE: the ms time stamp of an operator log line (text format)
log_ms() { date -d "$(sed -n 's/^ts=\([^ ]*\) .*/\1/p' <<<"$1")" +%s%3N; }

# cm_write DIR [SRC]: the kubelet's AtomicWriter.Write, shared with the
# reload tests; sets $swapped_ms at the rename of ..data_tmp over ..data.
# shellcheck source=../integration/configmap_volume.sh
. "$root/spec/integration/configmap_volume.sh"

audit_mark() { echo "$(stat -c %i "$DITTOFS_AUDIT_LOG"):$(wc -l <"$DITTOFS_AUDIT_LOG")"; }
# writes MARK: the operator's mutating requests since MARK, Events aside
writes() {
  if [ "$(stat -c %i "$DITTOFS_AUDIT_LOG")" != "${1%%:*}" ]; then
    echo "# the audit log rotated during a measurement" >&2
    echo -1
    return
  fi
  tail -n +"$((${1##*:} + 1))" "$DITTOFS_AUDIT_LOG" |
    jq -c "select(.user.username == \"$admin\" and
      (.userAgent // \"\" | test(\"^dittofs-operator\")) and
      (.verb | test(\"create|update|patch|delete\")) and
      .objectRef.namespace == \"$ns\" and .objectRef.resource != \"events\")" |
    wc -l
}
wait_until() { # SECONDS CMD...
  local end=$(($(now_ms) + $1 * 1000))
  shift
  until "$@" >/dev/null 2>&1; do
    [ "$(now_ms)" -lt "$end" ] || return 1
    sleep 0.1
  done
}
# cpu_ms PID: user + system CPU time of a process in ms
cpu_ms() {
  awk -v hz="$(getconf CLK_TCK)" '{ print int(($14 + $15) * 1000 / hz) }' "/proc/$1/stat"
}
# cp_cpu_ms: the control plane's CPU (etcd, kube-apiserver,
# kube-controller-manager) as "ETCD APISERVER KCM" in ms (pid files of the
# state dir; 0 for one that is not there)
cp_cpu_ms() {
  local n pid out=
  for n in etcd kube-apiserver kube-controller-manager; do
    pid=$(cat "$DITTOFS_CLUSTER_DIR/$n.pid" 2>/dev/null || true)
    if [ -n "$pid" ] && [ -r "/proc/$pid/stat" ]; then
      out+="$(cpu_ms "$pid") "
    else
      out+="0 "
    fi
  done
  echo "${out% }"
}
count_lines() { grep -c "$1" "$tmp/op.log" || true; }
converged() {
  "$KUBECTL" -n "$ns" get ditto -o json | jq -e --argjson n "$N" '[.items[] |
    select(.status.observedGeneration == .metadata.generation and
    (.status.conditions[] | select(.type=="Reconciled") | .reason) == "ChildrenUpToDate")]
    | length == $n' >/dev/null
}
annotated() { # VALUE: every StatefulSet's pod template carries it
  [ "$("$KUBECTL" -n "$ns" get statefulsets -o json | jq --arg v "$1" \
    '[.items[] | select(.spec.template.metadata.annotations["example.com/policy-run"] == $v)] | length')" = "$N" ]
}
# written_all LINE: after LINE of the operator's log, the reload line and
# then reconciles with writes of N distinct DittoServers
written_all() {
  [ "$(tail -n +"$(($1 + 1))" "$tmp/op.log" |
    sed -n '/msg="policies reloaded/,$p' | grep 'msg="reconciled"' |
    grep -v ' writes=0 ' | grep -o 'key=[^ ]*' | sort -u | wc -l)" -ge "$N" ]
}
quiet() { local m; m=$(audit_mark); sleep 2; [ "$(writes "$m")" = 0 ]; }
# settled: kube-controller-manager used at most 60 ms of CPU over 2 s. After
# the N DittoServers are created it goes on for a while at its own client
# rate (20/s: Endpoints and EndpointSlices for their 2N Services), and a
# swap timed meanwhile measured that backlog too (first swaps 2.5 s, the
# next ones 0.9-2.0 s).
settled() {
  local a b
  read -r _ _ a <<<"$(cp_cpu_ms)"
  sleep 2
  read -r _ _ b <<<"$(cp_cpu_ms)"
  [ $((b - a)) -le 60 ]
}

# --- setup -------------------------------------------------------------------
# shellcheck source=../integration/crd_install.sh
. "$root/spec/integration/crd_install.sh"
crd_install --force-conflicts >/dev/null # without its CEL rules below 1.28
"$KUBECTL" wait --for condition=established --timeout=60s \
  crd/dittoservers.dittofs.dittofs.com >/dev/null
"$KUBECTL" create namespace "$ns" >/dev/null
for i in $(seq 1 "$N"); do
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
done >"$tmp/fleet.yaml"
"$KUBECTL" -n "$ns" apply -f "$tmp/fleet.yaml" >/dev/null
mkdir "$pol"
cm_write "$pol"
"$BIN" --kubeconfig "$KUBECONFIG" --namespace "$ns" --policies "$pol" \
  --kube-api-qps "$QPS" --kube-api-burst "$BURST" --workers "$WORKERS" \
  --metrics-bind-address 0 --health-probe-bind-address 0 \
  >"$tmp/op.log" 2>&1 &
op=$!
echo "# $N DittoServers, operator pid $op (qps $QPS, burst $BURST, workers $WORKERS)"
wait_until $((60 + N)) converged || { echo "not converged" >&2; exit 1; }
wait_until 60 quiet || true
wait_until 120 settled || echo "# kube-controller-manager still busy after 120 s" >&2
echo "# converged under the embedded policies"

# --- accepted swaps ----------------------------------------------------------
policy() { # DIR VALUE: the default policy plus a pod template annotation
  mkdir -p "$1"
  cat >"$1/dittoserver.lua" <<EOF
local policy = require("dittoserver.default").new()
local render = policy.render
function policy.render(ds, ctx)
  local objects = render(ds, ctx)
  for _, o in ipairs(objects) do
    if o.kind == "StatefulSet" then
      local md = o.spec.template.metadata
      md.annotations = md.annotations or {}
      md.annotations["example.com/policy-run"] = "$2"
    end
  end
  return objects
end
return policy
EOF
}
detects=() converges=() wcounts=() cpus=()
for run in $(seq 1 "$RUNS"); do
  policy "$tmp/v$run" "run-$run"
  wait_until 60 quiet || true
  wait_until 60 settled || true
  before=$(count_lines 'msg="policies reloaded')
  lines_before=$(wc -l <"$tmp/op.log")
  mark=$(audit_mark)
  c0=$(cpu_ms "$op")
  read -r e0 a0 k0 <<<"$(cp_cpu_ms)"
  cm_write "$pol" "$tmp/v$run"
  t0=$swapped_ms
  wait_until 30 sh -c "[ \$(grep -c 'msg=\"policies reloaded' '$tmp/op.log') -gt $before ]" ||
    { echo "run $run: not reloaded" >&2; tail -n 5 "$tmp/op.log" >&2; exit 1; }
  # Watched in the operator's log, not by listing StatefulSets: a kubectl
  # every 100 ms would take CPU from the apiserver being measured.
  wait_until 60 written_all "$lines_before" ||
    { echo "run $run: fewer than $N reconciles with writes" >&2; exit 1; }
  sleep 1
  annotated "run-$run" || { echo "run $run: not applied everywhere" >&2; exit 1; }
  tail -n +"$((lines_before + 1))" "$tmp/op.log" >"$tmp/run$run.log"
  rl=$(grep -m1 'msg="policies reloaded' "$tmp/run$run.log")
  detect=$(($(log_ms "$rl") - t0))
  # The reconcile that wrote the last of the N: the N-th distinct key with
  # writes after the reload line.
  last=$(sed -n '/msg="policies reloaded/,$p' "$tmp/run$run.log" |
    grep 'msg="reconciled"' | grep -v ' writes=0 ' |
    awk -v n="$N" '{ for (i = 1; i <= NF; i++) if ($i ~ /^key=/) k = $i;
      if (!(k in seen)) { seen[k] = 1; c++; if (c == n) { print; exit } } }')
  if [ -z "$last" ]; then
    echo "run $run: fewer than $N reconciles with writes in the log" >&2
    exit 1
  fi
  converge=$(($(log_ms "$last") - t0))
  cpu=$(($(cpu_ms "$op") - c0))
  # The control plane's CPU from the swap to here: the converge, 1 s more
  # and one list of the StatefulSets (the StatefulSet controller's
  # ControllerRevisions and status updates included).
  read -r e1 a1 k1 <<<"$(cp_cpu_ms)"
  cpcpu="etcd $((e1 - e0)) ms, kube-apiserver $((a1 - a0)) ms, kube-controller-manager $((k1 - k0)) ms"
  durs=$(sed -n '/msg="policies reloaded/,$p' "$tmp/run$run.log" |
    grep 'msg="reconciled"' | grep -v ' writes=0 ' |
    sed -n 's/.*duration=\([0-9.]*\)ms.*/\1/p' | sort -n |
    awk '{ a[NR] = $1 } END { printf "%d %d", a[int((NR + 1) / 2)], a[NR] }')
  wait_until 60 quiet || true
  w=$(writes "$mark")
  read -r dur_p50 dur_max <<<"$durs"
  echo "# run $run: detect_ms=$detect converge_ms=$converge writes=$w ($(sed -n 's/.* ms=\([0-9.]*\).*/\1/p' <<<"$rl") ms to load and try; operator CPU ${cpu} ms; reconcile with a write p50 ${dur_p50} ms, max ${dur_max} ms; control plane CPU: $cpcpu)"
  detects+=("$detect") converges+=("$converge") wcounts+=("$w") cpus+=("$cpu")
done

# --- rejected sets -----------------------------------------------------------
mkdir "$tmp/runtime" "$tmp/loop"
cat >"$tmp/runtime/dittoserver.lua" <<'EOF'
local policy = require("dittoserver.default").new()
function policy.render(ds)
  error("reload-bench: cannot render " .. ds.metadata.name)
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
reject() { # SRC: prints "WRITES MS"
  local before mark line
  wait_until 60 quiet || true
  before=$(count_lines 'msg="policies refused')
  mark=$(audit_mark)
  cm_write "$pol" "$1"
  wait_until 120 sh -c "[ \$(grep -c 'msg=\"policies refused' '$tmp/op.log') -gt $before ]" ||
    { echo "not refused" >&2; exit 1; }
  sleep "$SETTLE"
  line=$(grep 'msg="policies refused' "$tmp/op.log" | tail -n1)
  echo "$(writes "$mark") $(sed -n 's/.* ms=\([0-9.]*\).*/\1/p' <<<"$line")"
}
read -r rej_writes rej_ms <<<"$(reject "$tmp/runtime")"
echo "# runtime error: writes=$rej_writes, refused after ${rej_ms} ms of load and trial"
read -r loop_writes loop_ms <<<"$(reject "$tmp/loop")"
echo "# endless loop: writes=$loop_writes, refused after ${loop_ms} ms of load and trial"
annotated "run-$RUNS" && still=yes || still=no

median() { printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
max() { printf '%s\n' "$@" | sort -n | tail -n1; }
echo "n=$N runs=$RUNS qps=$QPS burst=$BURST workers=$WORKERS"
echo "detect_ms_median=$(median "${detects[@]}") detect_ms_max=$(max "${detects[@]}")"
echo "converge_ms_median=$(median "${converges[@]}") converge_ms_max=$(max "${converges[@]}")"
echo "writes_per_swap=${wcounts[*]} operator_cpu_ms=${cpus[*]}"
echo "load_average=$(cut -d' ' -f1-3 /proc/loadavg) cpus=$(nproc)"
echo "rejected_runtime_writes=$rej_writes rejected_runtime_ms=$rej_ms"
echo "rejected_loop_writes=$loop_writes rejected_loop_ms=$loop_ms"
echo "active_set_kept=$still"
printf '{"n":%s,"runs":%s,"qps":%s,"detect_ms":[%s],"converge_ms":[%s],"writes":[%s],"operator_cpu_ms":[%s],"rejected_runtime":{"writes":%s,"ms":%s},"rejected_loop":{"writes":%s,"ms":%s},"active_set_kept":"%s"}\n' \
  "$N" "$RUNS" "$QPS" "$(IFS=,; echo "${detects[*]}")" "$(IFS=,; echo "${converges[*]}")" \
  "$(IFS=,; echo "${wcounts[*]}")" "$(IFS=,; echo "${cpus[*]}")" "$rej_writes" "${rej_ms:-null}" "$loop_writes" "${loop_ms:-null}" "$still"
