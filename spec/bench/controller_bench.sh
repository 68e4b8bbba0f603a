#!/usr/bin/env bash
# Controller benchmark against the local control plane (deploy/local/cluster.sh),
# the issue's "Numbers", three contenders side by side on the same apiserver:
#
#   ref     the reference client: for N DittoServers, the exact server-side
#           apply requests the operator sends (rendered by `dittofs-operator
#           --script-test` from each live DittoServer, so ownerReferences carry
#           its real uid): ConfigMap, Service, headless Service, StatefulSet,
#           then the status apply on .../dittoservers/NAME/status. Bodies are
#           prepared first; then `curl --parallel --parallel-max WORKERS`
#           sends them (one HTTP/2 connection, as the operator). Timed from
#           the first request to the last response.
#   op      our operator (`dittofs-operator --namespace NS`), once per entry
#           of OP_RUNS: "raised" (--kube-api-qps QPS --kube-api-burst BURST)
#           and "default" (its defaults). Per run: RSS idle (no DittoServer
#           yet; VmRSS and /metrics process_resident_memory_bytes), idle CPU
#           over IDLE s; then N DittoServers are created, a fresh operator is
#           started and timed until every DittoServer has
#           status.observedGeneration == metadata.generation and its 4
#           children exist; once the cluster has settled (N pods, see
#           settle()), RSS with N objects cached and idle CPU with them; in
#           the run named by LAT_RUN, spec change -> child patched latency:
#           LAT_RUNS sequential patches of one DittoServer's spec.image, each
#           timed from the DittoServer's watch event (and from the PATCH
#           sent) until a watch shows the StatefulSet's new image.
#   sample  Kubernetes' client-go sample-controller (Foo -> Deployment +
#           status) from the same source tree (DITTOFS_KUBE_VERSION=1.20 only): RSS idle and with N Foos, time
#           to converge N Foos (each has its Deployment and a status written,
#           i.e. status.availableReplicas present: 0 here, no kubelet), with
#           client-go's default rate limit (the binary has no flag for it:
#           QPS 5, burst 10 per clientset) and, when "raised" is in OP_RUNS,
#           with QPS/BURST through a patched build (sample_controller_qps.sh).
#
# Completion is observed through watches (one per resource, each event
# time-stamped on arrival), not by polling lists, so the times are exact to
# the event. The apiserver serves those watches while the reference sends
# too (REF_WATCH), so neither contender carries the instrument alone.
#
# Usage: spec/bench/controller_bench.sh
#   env: N=1000 WORKERS=8 (the reference's requests in flight) OP_WORKERS=
#        (the operator's --workers; empty: its default) PARTS=ref,op,sample OP_RUNS="raised default"
#        QPS=1000 BURST=2000 IDLE=30 LAT_RUNS=50 LAT_RUN=<last of OP_RUNS>
#        AS=admin|sa (identity of the operator and the reference: the admin
#        token, or the dittofs-operator ServiceAccount of deploy/rbac)
#        TIMEOUT=<s> (per converge, default 600 + N) BUILD_DIR=build
#        SAMPLE=deploy/samples/dittoserver.yaml KEEP=1 (keep namespaces)
#        SETTLE_MAX=<s> (the settle's wait for the operator's reconciles to
#        pause 3 s once N pods exist; default N/40, at least 60)
#        SETTLE=0 (take the "with N" figures 3 s after converging, without
#        waiting for kube-controller-manager's pods: much quicker at N=1000,
#        but then "idle" includes reacting to those status changes)
#        REF_EVENTS=1 (a second reference run that also POSTs the operator's
#        two Events per new DittoServer: the same request count as ours)
#        REF_WATCH=0 (the reference runs without the instrument's watches;
#        by default it runs with them, as the operator does, so both pay the
#        same apiserver load for being measured; ref_watched_converge_seconds
#        is then its converge as those watches saw it)
#        OUT=<dir> (logs and the JSON summary; default a temp dir)
#        RESTART=1 (after each operator run: a fresh operator on the N it
#        converged, once kube-controller-manager is quiet: time to ready and
#        to its last reconcile, its requests (no write is expected), CPU,
#        RSS, then its CPU over IDLE s; see op_restart)
#        LAT_QUIET=<s> (before the latency samples, wait at most s seconds
#        for kube-controller-manager to be quiet: see kcm_quiet)
#        PROBE=0 (no probe client; by default one reads a small object 10
#        times a second while each contender converges: its latency p50/
#        p99/max, with the apiserver's and etcd's CPU over the converge,
#        tell what the contender costs the apiserver's other clients)
# Namespaces bench-<part>-<pid>, deleted (and waited for) after each part.
# Output: progress lines starting with "#", key=value results, a side-by-side
# table, and the summary as one JSON line (also in $OUT/summary.json).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$root/build}
N=${N:-1000}
WORKERS=${WORKERS:-8}
OP_WORKERS=${OP_WORKERS:-}
PARTS=${PARTS:-ref,op,sample}
OP_RUNS=${OP_RUNS:-raised default}
QPS=${QPS:-1000}
BURST=${BURST:-2000}
IDLE=${IDLE:-30}
LAT_RUNS=${LAT_RUNS:-50}
LAT_RUN=${LAT_RUN:-${OP_RUNS##* }}
AS=${AS:-admin}
TIMEOUT=${TIMEOUT:-$((600 + N))}
SAMPLE=${SAMPLE:-$root/deploy/samples/dittoserver.yaml}
KEEP=${KEEP:-0}
RESTART=${RESTART:-0}
SETTLE_MAX=${SETTLE_MAX:-$((N / 40 > 60 ? N / 40 : 60))}
REF_EVENTS=${REF_EVENTS:-0}
REF_WATCH=${REF_WATCH:-1}
SETTLE=${SETTLE:-1}
PROBE=${PROBE:-1}
LAT_QUIET=${LAT_QUIET:-0}
op=$build/dittofs-operator

# The control plane without the node: N DittoServers' pods do not fit one
# 2-core node; here they stay Pending (no node), as they always did in this
# benchmark, which measures the operator's requests, not the pods.
set -a
eval "$(DITTOFS_NODE=0 "$root/deploy/local/cluster.sh" start)"
set +a
"$root/deploy/local/node.sh" stop >/dev/null 2>&1 || true
kubectl=${DITTOFS_KUBECTL:-kubectl}
API=$DITTOFS_APISERVER
CA=$DITTOFS_CA_CERT
admin_token=$(cat "$DITTOFS_ADMIN_TOKEN_FILE")
sc_dir=$DITTOFS_SAMPLE_CONTROLLER_DIR
sc_bin=$DITTOFS_KUBE_BIN/sample-controller
hz=$(getconf CLK_TCK)

OUT=${OUT:-$(mktemp -d /tmp/controller-bench.XXXXXX)}
mkdir -p "$OUT"
echo "# N=$N ref_in_flight=$WORKERS op_workers=${OP_WORKERS:-default} parts=$PARTS op_runs=\"$OP_RUNS\" qps=$QPS burst=$BURST as=$AS out=$OUT"

pids=()       # processes this script started (operator, controllers, watches)
namespaces=() # namespaces to delete on exit
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ "$KEEP" != 1 ] && [ ${#namespaces[@]} -gt 0 ]; then
    "$kubectl" delete namespace "${namespaces[@]}" --wait=false \
      >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

declare -A R # results: key -> value

now() { printf '%s\n' "$EPOCHREALTIME"; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
result() {
  R[$1]=$2
  echo "$1=$2"
}

# ---------------------------------------------------------------------------
# requests

# cfg_entry FILE METHOD URL [BODYFILE CONTENT-TYPE] [TOKEN]: one transfer in a
# curl config file ("next" resets every option; a trailing "next" without a
# URL would abort the whole run, so it goes between entries).
cfg_entry() {
  local f=$1 method=$2 url=$3 body=${4:-} ctype=${5:-} token=${6:-$admin_token}
  local sep=""
  if [ -s "$f" ]; then sep=$'next\n'; fi
  {
    printf '%s' "$sep"
    printf 'url = "%s"\nrequest = "%s"\ncacert = "%s"\n' "$url" "$method" "$CA"
    printf 'header = "Authorization: Bearer %s"\n' "$token"
    if [ -n "$body" ]; then
      printf 'header = "Content-Type: %s"\ndata-binary = "@%s"\n' "$ctype" "$body"
    fi
    printf 'output = "/dev/null"\nwrite-out = "%%{http_code}\\n"\nsilent\n'
  } >>"$f"
}

# send CONFIG PARALLEL CODES: run the transfers, W at a time, one status code
# per line into CODES; prints the number of non-2xx answers.
send() {
  curl --parallel --parallel-max "$2" --config "$1" >"$3" 2>>"$OUT/curl.err" ||
    true
  grep -cv '^2' "$3" || true
}

# make_namespace NAME
make_namespace() {
  "$kubectl" create namespace "$1" >/dev/null
  namespaces+=("$1")
}

# drop_namespace NAME: delete it and wait until it is gone (its StatefulSets,
# pods and PVCs too), so the next part starts on a quiet apiserver.
drop_namespace() {
  [ "$KEEP" = 1 ] && return 0
  local t0
  t0=$(now)
  "$kubectl" delete namespace "$1" --wait=true --timeout=900s >/dev/null 2>&1 ||
    echo "# warning: namespace $1 still there after 900 s"
  echo "# namespace $1 deleted in $(sub "$t0" "$(now)") s"
}

# create_dittoservers NS: N DittoServers bench-00001.. from $SAMPLE (admin,
# 16 in parallel; not timed).
create_dittoservers() {
  local ns=$1 dir=$OUT/create-$1 cfg=$OUT/create-$1.cfg errors
  mkdir -p "$dir"
  : >"$cfg"
  "$kubectl" create --dry-run=client -o json -f "$SAMPLE" |
    jq -c --argjson n "$N" --arg ns "$ns" \
      'range(1; $n + 1) as $i
       | .metadata = {name: ("bench-" + ($i | tostring | ("0000" + .)[-5:])),
                      namespace: $ns}' |
    awk -v d="$dir" '{ f = d "/" NR ".json"; print > f; close(f) }'
  local i
  for ((i = 1; i <= N; i++)); do
    cfg_entry "$cfg" POST \
      "$API/apis/dittofs.dittofs.com/v1alpha1/namespaces/$ns/dittoservers" \
      "$dir/$i.json" application/json
  done
  errors=$(send "$cfg" 16 "$OUT/create-$ns.codes")
  [ "$errors" = 0 ] || {
    echo "# creating DittoServers: $errors failed ($(sort "$OUT/create-$ns.codes" | uniq -c | tr '\n' ' '))"
    exit 1
  }
}

# ---------------------------------------------------------------------------
# watches: each event becomes "EPOCH FIELDS..." in a file

# watch_start OUTFILE PATH QUERY JQ: watch PATH (with QUERY, may be empty)
# through jq expression JQ (applied to each event; emit one line or none).
watch_start() {
  local out=$1 path=$2 query=$3 filter=$4
  : >"$out"
  curl -sS -N --cacert "$CA" -H "Authorization: Bearer $admin_token" \
    "$API$path?watch=1&timeoutSeconds=7200${query:+&$query}" \
    2>>"$OUT/curl.err" \
    > >(jq --unbuffered -r "$filter" 2>>"$OUT/jq.err" |
      while IFS= read -r l; do printf '%s %s\n' "$EPOCHREALTIME" "$l"; done \
        >"$out") &
  pids+=($!)
  watch_pids+=($!)
}

watch_stop_all() {
  local p
  for p in "${watch_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  watch_pids=()
}
watch_pids=()

# distinct FILE [FLAGFIELD]: number of distinct names (field 3) among lines,
# or among lines whose field FLAGFIELD is 1.
distinct() {
  awk -v f="${2:-0}" '(f == 0 || $f == 1) && !seen[$3]++ { n++ } END { print n + 0 }' "$1"
}

# first_time_max FILE [FLAGFIELD]: the latest of the first times each name
# appeared (with FLAGFIELD 1).
first_time_max() {
  awk -v f="${2:-0}" '(f == 0 || $f == 1) && !seen[$3]++ && $1 > m { m = $1 } END { printf "%.6f\n", m }' "$1"
}

# wait_counts T0 DESCRIPTION SPEC...: wait until every SPEC "FILE FLAG WANT"
# holds (distinct names, see above); prints the converge time (last first
# time minus T0) or "timeout".
wait_counts() {
  local t0=$1 what=$2 deadline spec f flag want have all last tmax
  shift 2
  deadline=$(awk -v t="$t0" -v d="$TIMEOUT" 'BEGIN { printf "%d", t + d }')
  last=""
  while :; do
    all=1
    local status=""
    for spec in "$@"; do
      read -r f flag want <<<"$spec"
      have=$(distinct "$f" "$flag")
      status="$status $(basename "$f" .log)=$have/$want"
      [ "$have" -ge "$want" ] || all=0
    done
    [ "$all" = 1 ] && break
    if [ "${EPOCHREALTIME%.*}" -ge "$deadline" ]; then
      echo "# $what: timeout after $TIMEOUT s:$status" >&2
      echo timeout
      return 0
    fi
    if [ "${EPOCHREALTIME%.*}" != "$last" ] && [ $((${EPOCHREALTIME%.*} % 10)) = 0 ]; then
      echo "# $what: $(sub "$t0" "$(now)") s:$status" >&2
    fi
    last=${EPOCHREALTIME%.*}
    sleep 0.2
  done
  tmax=0
  for spec in "$@"; do
    read -r f flag want <<<"$spec"
    tmax=$(awk -v a="$tmax" -v b="$(first_time_max "$f" "$flag")" 'BEGIN { print (b > a ? b : a) }')
  done
  sub "$t0" "$tmax"
}

# ---------------------------------------------------------------------------
# processes

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# mem PREFIX PID: PREFIX_kib (VmRSS, the issue's measure), PREFIX_anon_kib
# (RssAnon: heap and stacks, the process's own) and PREFIX_pss_kib (shared
# library pages divided among the processes that map them).
mem() {
  result "$1_kib" "$(rss_kib "$2")"
  result "$1_anon_kib" "$(awk '/^RssAnon:/ { print $2 }' "/proc/$2/status")"
  result "$1_pss_kib" "$(awk '/^Pss:/ { print $2 }' "/proc/$2/smaps_rollup")"
}
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }

# cp_ticks: CPU ticks so far of the control plane's apiserver and etcd
# (their pid files in the cluster's state directory), "APISERVER ETCD".
cp_ticks() {
  local c a=0 e=0
  c=$(cat "$DITTOFS_CLUSTER_DIR/kube-apiserver.pid" 2>/dev/null) && a=$(cpu_ticks "$c" 2>/dev/null || echo 0)
  c=$(cat "$DITTOFS_CLUSTER_DIR/etcd.pid" 2>/dev/null) && e=$(cpu_ticks "$c" 2>/dev/null || echo 0)
  echo "$a $e"
}

# cp_cpu_result KEY "A0 E0": KEY_apiserver_cpu_seconds and KEY_etcd_cpu_seconds
# since the cp_ticks reading given.
cp_cpu_result() {
  local a0 e0 a1 e1
  read -r a0 e0 <<<"$2"
  read -r a1 e1 <<<"$(cp_ticks)"
  result "$1_apiserver_cpu_seconds" "$(awk -v a="$a0" -v b="$a1" -v hz="$hz" 'BEGIN { printf "%.2f", (b - a) / hz }')"
  result "$1_etcd_cpu_seconds" "$(awk -v a="$e0" -v b="$e1" -v hz="$hz" 'BEGIN { printf "%.2f", (b - a) / hz }')"
}

# The probe (PROBE=1, the default): another client of the apiserver, as a
# kubectl user or another controller would be, reading one small object
# (kube-root-ca.crt in default) 10 times a second on one connection while
# a contender converges; its latencies tell whether the contender's load
# hurts the apiserver's other clients. probe_start FILE / probe_stop
# KEY FILE: KEY_probe_p50_ms, _p99_ms, _max_ms, _samples (the first
# request, with the TLS handshake, left out).
probe_start() {
  probe_pid=
  [ "$PROBE" = 1 ] || return 0
  stdbuf -oL curl -s --rate 10/s --cacert "$CA" -H "Authorization: Bearer $admin_token" \
    -o /dev/null -w '%{time_total}\n' \
    "$API/api/v1/namespaces/default/configmaps/kube-root-ca.crt?probe=[1-100000]" \
    >"$1" 2>/dev/null &
  probe_pid=$!
  pids+=("$probe_pid")
}
probe_stop() {
  [ -n "${probe_pid:-}" ] || return 0
  kill "$probe_pid" 2>/dev/null || true
  wait "$probe_pid" 2>/dev/null || true
  probe_pid=
  local ms
  ms=$(tail -n +2 "$2" | awk '{ printf "%.1f\n", $1 * 1000 }')
  result "$1_probe_samples" "$(printf '%s\n' "$ms" | grep -c .)"
  result "$1_probe_p50_ms" "$(printf '%s\n' "$ms" | median_p 0.50)"
  result "$1_probe_p99_ms" "$(printf '%s\n' "$ms" | median_p 0.99)"
  result "$1_probe_max_ms" "$(printf '%s\n' "$ms" | median_p 1)"
}

# kcm_quiet MAX KEY: wait (at most MAX s) until kube-controller-manager has
# used at most 60 ms of CPU over 2 s: after N new DittoServers it goes on
# for a while at its own client rate (20/s by default: pods and PVCs of the
# StatefulSets, Endpoints and EndpointSlices of 2N Services), and latencies
# taken meanwhile measure that backlog too. KEY_seconds: the wait, or
# "busy" after MAX.
kcm_quiet() {
  local max=$1 key=$2 pid a b t0
  pid=$(cat "$DITTOFS_CLUSTER_DIR/kube-controller-manager.pid" 2>/dev/null) || return 0
  t0=$(now)
  while :; do
    a=$(cpu_ticks "$pid") || return 0
    sleep 2
    b=$(cpu_ticks "$pid") || return 0
    if [ $(((b - a) * 1000 / hz)) -le 60 ]; then
      result "${key}_seconds" "$(sub "$t0" "$(now)")"
      return 0
    fi
    if [ "$(awk -v a="$t0" -v b="$(now)" -v m="$max" 'BEGIN { print (b - a > m) }')" = 1 ]; then
      result "${key}_seconds" busy
      return 0
    fi
  done
}

# idle_cpu PID SECONDS: CPU seconds used over SECONDS.
idle_cpu() {
  local a b
  a=$(cpu_ticks "$1")
  sleep "$2"
  b=$(cpu_ticks "$1")
  awk -v a="$a" -v b="$b" -v hz="$hz" 'BEGIN { printf "%.2f", (b - a) / hz }'
}

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

# stop_pid PID: SIGTERM, wait up to 15 s, then SIGKILL.
stop_pid() {
  local i
  kill -TERM "$1" 2>/dev/null || return 0
  for ((i = 0; i < 150; i++)); do
    kill -0 "$1" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

median_p() { # median_p P: the P-th percentile (nearest rank) of stdin
  sort -n | awk -v p="$1" '{ a[NR] = $1 } END {
    if (NR == 0) { print "nan"; exit }
    i = int(p * NR + 0.999999); if (i < 1) i = 1; if (i > NR) i = NR; print a[i] }'
}

kubeconfig_for_run() {
  if [ "$AS" = sa ]; then
    "$kubectl" apply --server-side --force-conflicts -k "$root/deploy/rbac" >/dev/null
    "$root/deploy/local/cluster.sh" sa-kubeconfig dittofs-system dittofs-operator \
      "$OUT/sa.kubeconfig" 2>/dev/null
    echo "$OUT/sa.kubeconfig"
  else
    echo "$KUBECONFIG"
  fi
}

token_for_run() {
  if [ "$AS" = sa ]; then
    awk '$1 == "token:" { print $2 }' "$OUT/sa.kubeconfig"
  else
    echo "$admin_token"
  fi
}

# shellcheck source=../integration/crd_install.sh
. "$root/spec/integration/crd_install.sh"
ensure_crd() {
  "$kubectl" get crd dittoservers.dittofs.dittofs.com >/dev/null 2>&1 ||
    KUBECTL=$kubectl crd_install >/dev/null # without its CEL rules below 1.28
  "$kubectl" wait --for condition=established --timeout=60s \
    crd/dittoservers.dittofs.dittofs.com >/dev/null
}

[ -x "$op" ] || {
  cmake -S "$root" -B "$build" -DWERROR=ON >/dev/null
  cmake --build "$build" -j2 --target dittofs-operator >/dev/null
}
ensure_crd
KC=$(kubeconfig_for_run)
TOKEN=$(token_for_run)
DSPATH=/apis/dittofs.dittofs.com/v1alpha1

# settle WHAT T0 PODLOG KEY COUNTER: after converging, kube-controller-manager
# still creates a pod (and PVCs) per StatefulSet or Deployment, at its own
# client rate limit, and each of those updates the parent's status, which
# the controllers react to. "Idle" figures are taken once it is done: N pods
# exist, then COUNTER (a command printing a number, "true" for none) is
# unchanged for 3 s (at most SETTLE_MAX s more: the StatefulSets' status
# updates go on for minutes after the last pod at 10,000). KEY gets the time
# from T0.
settle() {
  local what=$1 t0=$2 pods=$3 key=$4 counter=$5 a b i same=0
  if [ "$SETTLE" != 1 ]; then
    sleep 3
    return 0
  fi
  wait_counts "$t0" "$what settle" "$pods 0 $N" >/dev/null
  a=$($counter)
  for ((i = 0; i < SETTLE_MAX && same < 3; i++)); do
    sleep 1
    b=$($counter)
    if [ "$a" = "$b" ]; then same=$((same + 1)); else same=0; fi
    a=$b
  done
  result "$key" "$(sub "$t0" "$(now)")"
}

op_reconciles() { metric controller_runtime_reconcile_total; }

# instrument_start NS DIR: the watches that time a converge (DittoServers
# with observedGeneration == generation, and the children by kind, each
# event time-stamped into DIR/KIND.log), started once the DittoServers
# exist; returns when the DittoServer watch has replayed all N. Both
# contenders run with them (REF_WATCH=1), so the apiserver serves the same
# instrument either way.
instrument_start() {
  local ns=$1 w=$2
  local sel="labelSelector=app.kubernetes.io%2Fmanaged-by%3Ddittofs-operator"
  watch_start "$w/ds.log" "$DSPATH/namespaces/$ns/dittoservers" "" \
    'select(.type == "ADDED" or .type == "MODIFIED") | .object |
     "ds \(.metadata.name) \(if .status.observedGeneration == .metadata.generation then 1 else 0 end)"'
  watch_start "$w/cm.log" "/api/v1/namespaces/$ns/configmaps" "$sel" \
    'select(.type == "ADDED") | "cm \(.object.metadata.name)"'
  watch_start "$w/svc.log" "/api/v1/namespaces/$ns/services" "$sel" \
    'select(.type == "ADDED") | "svc \(.object.metadata.name)"'
  watch_start "$w/sts.log" "/apis/apps/v1/namespaces/$ns/statefulsets" "$sel" \
    'select(.type == "ADDED") | "sts \(.object.metadata.name)"'
  watch_start "$w/pod.log" "/api/v1/namespaces/$ns/pods" "" \
    'select(.type == "ADDED") | "pod \(.object.metadata.name)"'
  # The DittoServer watch has replayed every existing object: it is live.
  while [ "$(distinct "$w/ds.log")" -lt "$N" ]; do sleep 0.1; done
}

# ---------------------------------------------------------------------------
# a) the reference client

# part_ref KEY EVENTS: KEY "ref" sends the server-side apply requests only;
# EVENTS 1 also POSTs the two Events the operator records for a new
# DittoServer (Created after the children, the phase after the status), so
# the request count matches the operator's.
part_ref() {
  local key=$1 events=$2
  local ns=bench-$key-$$ dir=$OUT/$key cfg=$OUT/$key.cfg t0 t1 errors nreq
  echo "# $key: $N DittoServers in $ns$( [ "$events" = 1 ] && echo ", with Events")"
  make_namespace "$ns"
  create_dittoservers "$ns"
  mkdir -p "$dir"
  # One render per live DittoServer (real uid, generation, namespace).
  curl -sS --cacert "$CA" -H "Authorization: Bearer $admin_token" \
    "$API$DSPATH/namespaces/$ns/dittoservers" | jq -c '.items[]' |
    while IFS= read -r ds; do
      printf '%s' "$ds" | "$op" --script-test - --output json
      echo
    done >"$OUT/$key.renders.jsonl"
  # Every request as "METHOD<TAB>PATH<TAB>BODY", in the operator's order,
  # with what the core adds to --script-test's output: the applied-hash
  # annotation on each child (a placeholder of the same length) and
  # lastTransitionTime on each condition.
  jq -r --arg ns "$ns" --arg ds "$DSPATH" --argjson ev "$events" '
    def path: if .kind == "ConfigMap" then "/api/v1/namespaces/\($ns)/configmaps/\(.metadata.name)"
      elif .kind == "Service" then "/api/v1/namespaces/\($ns)/services/\(.metadata.name)"
      elif .kind == "StatefulSet" then "/apis/apps/v1/namespaces/\($ns)/statefulsets/\(.metadata.name)"
      else error("unexpected kind \(.kind)") end;
    def event($name; $uid; $suffix; $reason; $msg): {
      apiVersion: "v1", kind: "Event",
      metadata: {name: "\($name).\($suffix)", namespace: $ns},
      involvedObject: {apiVersion: "dittofs.dittofs.com/v1alpha1",
        kind: "DittoServer", namespace: $ns, name: $name, uid: $uid},
      reason: $reason, message: $msg, type: "Normal",
      source: {component: "dittofs-operator"},
      reportingComponent: "dittofs-operator", reportingInstance: "bench",
      firstTimestamp: (now | todate), lastTimestamp: (now | todate), count: 1};
    (now | todate) as $now
    | .status.metadata.name as $name
    | .objects[0].metadata.ownerReferences[0].uid as $uid
    | .objects |= map(.metadata.annotations["dittofs.dittofs.com/applied-hash"] = "0123456789abcdef")
    | .status.status.conditions |= map(.lastTransitionTime = $now)
    | (.objects[] | "PATCH\t\(path)\t\(tojson)"),
      (if $ev == 1 then "POST\t/api/v1/namespaces/\($ns)/events\t\(event($name; $uid; "created"; "Created";
        "Created " + ([.objects[] | "\(.kind) \(.metadata.name)"] | join(", "))) | tojson)" else empty end),
      "PATCH\t\($ds)/namespaces/\($ns)/dittoservers/\($name)/status\t\(.status | tojson)",
      (if $ev == 1 then "POST\t/api/v1/namespaces/\($ns)/events\t\(event($name; $uid; "phase"; .status.status.phase;
        "phase \(.status.status.phase)") | tojson)" else empty end)
  ' "$OUT/$key.renders.jsonl" >"$OUT/$key.requests.tsv"
  nreq=$(wc -l <"$OUT/$key.requests.tsv")
  : >"$cfg"
  local i=0 method path body
  while IFS=$'\t' read -r method path body; do
    i=$((i + 1))
    printf '%s' "$body" >"$dir/$i.json"
    if [ "$method" = PATCH ]; then
      cfg_entry "$cfg" PATCH "$API$path?fieldManager=dittofs-operator&force=true" \
        "$dir/$i.json" application/apply-patch+yaml "$TOKEN"
    else
      cfg_entry "$cfg" "$method" "$API$path" "$dir/$i.json" application/json "$TOKEN"
    fi
  done <"$OUT/$key.requests.tsv"
  echo "# $key: $nreq requests prepared ($(du -sh "$dir" | cut -f1) of bodies)"
  local cp0 conv
  if [ "$REF_WATCH" = 1 ]; then
    mkdir -p "$OUT/$key-watch"
    instrument_start "$ns" "$OUT/$key-watch"
  fi
  cp0=$(cp_ticks)
  probe_start "$OUT/$key.probe"
  t0=$(now)
  errors=$(send "$cfg" "$WORKERS" "$OUT/$key.codes")
  t1=$(now)
  if [ "$REF_WATCH" = 1 ]; then
    # The same converge as the operator's, as the instrument saw it.
    conv=$(wait_counts "$t0" "$key converge" "$OUT/$key-watch/ds.log 4 $N" \
      "$OUT/$key-watch/cm.log 0 $N" "$OUT/$key-watch/svc.log 0 $((2 * N))" \
      "$OUT/$key-watch/sts.log 0 $N")
    result "${key}_watched_converge_seconds" "$conv"
  fi
  probe_stop "$key" "$OUT/$key.probe"
  cp_cpu_result "$key" "$cp0"
  watch_stop_all
  result "${key}_requests" "$nreq"
  result "${key}_errors" "$errors"
  result "${key}_seconds" "$(sub "$t0" "$t1")"
  result "${key}_requests_per_second" "$(awk -v n="$nreq" -v s="$(sub "$t0" "$t1")" 'BEGIN { printf "%.0f", n / s }')"
  [ "$errors" = 0 ] || echo "# $key: codes: $(sort "$OUT/$key.codes" | uniq -c | tr '\n' ' ')"
  drop_namespace "$ns"
}

# ---------------------------------------------------------------------------
# b) our operator

# op_start NS LOG ARGS...: start the operator; sets op_pid, op_mport.
op_start() {
  local ns=$1 log=$2 hport
  shift 2
  op_mport=$(free_port)
  hport=$(free_port)
  op_hport=$hport
  "$op" --kubeconfig "$KC" --namespace "$ns" ${OP_WORKERS:+--workers "$OP_WORKERS"} \
    --metrics-bind-address "127.0.0.1:$op_mport" \
    --health-probe-bind-address "127.0.0.1:$hport" "$@" >"$log" 2>&1 &
  op_pid=$!
  pids+=("$op_pid")
}

# op_wait_ready: /readyz 200 within 30 s.
op_wait_ready() {
  local i
  for ((i = 0; i < 300; i++)); do
    kill -0 "$op_pid" 2>/dev/null || { echo "# operator exited:"; tail -n 20 "$1"; exit 1; }
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$op_hport/readyz")" = 200 ] && return 0
    sleep 0.1
  done
  echo "# operator not ready after 30 s"
  tail -n 20 "$1"
  exit 1
}

# requests_by LABEL: the operator's requests summed by one label of
# rest_client_requests_total ("method" or "code"), as "VALUE:COUNT ...".
requests_by() {
  curl -s "http://127.0.0.1:$op_mport/metrics" |
    sed -n 's/^rest_client_requests_total{.*'"$1"'="\([A-Z0-9]*\)".*} \([0-9.e+]*\)$/\1 \2/p' |
    awk '{ s[$1] += $2 } END { for (m in s) printf "%s%s:%d", (n++ ? " " : ""), m, s[m] }'
}

metric() { # metric NAME: summed value from the operator's /metrics
  curl -s "http://127.0.0.1:$op_mport/metrics" |
    awk -v n="$1" '$1 == n || index($1, n "{") == 1 { s += $NF; f = 1 } END { if (f) printf "%.0f\n", s; else print "nan" }'
}

part_op_run() {
  local run=$1
  local ns=bench-op-$run-$$ log=$OUT/operator-$run.log args=() t0 conv
  [ "$run" = raised ] && args=(--kube-api-qps "$QPS" --kube-api-burst "$BURST")
  echo "# op/$run: ${args[*]:-defaults}, namespace $ns"
  make_namespace "$ns"

  op_start "$ns" "$log.idle" "${args[@]}"
  op_wait_ready "$log.idle"
  sleep 2
  mem "op_${run}_rss_idle" "$op_pid"
  result "op_${run}_rss_idle_metrics_bytes" "$(metric process_resident_memory_bytes)"
  result "op_${run}_cpu_idle_seconds_${IDLE}s" "$(idle_cpu "$op_pid" "$IDLE")"
  stop_pid "$op_pid"

  create_dittoservers "$ns"
  local w=$OUT/op-$run
  mkdir -p "$w"
  instrument_start "$ns" "$w"

  local cp0
  cp0=$(cp_ticks)
  probe_start "$w/probe"
  t0=$(now)
  op_start "$ns" "$log" "${args[@]}"
  conv=$(wait_counts "$t0" "op/$run converge" "$w/ds.log 4 $N" "$w/cm.log 0 $N" \
    "$w/svc.log 0 $((2 * N))" "$w/sts.log 0 $N")
  probe_stop "op_${run}" "$w/probe"
  cp_cpu_result "op_${run}_converge" "$cp0"
  result "op_${run}_converge_seconds" "$conv"
  [ -n "${R[ref_seconds]:-}" ] && [ "$conv" != timeout ] &&
    result "op_${run}_converge_ratio_vs_ref" \
      "$(awk -v a="$conv" -v b="${R[ref_seconds]}" 'BEGIN { printf "%.2f", a / b }')"
  [ -n "${R[refev_seconds]:-}" ] && [ "$conv" != timeout ] &&
    result "op_${run}_converge_ratio_vs_refev" \
      "$(awk -v a="$conv" -v b="${R[refev_seconds]}" 'BEGIN { printf "%.2f", a / b }')"
  settle "op/$run" "$t0" "$w/pod.log" "op_${run}_settle_seconds" op_reconciles
  mem "op_${run}_rss_n" "$op_pid"
  result "op_${run}_rss_n_metrics_bytes" "$(metric process_resident_memory_bytes)"
  result "op_${run}_requests" "$(metric rest_client_requests_total)"
  result "op_${run}_requests_by_method" "$(requests_by method)"
  result "op_${run}_requests_by_code" "$(requests_by code)"
  result "op_${run}_cpu_seconds_converge" \
    "$(awk -v t="$(cpu_ticks "$op_pid")" -v hz="$hz" 'BEGIN { printf "%.2f", t / hz }')"
  result "op_${run}_cpu_idle_n_seconds_${IDLE}s" "$(idle_cpu "$op_pid" "$IDLE")"
  watch_stop_all

  if [ "$run" = "$LAT_RUN" ] && [ "$LAT_RUNS" -gt 0 ]; then
    [ "$LAT_QUIET" -gt 0 ] && kcm_quiet "$LAT_QUIET" "op_${run}_latency_quiet"
    op_latency "$ns" "$run"
  fi
  stop_pid "$op_pid"
  [ "$RESTART" = 1 ] && op_restart "$ns" "$run" "$log" "${args[@]}"
  drop_namespace "$ns"
}

# op_restart NS RUN LOG ARGS...: a fresh operator on the N DittoServers it
# converged, once kube-controller-manager is quiet (at most 900 s): the
# time to /readyz and until its reconciles stop (5 s without one; at most
# TIMEOUT s), the
# requests it sent (steady state: the lists, no write), its CPU and RSS
# then, and its CPU over IDLE s after that (nothing changes meanwhile).
op_restart() {
  local ns=$1 run=$2 log=$3 t0 prev=-1 r same=0 i
  shift 3
  kcm_quiet 900 "op_${run}_restart_quiet"
  t0=$(now)
  op_start "$ns" "$log.restart" "$@"
  op_wait_ready "$log.restart"
  result "op_${run}_restart_ready_seconds" "$(sub "$t0" "$(now)")"
  for ((i = 0; i < TIMEOUT && same < 5; i++)); do
    sleep 1
    r=$(op_reconciles)
    if [ "$r" = "$prev" ]; then same=$((same + 1)); else same=0; fi
    prev=$r
  done
  result "op_${run}_restart_reconciles" "$prev"
  result "op_${run}_restart_settled_seconds" "$(sub "$t0" "$(now)")"
  result "op_${run}_restart_requests_by_method" "$(requests_by method)"
  result "op_${run}_restart_cpu_seconds" \
    "$(awk -v t="$(cpu_ticks "$op_pid")" -v hz="$hz" 'BEGIN { printf "%.2f", t / hz }')"
  mem "op_${run}_restart_rss" "$op_pid"
  result "op_${run}_restart_cpu_idle_seconds_${IDLE}s" "$(idle_cpu "$op_pid" "$IDLE")"
  stop_pid "$op_pid"
}

# op_latency NS RUN: LAT_RUNS sequential spec.image patches of bench-00001,
# each timed until the watch event that shows the StatefulSet with that image:
# from the DittoServer's own watch event (the change committed; both ends seen
# the same way, so this is the operator's reaction time) and from just before
# the PATCH is sent (adds a curl start and TLS handshake).
op_latency() {
  local ns=$1 run=$2 name=bench-00001 f=$OUT/op-$2/lat.log g=$OUT/op-$2/lat-ds.log
  local i img t0 t1 td lats=() sends=()
  watch_start "$f" "/apis/apps/v1/namespaces/$ns/statefulsets" \
    "fieldSelector=metadata.name%3D$name" \
    'select(.type == "ADDED" or .type == "MODIFIED") |
     "sts \(.object.metadata.name) \(.object.spec.template.spec.containers[0].image)"'
  watch_start "$g" "$DSPATH/namespaces/$ns/dittoservers" \
    "fieldSelector=metadata.name%3D$name" \
    'select(.type == "ADDED" or .type == "MODIFIED") |
     "ds \(.object.metadata.name) \(.object.spec.image)"'
  while [ ! -s "$f" ] || [ ! -s "$g" ]; do sleep 0.05; done
  for ((i = 1; i <= LAT_RUNS; i++)); do
    img="ghcr.io/marmos91/dittofs:bench-$$-$i"
    t0=$(now)
    curl -sS -o /dev/null --cacert "$CA" -H "Authorization: Bearer $admin_token" \
      -X PATCH -H 'Content-Type: application/merge-patch+json' \
      --data-binary "{\"spec\":{\"image\":\"$img\"}}" \
      "$API$DSPATH/namespaces/$ns/dittoservers/$name"
    local deadline=$((${EPOCHREALTIME%.*} + 10))
    t1="" td=""
    while [ -z "$t1" ] && [ "${EPOCHREALTIME%.*}" -lt "$deadline" ]; do
      t1=$(awk -v img="$img" '$4 == img { print $1; exit }' "$f")
      [ -n "$t1" ] || sleep 0.005
    done
    td=$(awk -v img="$img" '$4 == img { print $1; exit }' "$g")
    if [ -z "$t1" ] || [ -z "$td" ]; then
      echo "# latency: patch $i not seen on the StatefulSet within 10 s"
      continue
    fi
    lats+=("$(awk -v a="$td" -v b="$t1" 'BEGIN { printf "%.1f", (b - a) * 1000 }')")
    sends+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", (b - a) * 1000 }')")
    sleep 0.3
  done
  watch_stop_all
  printf '%s\n' "${lats[@]}" >"$OUT/op-$run/latencies_ms.txt"
  printf '%s\n' "${sends[@]}" >"$OUT/op-$run/latencies_from_send_ms.txt"
  result "op_${run}_latency_samples" "${#lats[@]}"
  result "op_${run}_latency_p50_ms" "$(printf '%s\n' "${lats[@]}" | median_p 0.50)"
  result "op_${run}_latency_p99_ms" "$(printf '%s\n' "${lats[@]}" | median_p 0.99)"
  result "op_${run}_latency_max_ms" "$(printf '%s\n' "${lats[@]}" | median_p 1)"
  result "op_${run}_latency_from_send_p50_ms" "$(printf '%s\n' "${sends[@]}" | median_p 0.50)"
  result "op_${run}_latency_from_send_p99_ms" "$(printf '%s\n' "${sends[@]}" | median_p 0.99)"
}

# ---------------------------------------------------------------------------
# c) sample-controller

# sc_start BIN LOG [ENV...]: start it (all namespaces; admin kubeconfig: it
# has no RBAC of its own); sets sc_pid; waits for its workers.
sc_start() {
  local bin=$1 log=$2 i
  shift 2
  env "$@" "$bin" --kubeconfig "$KUBECONFIG" >"$log" 2>&1 &
  sc_pid=$!
  pids+=("$sc_pid")
}

sc_wait_started() {
  local i
  for ((i = 0; i < 300; i++)); do
    grep -q "Started workers" "$1" && return 0
    kill -0 "$sc_pid" 2>/dev/null || { tail -n 20 "$1"; exit 1; }
    sleep 0.1
  done
  echo "# sample-controller: no \"Started workers\" after 30 s"
  exit 1
}

part_sample_run() {
  local run=$1 bin=$2
  local ns=bench-sc-$run-$$ log=$OUT/sample-$run.log env=() t0 conv
  shift 2
  env=("$@")
  echo "# sample/$run: $bin ${env[*]:-(client-go defaults QPS 5 burst 10)}, namespace $ns"
  make_namespace "$ns"
  sc_start "$bin" "$log.idle" "${env[@]}"
  sc_wait_started "$log.idle"
  sleep 2
  mem "sample_${run}_rss_idle" "$sc_pid"
  result "sample_${run}_cpu_idle_seconds_${IDLE}s" "$(idle_cpu "$sc_pid" "$IDLE")"
  stop_pid "$sc_pid"

  # N Foos (admin, 16 in parallel, not timed).
  local dir=$OUT/foos-$run cfg=$OUT/foos-$run.cfg i errors
  mkdir -p "$dir"
  : >"$cfg"
  jq -nc --argjson n "$N" --arg ns "$ns" 'range(1; $n + 1) as $i
    | ("foo-" + ($i | tostring | ("0000" + .)[-5:])) as $name
    | {apiVersion: "samplecontroller.k8s.io/v1alpha1", kind: "Foo",
       metadata: {name: $name, namespace: $ns},
       spec: {deploymentName: $name, replicas: 1}}' |
    awk -v d="$dir" '{ f = d "/" NR ".json"; print > f; close(f) }'
  for ((i = 1; i <= N; i++)); do
    cfg_entry "$cfg" POST "$API/apis/samplecontroller.k8s.io/v1alpha1/namespaces/$ns/foos" \
      "$dir/$i.json" application/json
  done
  errors=$(send "$cfg" 16 "$OUT/foos-$run.codes")
  [ "$errors" = 0 ] || { echo "# creating Foos: $errors failed"; exit 1; }

  local w=$OUT/sample-$run
  mkdir -p "$w"
  watch_start "$w/foo.log" "/apis/samplecontroller.k8s.io/v1alpha1/namespaces/$ns/foos" "" \
    'select(.type == "ADDED" or .type == "MODIFIED") | .object |
     "foo \(.metadata.name) \(if .status.availableReplicas != null then 1 else 0 end)"'
  watch_start "$w/deploy.log" "/apis/apps/v1/namespaces/$ns/deployments" "" \
    'select(.type == "ADDED") | "deploy \(.object.metadata.name)"'
  watch_start "$w/pod.log" "/api/v1/namespaces/$ns/pods" "" \
    'select(.type == "ADDED") | "pod \(.object.metadata.name)"'
  while [ "$(distinct "$w/foo.log")" -lt "$N" ]; do sleep 0.1; done

  t0=$(now)
  sc_start "$bin" "$log" "${env[@]}"
  conv=$(wait_counts "$t0" "sample/$run converge" "$w/foo.log 4 $N" "$w/deploy.log 0 $N")
  result "sample_${run}_converge_seconds" "$conv"
  [ -n "${R[ref_seconds]:-}" ] && [ "$conv" != timeout ] &&
    result "sample_${run}_converge_ratio_vs_ref" \
      "$(awk -v a="$conv" -v b="${R[ref_seconds]}" 'BEGIN { printf "%.2f", a / b }')"
  settle "sample/$run" "$t0" "$w/pod.log" "sample_${run}_settle_seconds" true
  mem "sample_${run}_rss_n" "$sc_pid"
  result "sample_${run}_cpu_seconds_converge" \
    "$(awk -v t="$(cpu_ticks "$sc_pid")" -v hz="$hz" 'BEGIN { printf "%.2f", t / hz }')"
  result "sample_${run}_cpu_idle_n_seconds_${IDLE}s" "$(idle_cpu "$sc_pid" "$IDLE")"
  watch_stop_all
  stop_pid "$sc_pid"
  drop_namespace "$ns"
}

part_sample() {
  # Only the 1.20 tree has sample-controller (the module proxy refuses
  # k8s.io/sample-controller); its Foo CRD is apiextensions v1beta1, which
  # current releases no longer serve.
  [ -x "$sc_bin" ] || {
    echo "# sample: no $sc_bin; run with DITTOFS_KUBE_VERSION=1.20" >&2
    exit 1
  }
  "$kubectl" get crd foos.samplecontroller.k8s.io >/dev/null 2>&1 ||
    "$kubectl" apply -f "$sc_dir/crd.yaml" >/dev/null
  "$kubectl" wait --for condition=established --timeout=60s \
    crd/foos.samplecontroller.k8s.io >/dev/null
  local run
  for run in $OP_RUNS; do
    case $run in
      default) part_sample_run default "$sc_bin" ;;
      raised)
        local qbin
        qbin=$("$root/spec/bench/sample_controller_qps.sh")
        part_sample_run raised "$qbin" SAMPLE_CONTROLLER_QPS="$QPS" \
          SAMPLE_CONTROLLER_BURST="$BURST"
        ;;
    esac
  done
}

# ---------------------------------------------------------------------------

case ",$PARTS," in *,ref,*) part_ref ref 0 ;; esac
[ "$REF_EVENTS" = 1 ] && case ",$PARTS," in *,ref,*) part_ref refev 1 ;; esac
case ",$PARTS," in *,op,*) for run in $OP_RUNS; do part_op_run "$run"; done ;; esac
case ",$PARTS," in *,sample,*) part_sample ;; esac

# ---------------------------------------------------------------------------
# report

v() { printf '%s' "${R[$1]:--}"; }
ratio() {
  if [ -n "${R[$1]:-}" ] && [ -n "${R[$2]:-}" ]; then
    awk -v a="${R[$1]}" -v b="${R[$2]}" 'BEGIN { printf "%.2f", a / b }'
  else
    printf -- -
  fi
}
mib() { # KiB -> MiB
  [ -n "${R[$1]:-}" ] && awk -v k="${R[$1]}" 'BEGIN { printf "%.1f", k / 1024 }' || printf -- -
}
echo
echo "# N=$N ref_in_flight=$WORKERS op_workers=${OP_WORKERS:-default} raised qps/burst=$QPS/$BURST (as $AS)"
printf '%-34s %14s %14s %14s %14s %14s\n' "" "reference" "op raised" "op default" \
  "sample raised" "sample default"
printf '%-34s %14s %14s %14s %14s %14s\n' "converge N (s)" "$(v ref_seconds)" \
  "$(v op_raised_converge_seconds)" "$(v op_default_converge_seconds)" \
  "$(v sample_raised_converge_seconds)" "$(v sample_default_converge_seconds)"
printf '%-34s %14s %14s %14s %14s %14s\n' "ratio vs reference" "1.00" \
  "$(v op_raised_converge_ratio_vs_ref)" "$(v op_default_converge_ratio_vs_ref)" \
  "$(v sample_raised_converge_ratio_vs_ref)" "$(v sample_default_converge_ratio_vs_ref)"
[ -n "${R[refev_seconds]:-}" ] &&
  printf '%-34s %14s %14s %14s\n' "ref with Events (s), ratio" "$(v refev_seconds)" \
    "$(v op_raised_converge_ratio_vs_refev)" "$(v op_default_converge_ratio_vs_refev)"
printf '%-34s %14s %14s %14s %14s %14s\n' "settled: N pods, quiet (s)" "" \
  "$(v op_raised_settle_seconds)" "$(v op_default_settle_seconds)" \
  "$(v sample_raised_settle_seconds)" "$(v sample_default_settle_seconds)"
printf '%-34s %14s %14s %14s %14s %14s\n' "RSS idle (MiB)" "" \
  "$(mib op_raised_rss_idle_kib)" "$(mib op_default_rss_idle_kib)" \
  "$(mib sample_raised_rss_idle_kib)" "$(mib sample_default_rss_idle_kib)"
printf '%-34s %14s %14s %14s %14s %14s\n' "RSS with N cached (MiB)" "" \
  "$(mib op_raised_rss_n_kib)" "$(mib op_default_rss_n_kib)" \
  "$(mib sample_raised_rss_n_kib)" "$(mib sample_default_rss_n_kib)"
printf '%-34s %14s %14s %14s %14s %14s\n' "RSS anon, idle / N (MiB)" "" \
  "$(mib op_raised_rss_idle_anon_kib)/$(mib op_raised_rss_n_anon_kib)" \
  "$(mib op_default_rss_idle_anon_kib)/$(mib op_default_rss_n_anon_kib)" \
  "$(mib sample_raised_rss_idle_anon_kib)/$(mib sample_raised_rss_n_anon_kib)" \
  "$(mib sample_default_rss_idle_anon_kib)/$(mib sample_default_rss_n_anon_kib)"
printf '%-34s %14s %14s %14s %14s %14s\n' "PSS, idle / N (MiB)" "" \
  "$(mib op_raised_rss_idle_pss_kib)/$(mib op_raised_rss_n_pss_kib)" \
  "$(mib op_default_rss_idle_pss_kib)/$(mib op_default_rss_n_pss_kib)" \
  "$(mib sample_raised_rss_idle_pss_kib)/$(mib sample_raised_rss_n_pss_kib)" \
  "$(mib sample_default_rss_idle_pss_kib)/$(mib sample_default_rss_n_pss_kib)"
printf '%-34s %14s %14s %14s %14s %14s\n' "CPU idle, ${IDLE}s (s)" "" \
  "$(v "op_raised_cpu_idle_seconds_${IDLE}s")" "$(v "op_default_cpu_idle_seconds_${IDLE}s")" \
  "$(v "sample_raised_cpu_idle_seconds_${IDLE}s")" "$(v "sample_default_cpu_idle_seconds_${IDLE}s")"
printf '%-34s %14s %14s %14s %14s %14s\n' "CPU idle with N, ${IDLE}s (s)" "" \
  "$(v "op_raised_cpu_idle_n_seconds_${IDLE}s")" "$(v "op_default_cpu_idle_n_seconds_${IDLE}s")" \
  "$(v "sample_raised_cpu_idle_n_seconds_${IDLE}s")" "$(v "sample_default_cpu_idle_n_seconds_${IDLE}s")"
printf '%-34s %14s %14s %14s %14s %14s\n' "CPU to converge (s)" "" \
  "$(v op_raised_cpu_seconds_converge)" "$(v op_default_cpu_seconds_converge)" \
  "$(v sample_raised_cpu_seconds_converge)" "$(v sample_default_cpu_seconds_converge)"
printf '%-34s %14s %14s %14s\n' "requests" "$(v ref_requests)" \
  "$(v op_raised_requests)" "$(v op_default_requests)"
printf '%-34s %14s %14s %14s\n' "RSS with N, op / sample" "" \
  "$(ratio op_raised_rss_n_kib sample_raised_rss_n_kib)" \
  "$(ratio op_default_rss_n_kib sample_default_rss_n_kib)"
printf '%-34s %14s %14s %14s\n' "spec -> child p50/p99 (ms)" "" \
  "$(v op_raised_latency_p50_ms)/$(v op_raised_latency_p99_ms)" \
  "$(v op_default_latency_p50_ms)/$(v op_default_latency_p99_ms)"
printf '%-34s %14s %14s %14s\n' "  same, from PATCH sent (ms)" "" \
  "$(v op_raised_latency_from_send_p50_ms)/$(v op_raised_latency_from_send_p99_ms)" \
  "$(v op_default_latency_from_send_p50_ms)/$(v op_default_latency_from_send_p99_ms)"

{
  printf '{"n":%s,"workers":%s,"op_workers":"%s","qps":%s,"burst":%s,"as":"%s"' "$N" "$WORKERS" "${OP_WORKERS:-default}" "$QPS" "$BURST" "$AS"
  for k in $(printf '%s\n' "${!R[@]}" | sort); do
    if [[ ${R[$k]} =~ ^-?[0-9]+(\.[0-9]+)?$ ]]; then
      printf ',"%s":%s' "$k" "${R[$k]}"
    else
      printf ',"%s":"%s"' "$k" "${R[$k]}"
    fi
  done
  printf '}\n'
} >"$OUT/summary.json"
echo "summary_json=$(cat "$OUT/summary.json")"
