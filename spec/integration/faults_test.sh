#!/usr/bin/env bash
# spec/integration/faults_test.sh: faults between the operator and the
# apiserver (issue 10, section 2) on the local control plane (run through
# spec/integration/with-cluster, or after eval "$(deploy/local/cluster.sh env)").
#
# The operator talks to the apiserver through Toxiproxy (deploy/local/
# toxiproxy.sh builds it from its Go module): a kubeconfig whose server is
# the proxy's 127.0.0.1 port, TLS verified end to end (the serving cert has
# SAN 127.0.0.1). Each operator authenticates with its own client
# certificate (CN dittofs-faults-a, -b, -c; O=system:masters and
# O=dittofs:audit-request, the group whose writes the audit policy of
# deploy/local/cluster.sh records with their bodies), so the audit log
# tells the writers apart and shows what each write carried.
#
# The workload: N DittoServers (replicas 0) in one namespace; while a fault
# is on, a churner (curl, straight to the apiserver, not through the proxy)
# creates, changes and deletes them at CHURN_RATE operations per second.
# Every change sets spec.nfsPort to 10000 + a counter that only grows, and
# names are never reused, so the nfs port that a write of a child carries
# (ConfigMap config.yaml, both Services, the StatefulSet) orders its
# content by generation.
#
# Scenarios (DITTOFS_FAULTS_SCENARIOS, in this order):
#   partition  blackhole (Toxiproxy timeout=0 both ways) for PARTITION_S,
#              churn meanwhile, heal: every watched resource watched again
#              <= REWATCH_MAX_S after the heal (the audit log's watch
#              requests), everything converged <= CONVERGE_MAX_S after it;
#   slow       latency 500 ms +- 200 ms and 64 KB/s both ways for SLOW_S
#              with churn: no error storm (warnings and failed requests per
#              minute bounded), converged under the toxics;
#   stall      the same with the bytes held instead of dropped (a latency
#              toxic of an hour), delivered at the heal, as TCP does after a
#              partition that keeps the connections (Toxiproxy's blackhole
#              closes them at the heal);
#   reset      connections reset by peer (reset_peer) and responses cut
#              mid-body (limit_data; the operator restarted so that its
#              lists are cut too), churn: the operator never exits, its
#              caches hold what the server holds (dittofs_cache_objects),
#              converged; duplicate writes only counted here (an answer
#              lost on purpose: the write is sent again, see write_audit);
#   leader     two replicas with --leader-elect, the leader partitioned
#              for LE_PARTITION_S (longer than the renew deadline, 10 s,
#              and the Lease, 15 s): it stops writing before its Lease can
#              be taken (its log line before the other's takeover, none of
#              its writes after it in the audit log), the other takes over,
#              the old one (restarted as its Deployment would) comes back
#              as a standby: no writes, the Lease stays with the other;
#   etcd       etcd SIGKILLed under churn for ETCD_DOWN_S, started again:
#              converged;
#   restarts   the apiserver SIGKILLed and started again RESTARTS times,
#              each at a random moment under churn: converged each time;
#   kill9      the operator kill -9-ed every KILL_EVERY_S s, KILLS times,
#              while DittoServers churn: converged.
# After every scenario: the end state equals a clean reconcile (every
# DittoServer observedGeneration = generation and Reconciled
# ChildrenUpToDate, its four children carry its current nfs port and its
# uid as controller owner; no child without its DittoServer (orphan), no
# second child of a kind (duplicate); and a fresh operator, started
# straight on the apiserver, reconciles every DittoServer with zero
# writes), and no duplicate or stale write in the scenario's audit log (for
# every object, each successful write of the operators carries another body
# than the previous one (duplicate) and no lower nfs port or status
# observedGeneration (stale)).
#
# Sizes: the default is a bounded run for the suite (N=30, short windows,
# 2 apiserver restarts, 10 kills); DITTOFS_FAULTS_FULL=1 runs the issue's
# (N=200, 2 min of latency, 10 restarts, 50 kills). Every size and bound
# below can be set from the environment (DITTOFS_FAULTS_<NAME>).
# The apiserver and etcd are restarted with deploy/local/cluster.sh
# (DITTOFS_CLUSTER_DIR): run this on a control plane you may restart.
# Output: one "ok N - ..." / "not ok N - ..." line per check, "# time"
# lines with the measurements, then a summary; exit status 1 when any
# check failed.
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
: "${DITTOFS_APISERVER_PORT:?run through spec/integration/with-cluster}"
: "${DITTOFS_CA_CERT:?run through spec/integration/with-cluster}"
: "${DITTOFS_CA_KEY:?run through spec/integration/with-cluster}"
: "${DITTOFS_ADMIN_TOKEN_FILE:?run through spec/integration/with-cluster}"
: "${DITTOFS_CLUSTER_DIR:?run through spec/integration/with-cluster}"
export DITTOFS_CLUSTER_DIR

# --- sizes and bounds ----------------------------------------------------------
knob() { # NAME BOUNDED FULL: $DITTOFS_FAULTS_NAME, else one of the two
  local v="DITTOFS_FAULTS_$1"
  if [ -n "${!v:-}" ]; then
    printf -v "$1" '%s' "${!v}"
  elif [ "${DITTOFS_FAULTS_FULL:-0}" = 1 ]; then
    printf -v "$1" '%s' "$3"
  else
    printf -v "$1" '%s' "$2"
  fi
}
knob SCENARIOS "partition stall slow reset leader etcd restarts kill9" \
  "partition stall slow reset leader etcd restarts kill9"
knob N 30 200                 # DittoServers
knob CHURN_RATE 2 4           # churn operations per second
knob QPS 100 100              # the operators' --kube-api-qps
knob BURST 200 200            # and --kube-api-burst
knob WORKERS 4 4              # and --workers
knob SETUP_MAX_S 180 600      # the first convergence of the N
knob PARTITION_S 30 30
knob REWATCH_MAX_S 35 35      # after the heal
knob CONVERGE_MAX_S 60 60     # after the heal, the restart, the last kill
knob SLOW_S 30 120
knob SLOW_CHURN_RATE 1 1
knob SLOW_CONVERGE_MAX_S 120 180
knob STORM_MAX_PER_MIN 30 30  # warnings + failed requests per minute
knob RESET_S 15 30
knob RESET_AFTER_MS 1500 1500 # reset_peer: each connection reset after this
knob TRUNC_S 15 30
knob TRUNC_BYTES 20000 20000  # limit_data: a connection cut after this many bytes
knob LE_PARTITION_S 25 25
knob ETCD_DOWN_S 5 10       # short in the suite: the node's kubelet must not go NotReady (20 s)
knob RESTARTS 2 10
knob KILLS 10 50
knob KILL_EVERY_S 2 2
knob ORPHAN_WAIT_S 60 60      # the garbage collector removes children of deleted ones
knob CLEAN_MAX_S 120 300      # the fresh operator's pass over every DittoServer

ns="faults-$$"
lease="faults-$$"
tmp=$(mktemp -d)
pids=()
api="https://127.0.0.1:$DITTOFS_APISERVER_PORT"
token=$(<"$DITTOFS_ADMIN_TOKEN_FILE")
group=dittofs.dittofs.com
dspath="/apis/$group/v1alpha1/namespaces/$ns/dittoservers"
user_a=dittofs-faults-a
user_b=dittofs-faults-b
user_c=dittofs-faults-c
op_a=
tport=

cleanup() {
  touch "$tmp/churn.stop"
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
  wait 2>/dev/null
  "$KUBECTL" delete namespace "$ns" --wait=false >/dev/null 2>&1 || true
  if [ "${failed:-0}" -gt 0 ]; then
    for f in "$tmp"/*.log; do
      [ -f "$f" ] || continue
      echo "# --- last lines of $f"
      tail -n 20 "$f" | sed 's/^/#   /'
    done
  fi
  if [ -n "${DITTOFS_FAULTS_KEEP:-}" ]; then
    echo "# kept: $tmp"
  else
    rm -rf "$tmp"
  fi
}
trap cleanup EXIT

now_ms() { echo $(($(date +%s%N) / 1000000)); }
secs() { awk -v ms="$1" 'BEGIN { printf "%.1f", ms / 1000 }'; }
note() { echo "# $*"; }
load() { cut -d' ' -f1-3 /proc/loadavg; }
# log_ms LINE: the ms time stamp of an operator log line (text format)
log_ms() { date -d "$(sed -n 's/^ts=\([^ ]*\) .*/\1/p' <<<"$1")" +%s%3N; }

# --- identities and kubeconfigs --------------------------------------------
# cert ID: a client certificate for user ID, signed by the cluster CA
cert() {
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$tmp/$1.key" -subj "/O=system:masters/O=dittofs:audit-request/CN=$1" \
    -out "$tmp/$1.csr" 2>/dev/null &&
    openssl x509 -req -in "$tmp/$1.csr" -CA "$DITTOFS_CA_CERT" -CAkey "$DITTOFS_CA_KEY" \
      -CAcreateserial -CAserial "$tmp/ca.srl" -days 2 -out "$tmp/$1.crt" 2>/dev/null
}
# kubeconfig FILE SERVER ID
kubeconfig() {
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: c
  cluster:
    server: $2
    certificate-authority-data: $(base64 -w0 <"$DITTOFS_CA_CERT")
users:
- name: u
  user:
    client-certificate-data: $(base64 -w0 <"$tmp/$3.crt")
    client-key-data: $(base64 -w0 <"$tmp/$3.key")
contexts:
- name: x
  context: {cluster: c, user: u, namespace: $ns}
current-context: x
EOF
}

# --- Toxiproxy ---------------------------------------------------------------
free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 12000))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && continue
    ss -ltn 2>/dev/null | grep -q ":$p " && continue
    echo "$p"
    return
  done
}
tp() { # METHOD PATH [JSON]
  curl -sS -f --max-time 10 -X "$1" ${3:+-H 'Content-Type: application/json' --data "$3"} \
    "http://127.0.0.1:$tport$2" >/dev/null
}
# toxic PROXY NAME TYPE STREAM ATTRIBUTES [TOXICITY]
toxic() {
  tp POST "/proxies/$1/toxics" "{\"name\":\"$2\",\"type\":\"$3\",\"stream\":\"$4\",\"toxicity\":${6:-1.0},\"attributes\":$5}"
}
untoxic() { tp DELETE "/proxies/$1/toxics/$2"; }
blackhole() { # PROXY
  toxic "$1" bh-up timeout upstream '{"timeout":0}' && toxic "$1" bh-down timeout downstream '{"timeout":0}'
}
heal() { untoxic "$1" bh-up && untoxic "$1" bh-down; }
stall() { # PROXY
  toxic "$1" stall-up latency upstream '{"latency":3600000}' &&
    toxic "$1" stall-down latency downstream '{"latency":3600000}'
}
unstall() { untoxic "$1" stall-up && untoxic "$1" stall-down; }

# --- the operators -----------------------------------------------------------
# start_op ID KUBECONFIG LOG ARGS...: sets $last_pid
start_op() {
  local id=$1 kc=$2 log=$3
  shift 3
  echo "===== start $(date -u +%FT%T.%3NZ)" >>"$log"
  "$BIN" --kubeconfig "$kc" --namespace "$ns" --kube-api-qps "$QPS" \
    --kube-api-burst "$BURST" --workers "$WORKERS" \
    --metrics-bind-address 127.0.0.1:0 --health-probe-bind-address 127.0.0.1:0 \
    "$@" >>"$log" 2>&1 &
  last_pid=$!
  pids+=("$last_pid")
}
alive() { kill -0 "$1" 2>/dev/null; }
stop_rc=
stop_op() { # PID: SIGTERM, then SIGKILL after 15 s; sets $stop_rc
  local i
  stop_rc=
  [ -n "$1" ] || return 0
  kill -TERM "$1" 2>/dev/null || return 0
  for i in $(seq 1 150); do alive "$1" || break; sleep 0.1; done
  kill -9 "$1" 2>/dev/null
  wait "$1" 2>/dev/null
  stop_rc=$?
  return 0
}
start_a() { # the operator under test, through proxy api-a, no leader election
  start_op a "$tmp/a.kubeconfig" "$tmp/a.log" "$@"
  op_a=$last_pid
}
metrics_port() { # LOG: the metrics port of the last start logged in LOG
  sed -n 's/.*metrics_port=\([0-9]*\).*/\1/p' "$1" | tail -n1
}

# --- the churn ---------------------------------------------------------------
# churn RATE: until $tmp/churn.stop exists, RATE operations per second on
# the DittoServers (90%..110% of N live): change (60%), create, delete.
# Every operation appends "ms op name port http_code" to churn.log; the
# counter behind ports and names lives in $tmp/seq.
ds_json() { # NAME PORT
  printf '{"apiVersion":"%s/v1alpha1","kind":"DittoServer","metadata":{"name":"%s"},"spec":{"image":"%s","replicas":0,"nfsPort":%s,"storage":{"metadataSize":"1Gi"}}}' \
    "$group" "$1" "$STANDIN" "$2"
}
acurl() { # METHOD PATH [CONTENT-TYPE BODY]: prints the HTTP code
  curl -sS -o /dev/null -w '%{http_code}' --max-time 10 --cacert "$DITTOFS_CA_CERT" \
    -H "Authorization: Bearer $token" -X "$1" ${3:+-H "Content-Type: $3" --data "$4"} \
    "$api$2" 2>/dev/null || true
}
churn() {
  local rate=$1 seq live=() r i name code op port lo hi
  mapfile -t live < <("$KUBECTL" -n "$ns" get dittoservers -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}' 2>/dev/null)
  seq=$(<"$tmp/seq")
  lo=$((N * 9 / 10)) hi=$((N * 11 / 10))
  # paced by a schedule (not a sleep after each operation, whose own time
  # would lower the rate on a busy machine)
  local period_ms next wait_ms
  period_ms=$(awk -v r="$rate" 'BEGIN { printf "%d", 1000 / r }')
  next=$(now_ms)
  while [ ! -e "$tmp/churn.stop" ]; do
    seq=$((seq + 1))
    echo "$seq" >"$tmp/seq"
    port=$((10000 + seq))
    r=$((RANDOM % 10))
    if [ "${#live[@]}" -lt "$lo" ] || { [ "$r" -lt 2 ] && [ "${#live[@]}" -lt "$hi" ]; }; then
      op=create name="ds-$seq"
      code=$(acurl POST "$dspath" application/json "$(ds_json "$name" "$port")")
      [ "$code" = 201 ] && live+=("$name")
    elif [ "$r" -lt 4 ] && [ "${#live[@]}" -gt "$lo" ]; then
      i=$((RANDOM % ${#live[@]}))
      op=delete name=${live[$i]}
      code=$(acurl DELETE "$dspath/$name")
      live=("${live[@]:0:$i}" "${live[@]:$((i + 1))}")
    else
      i=$((RANDOM % ${#live[@]}))
      op=change name=${live[$i]}
      code=$(acurl PATCH "$dspath/$name" application/merge-patch+json "{\"spec\":{\"nfsPort\":$port}}")
    fi
    echo "$(now_ms) $op $name $port $code" >>"$tmp/churn.log"
    next=$((next + period_ms))
    wait_ms=$((next - $(now_ms)))
    if [ "$wait_ms" -gt 0 ]; then
      sleep "$(secs "$wait_ms")"
    elif [ "$wait_ms" -lt $((-10 * period_ms)) ]; then
      next=$(now_ms) # far behind (an apiserver down): no burst to catch up
    fi
  done
}
churn_pid=
churn_start() { # RATE
  rm -f "$tmp/churn.stop"
  churn "$1" &
  churn_pid=$!
  pids+=("$churn_pid")
}
churn_stop() {
  [ -n "$churn_pid" ] || return 0
  touch "$tmp/churn.stop"
  wait "$churn_pid" 2>/dev/null
  churn_pid=
}
churn_summary() { # FROM_MS: "C creates, U changes, D deletes, F failed (R/s)"
  awk -v from="$1" '$1 >= from { n[$2]++; if ($5 !~ /^20[01]$/) f++; if (!t0) t0 = $1; t1 = $1 }
    END { printf "%d creates, %d changes, %d deletes, %d failed (%.1f/s)", n["create"], n["change"],
      n["delete"], f, (t1 > t0 ? (n["create"] + n["change"] + n["delete"] - 1) * 1000 / (t1 - t0) : 0) }' \
    "$tmp/churn.log" 2>/dev/null
}

# --- the state -----------------------------------------------------------------
# problems: one line per difference between the namespace and a clean
# reconcile of its DittoServers ("orphan:" lines: children whose
# DittoServer is gone, which the garbage collector removes).
problems() {
  "$KUBECTL" -n "$ns" get dittoservers,configmaps,services,statefulsets -o json 2>/dev/null |
    jq -r '
    def ctl: [.metadata.ownerReferences[]? | select(.controller == true and .kind == "DittoServer")][0];
    def nfs: if .kind == "ConfigMap" then ((.data["config.yaml"] // "") | (capture("port: (?<p>[0-9]+)").p // "-1") | tonumber)
      elif .kind == "Service" then ([.spec.ports[]? | select(.name == "nfs") | .port][0] // -1)
      else ([.spec.template.spec.containers[0].ports[]? | select(.name == "nfs") | .containerPort][0] // -1) end;
    (.items | map(select(.kind == "DittoServer" and (.metadata.deletionTimestamp | not)))) as $ds
    | (.items | map(select(.kind != "DittoServer" and ctl != null))) as $ch
    | ($ds | map({key: .metadata.uid, value: 1}) | from_entries) as $live
    | ($ch | map({key: "\(.kind)/\(.metadata.name)", value: .}) | from_entries) as $by
    | ($ds[] | . as $d | .metadata.name as $n |
        (if .status.observedGeneration != .metadata.generation then
           "\($n): observedGeneration \(.status.observedGeneration) != generation \(.metadata.generation)" else empty end),
        ([.status.conditions[]? | select(.type == "Reconciled") | .reason][0] as $r |
           if $r != "ChildrenUpToDate" then "\($n): Reconciled \($r)" else empty end),
        (["ConfigMap/\($n)-config", "Service/\($n)", "Service/\($n)-headless", "StatefulSet/\($n)"][] as $k |
           $by[$k] as $c |
           if $c == null then "\($n): \($k) missing"
           elif ($c | ctl.uid) != $d.metadata.uid then "\($n): \($k) owned by \($c | ctl.uid)"
           elif ($c | nfs) != $d.spec.nfsPort then "\($n): \($k) nfs port \($c | nfs), spec \($d.spec.nfsPort)"
           else empty end)),
      ($ch[] | select($live[ctl.uid] == null) | "orphan: \(.kind)/\(.metadata.name) of \(ctl.name) \(ctl.uid)"),
      ($ch | group_by([ctl.uid, .kind])[] | select(length > (if .[0].kind == "Service" then 2 else 1 end)) |
        "duplicate: \(length) \(.[0].kind)s of \(.[0] | ctl.name): \(map(.metadata.name) | join(" "))")'
}
ds_count() { "$KUBECTL" -n "$ns" get dittoservers -o name 2>/dev/null | wc -l; }

# wait_converged SECONDS: until problems() has nothing but orphans; sets
# $conv_ms (when it was seen, ms) and $problems_left
wait_converged() {
  local end=$(($(now_ms) + $1 * 1000)) p
  while :; do
    p=$(problems)
    if [ -z "$(grep -v '^orphan:' <<<"$p")" ] && [ "$(ds_count)" -gt 0 ]; then
      conv_ms=$(now_ms)
      problems_left=
      return 0
    fi
    problems_left=$p
    [ "$(now_ms)" -lt "$end" ] || return 1
    sleep 1
  done
}
# converged_within WHAT SECONDS FROM_MS: a check with the time it took
converged_within() {
  local what=$1 bound=$2 from=$3
  if wait_converged "$bound"; then
    ok "$what: converged in $(secs $((conv_ms - from))) s (bound $bound s; load $(load))"
    echo "# time $what converged_ms=$((conv_ms - from)) dittoservers=$(ds_count)"
  else
    not_ok "$what: converged within $bound s (load $(load))" \
      "$(head -n 15 <<<"$problems_left") ($(wc -l <<<"$problems_left") problems)"
  fi
}
no_orphans() {
  local what=$1 end=$(($(now_ms) + ORPHAN_WAIT_S * 1000)) p
  while :; do
    p=$(problems)
    if [ -z "$p" ]; then
      ok "$what: no orphaned or duplicated child, every child carries its DittoServer's spec"
      return
    fi
    if [ "$(now_ms)" -ge "$end" ]; then
      not_ok "$what: no orphaned or duplicated child" "$(head -n 15 <<<"$p")"
      return
    fi
    sleep 2
  done
}

# clean_reconcile WHAT: a fresh operator (user c) straight on the
# apiserver reconciles every DittoServer: zero writes
clean_reconcile() {
  local what=$1 mark nds t0 end keys w
  mark=$(audit_mark)
  nds=$(ds_count)
  t0=$(now_ms)
  : >"$tmp/c.log"
  start_op c "$tmp/c.kubeconfig" "$tmp/c.log"
  local c=$last_pid
  end=$((t0 + CLEAN_MAX_S * 1000))
  keys=0
  while [ "$(now_ms)" -lt "$end" ]; do
    keys=$(grep 'msg="reconciled"' "$tmp/c.log" | sed -n 's/.* key=\([^ ]*\) .*/\1/p' | sort -u | wc -l)
    [ "$keys" -ge "$nds" ] && break
    sleep 1
  done
  sleep 2
  stop_op "$c"
  w=$(writes_since "$mark" "$user_c" | wc -l)
  if [ "$keys" -ge "$nds" ] && [ "$w" = 0 ]; then
    ok "$what: a fresh operator reconciles all $nds DittoServers with 0 writes ($(secs $(($(now_ms) - t0))) s)"
  else
    not_ok "$what: a fresh operator reconciles all $nds DittoServers with 0 writes" \
      "reconciled $keys of $nds; $w writes:
$(writes_since "$mark" "$user_c" | jq -r '"\(.verb) \(.objectRef.resource)/\(.objectRef.subresource // "") \(.objectRef.name) \(.responseStatus.code)"' | head -n 10)"
  fi
}

# --- the audit log -----------------------------------------------------------
# writes_since MARK USER...: the users' writes (JSON lines, Events and Leases
# aside) in the namespace; writes_since_file FILE USER...: the same from a
# file of audit events
writes_since() {
  local mark=$1
  shift
  audit_since "$mark" | writes_filter "$@"
}
writes_since_file() {
  local f=$1
  shift
  writes_filter "$@" <"$f"
}
writes_filter() {
  jq -c --arg ns "$ns" --args '
    select(.stage == "ResponseComplete" and (.user.username | IN($ARGS.positional[])) and
      (.verb | test("^(create|update|patch|delete)$")) and .objectRef.namespace == $ns and
      .objectRef.resource != "events" and .objectRef.resource != "leases")' "$@"
}
# write_audit WHAT MARK [DUPS]: no duplicate and no stale write among the
# operators' successful writes since MARK, per object (a deletion of the
# object, by anyone, starts it over):
#   stale      a write carrying a lower nfs port (children) or status
#              observedGeneration than the write before it;
#   duplicate  a write carrying the same body as the write before it.
# DUPS=count: duplicates are only counted (where answers are lost on
# purpose: a write the apiserver did but whose answer never came is sent
# again, by libcurl itself on a reused connection that died before any
# byte of the answer, or by the next reconcile; a server-side apply of the
# same body changes nothing). Writes for a DittoServer already deleted
# (a reconcile in flight at the deletion) are counted, but one object
# written twice after its DittoServer's deletion is a loop against the
# garbage collector (re-created from a lagging cache, deleted again: what
# the controller's suspects prevent) and fails.
write_audit() {
  local what=$1 mark=$2 dups=${3:-fail} out total bad ndup nafter
  audit_since "$mark" >"$tmp/audit.json"
  writes_since_file "$tmp/audit.json" "$user_a" "$user_b" "$user_c" >"$tmp/writes.json"
  jq -c --arg ns "$ns" 'select(.stage == "ResponseComplete" and .verb == "delete" and
    .objectRef.namespace == $ns and (.responseStatus.code == 200 or .responseStatus.code == 202) and
    (.objectRef.resource | IN("configmaps", "services", "statefulsets", "dittoservers")) and
    (.objectRef.subresource | not))' "$tmp/audit.json" >"$tmp/deletes.json"
  total=$(wc -l <"$tmp/writes.json")
  if [ "$total" -gt 0 ] && [ "$(jq -s '[.[] | select(.verb != "delete" and .requestObject == null)] | length' "$tmp/writes.json")" != 0 ]; then
    not_ok "$what: the audit log carries the bodies of the operators' writes" \
      "no requestObject: the apiserver's audit policy predates the dittofs:audit-request rule (deploy/local/cluster.sh); start the cluster fresh"
    return
  fi
  out=$(jq -s -r --slurpfile dels "$tmp/deletes.json" '
    def val: if .objectRef.subresource == "status" then (.requestObject.status.observedGeneration // -1)
      elif .objectRef.resource == "configmaps" then ((.requestObject.data["config.yaml"] // "") | (capture("port: (?<p>[0-9]+)").p // "-1") | tonumber)
      elif .objectRef.resource == "services" then ([.requestObject.spec.ports[]? | select(.name == "nfs") | .port][0] // -1)
      elif .objectRef.resource == "statefulsets" then ([.requestObject.spec.template.spec.containers[0].ports[]? | select(.name == "nfs") | .containerPort][0] // -1)
      else -1 end;
    def obj: "\(.objectRef.resource)\(if .objectRef.subresource then "/" + .objectRef.subresource else "" end) \(.objectRef.name)";
    def owner: if .objectRef.resource == "dittoservers" then .objectRef.name
      else ([.requestObject.metadata.ownerReferences[]? | select(.kind == "DittoServer") | .name][0] // "") end;
    ($dels | map(select(.objectRef.resource == "dittoservers") | {key: .objectRef.name, value: .requestReceivedTimestamp}) | from_entries) as $dsdel
    | map(select(.verb != "delete" and .responseStatus.code >= 200 and .responseStatus.code < 300)) as $ok
    | ($ok[] | owner as $o | select($dsdel[$o] != null and .requestReceivedTimestamp > $dsdel[$o]) |
        "after-delete: \(obj) at \(.requestReceivedTimestamp) by \(.user.username), DittoServer \($o) deleted at \($dsdel[$o])"),
      (($ok + ($dels | map(select(.objectRef.resource != "dittoservers") | . + {deleted: true})))
      | group_by([.objectRef.resource, (.objectRef.subresource // ""), .objectRef.name])[]
      | sort_by(.requestReceivedTimestamp)
      | reduce .[] as $e ({prev: null, out: []};
          if $e.deleted then .prev = null
          else
            (if .prev == null then .
             else .prev as $p
               | if ($e | val) < ($p | val) then
                   .out += ["stale: \($e | obj) at \($e.requestReceivedTimestamp) by \($e.user.username) carries \($e | val) after \($p | val) at \($p.requestReceivedTimestamp) by \($p.user.username)"]
                 elif $e.requestObject == $p.requestObject then
                   .out += ["duplicate: \($e | obj) at \($e.requestReceivedTimestamp) by \($e.user.username): the body of \($p.requestReceivedTimestamp) by \($p.user.username) again"]
                 else . end
             end) | .prev = $e
          end) | .out[])' "$tmp/writes.json")
  ndup=$(grep -c '^duplicate:' <<<"$out")
  nafter=$(grep -c '^after-delete:' <<<"$out")
  [ "$nafter" -gt 0 ] && note "$what: $nafter writes for a DittoServer already deleted, e.g. $(grep -m1 '^after-delete:' <<<"$out")"
  local loops
  loops=$(grep '^after-delete:' <<<"$out" | awk '{ print $2 "/" $3 }' | sort | uniq -c |
    awk '$1 > 1 { printf "loop: %s written %d times after its DittoServer was deleted\n", $2, $1 }')
  out=$(grep -v '^after-delete:' <<<"$out")
  [ -n "$loops" ] && out+=$'\n'"$loops"
  if [ "$dups" = count ]; then
    [ "$ndup" -gt 0 ] && note "$what: $ndup writes sent again with the same body after a lost answer, e.g. $(grep -m1 '^duplicate:' <<<"$out")"
    out=$(grep -v '^duplicate:' <<<"$out")
  fi
  bad=$(grep -c . <<<"$out")
  note "time $what writes=$total duplicates=$ndup after_delete=$nafter (operators' writes in the namespace, Events aside)"
  local kinds="duplicate or stale"
  [ "$dups" = count ] && kinds=stale
  if [ "$bad" = 0 ]; then
    ok "$what: no $kinds write among $total (audit log)"
  else
    not_ok "$what: no $kinds write among $total (audit log): $bad" "$(head -n 10 <<<"$out")"
  fi
}
# watch_resources MARK USER: the resources USER watched since MARK
watch_resources() {
  audit_since "$1" | jq -r --arg u "$2" 'select(.user.username == $u and .verb == "watch") | .objectRef.resource' | sort -u
}
# rewatch MARK USER HEAL_MS RESOURCES...: "resource delay_ms" of the first
# watch USER started (response started, 200) after HEAL_MS, or "resource -1"
rewatch() {
  local mark=$1 u=$2 heal=$3
  shift 3
  audit_since "$mark" | jq -r -s --arg u "$u" --argjson heal "$heal" --args '
    def ms: capture("^(?<s>[^.Z]+)(\\.(?<f>[0-9]+))?Z$") as $c
      | (($c.s + "Z") | fromdateiso8601) * 1000 + ((($c.f // "0") + "000")[0:3] | tonumber);
    map(select(.user.username == $u and .verb == "watch" and .stage == "ResponseStarted" and
      (.responseStatus.code // 200) == 200 and (.requestReceivedTimestamp | ms) >= $heal)) as $w
    | $ARGS.positional[] as $r
    | ([$w[] | select(.objectRef.resource == $r) | (.stageTimestamp | ms) - $heal] | min) as $d
    | "\($r) \($d // -1)"' "$@"
}

# --- setup ---------------------------------------------------------------------
note "sizes: N=$N churn=$CHURN_RATE/s qps=$QPS burst=$BURST workers=$WORKERS scenarios: $SCENARIOS; load $(load) on $(nproc) cores"
tbin=$("$root/deploy/local/toxiproxy.sh" bin) || { not_ok "Toxiproxy built"; tap_summary; exit 1; }
check "the operator binary exists" test -x "$BIN"
check "CRD installed" crd_install --force-conflicts
"$KUBECTL" wait --for condition=established --timeout=60s crd/dittoservers.$group >/dev/null
"$KUBECTL" create namespace "$ns" >/dev/null
for id in "$user_a" "$user_b" "$user_c"; do cert "$id" || { not_ok "client certificate $id"; tap_summary; exit 1; }; done
tport=$(free_port)
"$tbin/toxiproxy-server" -host 127.0.0.1 -port "$tport" >"$tmp/toxiproxy.log" 2>&1 &
pids+=("$!")
check "toxiproxy-server answers" wait_for 20 curl -sf "http://127.0.0.1:$tport/version"
pa=$(free_port)
pb=$(free_port)
while [ "$pb" = "$pa" ]; do pb=$(free_port); done
tp POST /proxies "{\"name\":\"api-a\",\"listen\":\"127.0.0.1:$pa\",\"upstream\":\"127.0.0.1:$DITTOFS_APISERVER_PORT\",\"enabled\":true}"
tp POST /proxies "{\"name\":\"api-b\",\"listen\":\"127.0.0.1:$pb\",\"upstream\":\"127.0.0.1:$DITTOFS_APISERVER_PORT\",\"enabled\":true}"
kubeconfig "$tmp/a.kubeconfig" "https://127.0.0.1:$pa" "$user_a"
kubeconfig "$tmp/b.kubeconfig" "https://127.0.0.1:$pb" "$user_b"
kubeconfig "$tmp/c.kubeconfig" "$api" "$user_c"
check "TLS verified through the proxy (127.0.0.1 is in the serving cert)" \
  "$KUBECTL" --kubeconfig "$tmp/a.kubeconfig" get --raw /version

echo 0 >"$tmp/seq"
for i in $(seq 1 "$N"); do ds_json "ds-$i" $((10000 + i)); echo; done |
  jq -s '{apiVersion: "v1", kind: "List", items: .}' >"$tmp/fleet.json"
echo "$N" >"$tmp/seq"
t0=$(now_ms)
check "$N DittoServers created" "$KUBECTL" -n "$ns" create -f "$tmp/fleet.json"
a_mark=$(audit_mark)
start_a
converged_within "setup ($N DittoServers)" "$SETUP_MAX_S" "$t0"
# The 1.20 apiserver writes a watch's audit events (ResponseStarted
# included) only when the watch ends: there, which watches run and when
# they came back cannot be read from the audit log while they run.
audit_watches=1
case "${DITTOFS_KUBE_VERSION:-}" in 1.20*) audit_watches= ;; esac
no_audit_watches="the 1.20 apiserver audits a watch only when it ends"
mapfile -t watched < <(watch_resources "$a_mark" "$user_a")
note "the operator watches: ${watched[*]}"
if [ -n "$audit_watches" ]; then
  check "the operator watches DittoServers and their children" \
    sh -c "printf '%s\n' ${watched[*]} | grep -qx dittoservers && printf '%s\n' ${watched[*]} | grep -qx configmaps"
else
  skip "the operator watches DittoServers and their children" "$no_audit_watches"
fi

in_scenarios() { grep -qw "$1" <<<"$SCENARIOS"; }
ensure_a() { # the operator under test runs (restarted if a scenario ended it)
  if [ -z "$op_a" ] || ! alive "$op_a"; then start_a; fi
}

# --- partition ---------------------------------------------------------------
# partition FLAVOR: blackhole (Toxiproxy's timeout toxic: the bytes are
# dropped, and the heal closes the connections it held) or stall (a latency
# toxic of an hour: the bytes wait, and the heal delivers them, as TCP does
# after a partition that keeps the connections).
partition() {
  local flavor=$1 what=$1 t_part t_heal wait_ms worst late res d
  note "--- $what: ${PARTITION_S} s, churn, heal"
  ensure_a
  wait_converged "$CONVERGE_MAX_S" || true
  mark=$(audit_mark)
  churn_start "$CHURN_RATE"
  sleep 3
  t_part=$(now_ms)
  if [ "$flavor" = blackhole ]; then
    check "$what: blackhole on (both directions)" blackhole api-a
  else
    check "$what: stall on (both directions)" stall api-a
  fi
  sleep "$PARTITION_S"
  churn_stop
  if [ "$flavor" = blackhole ]; then heal api-a; else unstall api-a; fi
  t_heal=$(now_ms)
  note "$what: $(churn_summary "$t_part") during $(secs $((t_heal - t_part))) s"
  converged_within "$what: after the heal" "$CONVERGE_MAX_S" "$t_heal"
  # a watch may come back after the convergence: look at the whole bound
  wait_ms=$((t_heal + REWATCH_MAX_S * 1000 + 1000 - $(now_ms)))
  [ "$wait_ms" -gt 0 ] && sleep "$(secs "$wait_ms")"
  worst=0 late=
  rw=
  [ "${#watched[@]}" -gt 0 ] && rw=$(rewatch "$mark" "$user_a" "$t_heal" "${watched[@]}")
  [ -n "$rw" ] && while read -r res d; do
    note "time $what rewatch $res delay_ms=$d"
    if [ "$d" -lt 0 ] || [ "$d" -gt $((REWATCH_MAX_S * 1000)) ]; then late+="$res: ${d} ms; "; fi
    [ "$d" -gt "$worst" ] && worst=$d
  done <<<"$rw"
  if [ -z "$audit_watches" ]; then
    skip "$what: every watch working again <= $REWATCH_MAX_S s after the heal" "$no_audit_watches"
  elif [ "${#watched[@]}" -eq 0 ]; then
    not_ok "$what: every watch working again <= $REWATCH_MAX_S s after the heal" "no watch of the operator known"
  elif [ "$flavor" = stall ]; then
    # the held streams go on after the heal (-1: not re-established, not
    # needed); one that failed meanwhile must be back within the bound
    late=$(awk -v b=$((REWATCH_MAX_S * 1000)) '$2 > b { printf "%s: %s ms; ", $1, $2 }' <<<"$rw")
  fi
  if [ -z "$audit_watches" ] || [ "${#watched[@]}" -eq 0 ]; then
    : # said above
  elif [ -z "$late" ]; then
    ok "$what: every watch working again <= $REWATCH_MAX_S s after the heal (slowest re-established $(secs "$worst") s)"
  else
    not_ok "$what: every watch re-established <= $REWATCH_MAX_S s after the heal" \
      "late or never (-1): $late$(grep -c 'watch attempt failed' "$tmp/a.log") watch failures in the log"
  fi
  check "$what: the operator kept running" alive "$op_a"
  write_audit "$what" "$mark"
  no_orphans "$what"
  clean_reconcile "$what"
}
in_scenarios partition && partition blackhole
in_scenarios stall && partition stall

# --- slow: latency and bandwidth -------------------------------------------------
if in_scenarios slow; then
  note "--- slow: latency 500 +- 200 ms, 64 KB/s both ways, ${SLOW_S} s"
  ensure_a
  wait_converged "$CONVERGE_MAX_S" || true
  mark=$(audit_mark)
  lines0=$(wc -l <"$tmp/a.log")
  t_slow=$(now_ms)
  toxic api-a lat-down latency downstream '{"latency":500,"jitter":200}' &&
    toxic api-a lat-up latency upstream '{"latency":500,"jitter":200}' &&
    toxic api-a bw-down bandwidth downstream '{"rate":64}' &&
    toxic api-a bw-up bandwidth upstream '{"rate":64}'
  check "slow: toxics on" test $? = 0
  churn_start "$SLOW_CHURN_RATE"
  sleep "$SLOW_S"
  churn_stop
  t_end=$(now_ms)
  note "slow: $(churn_summary "$t_slow")"
  converged_within "slow: under the toxics, after the churn" "$SLOW_CONVERGE_MAX_S" "$t_end"
  t_conv=$(now_ms)
  tp POST /reset
  minutes=$(awk -v a="$t_slow" -v b="$t_conv" 'BEGIN { printf "%.2f", (b - a) / 60000 }')
  warns=$(tail -n +"$((lines0 + 1))" "$tmp/a.log" | grep -c 'level=\(warn\|error\)')
  reqs=$(audit_since "$mark" | jq -c --arg u "$user_a" 'select(.user.username == $u and .stage == "ResponseComplete")' >"$tmp/slow.json"; wc -l <"$tmp/slow.json")
  fails=$(jq -r 'select(.responseStatus.code >= 400 and .responseStatus.code != 404) | .responseStatus.code' "$tmp/slow.json" | wc -l)
  note "time slow minutes=$minutes requests=$reqs failed_requests=$fails warn_lines=$warns ($(tail -n +"$((lines0 + 1))" "$tmp/a.log" | grep 'level=\(warn\|error\)' | sed 's/.* msg="\([^"]*\)".*/\1/' | sort | uniq -c | tr -s ' ' | tr '\n' ';'))"
  rate=$(awk -v w="$warns" -v f="$fails" -v m="$minutes" 'BEGIN { printf "%.1f", (w + f) / (m > 0 ? m : 1) }')
  if awk -v r="$rate" -v b="$STORM_MAX_PER_MIN" 'BEGIN { exit !(r <= b) }'; then
    ok "slow: no error storm ($warns warnings, $fails failed requests of $reqs in $minutes min: $rate/min <= $STORM_MAX_PER_MIN)"
  else
    not_ok "slow: no error storm: $rate/min > $STORM_MAX_PER_MIN" \
      "$(tail -n +"$((lines0 + 1))" "$tmp/a.log" | grep 'level=\(warn\|error\)' | head -n 8)"
  fi
  check "slow: the operator kept running" alive "$op_a"
  write_audit slow "$mark"
  no_orphans slow
  clean_reconcile slow
fi

# --- reset peer and truncated responses -----------------------------------------
cache_matches() { # the operator's cache sizes equal the server's counts
  local port m d c
  port=$(metrics_port "$tmp/a.log")
  m=$(curl -sf "http://127.0.0.1:$port/metrics") || { echo "no metrics"; return 1; }
  d=$(grep '^dittofs_cache_objects{' <<<"$m" | grep 'dittoservers' | awk '{ print $2 }')
  c=$(grep '^dittofs_cache_objects{' <<<"$m" | grep 'configmaps' | awk '{ print $2 }')
  local sd sc
  sd=$(ds_count)
  sc=$("$KUBECTL" -n "$ns" get configmaps -l dittofs.dittofs.com/server -o name | wc -l)
  echo "cache: dittoservers $d configmaps $c; server: $sd, $sc"
  [ "${d%.*}" = "$sd" ] && [ "${c%.*}" = "$sc" ]
}
if in_scenarios reset; then
  note "--- reset: reset_peer after ${RESET_AFTER_MS} ms (half the connections) ${RESET_S} s, then responses cut after ${TRUNC_BYTES} bytes ${TRUNC_S} s"
  ensure_a
  wait_converged "$CONVERGE_MAX_S" || true
  mark=$(audit_mark)
  lines0=$(wc -l <"$tmp/a.log")
  restarts0=$(grep -c '^===== start' "$tmp/a.log")
  churn_start "$CHURN_RATE"
  toxic api-a reset reset_peer downstream "{\"timeout\":$RESET_AFTER_MS}" 0.5 &&
    toxic api-a slicer slicer downstream '{"average_size":700,"size_variation":600,"delay":0}'
  check "reset: reset_peer and slicer on" test $? = 0
  sleep "$RESET_S"
  check "reset: the operator survived the resets" alive "$op_a"
  untoxic api-a reset
  toxic api-a trunc limit_data downstream "{\"bytes\":$TRUNC_BYTES}" 0.6
  # restarted: its first lists go through the cut connections too
  stop_op "$op_a"
  expect_eq "reset: after the resets the operator stops cleanly on SIGTERM (exit 0)" 0 "$stop_rc"
  start_a
  sleep "$TRUNC_S"
  check "reset: the operator survived the truncated responses" alive "$op_a"
  churn_stop
  tp POST /reset
  t_end=$(now_ms)
  cuts=$(tail -n +"$((lines0 + 1))" "$tmp/a.log" | grep -c 'watch attempt failed')
  mid=$(tail -n +"$((lines0 + 1))" "$tmp/a.log" | grep -c 'mid-event\|malformed\|transfer closed\|Connection reset\|partial')
  note "time reset watch_failures=$cuts cut_mid_body=$mid ($(tail -n +"$((lines0 + 1))" "$tmp/a.log" | grep 'watch attempt failed' | sed 's/.* error="\([^":]*\).*/\1/' | sort | uniq -c | tr -s ' ' | tr '\n' ';'))"
  check "reset: the faults hit the operator's streams ($cuts watch failures)" test "$cuts" -gt 0
  converged_within "reset: after the faults" "$CONVERGE_MAX_S" "$t_end"
  expect_eq "reset: no crash (one restart: the test's own)" $((restarts0 + 1)) "$(grep -c '^===== start' "$tmp/a.log")"
  check "reset: the caches hold what the server holds" wait_for 20 cache_matches
  write_audit reset "$mark" count
  no_orphans reset
  clean_reconcile reset
fi

# --- leader: partition longer than the renew deadline ------------------------------
if in_scenarios leader; then
  note "--- leader: two replicas, the leader partitioned ${LE_PARTITION_S} s"
  stop_op "$op_a"
  op_a=
  le=(--leader-elect --leader-election-namespace "$ns" --leader-election-id "$lease")
  : >"$tmp/la.log"
  : >"$tmp/lb.log"
  start_op a "$tmp/a.kubeconfig" "$tmp/la.log" "${le[@]}"
  la=$last_pid
  check "leader: replica a leads" wait_for 30 grep -q 'msg="became leader"' "$tmp/la.log"
  start_op b "$tmp/b.kubeconfig" "$tmp/lb.log" "${le[@]}"
  lb=$last_pid
  check "leader: replica b is a standby" wait_for 30 grep -q 'msg="leader is"' "$tmp/lb.log"
  wait_converged "$CONVERGE_MAX_S" || true
  mark=$(audit_mark)
  churn_start "$CHURN_RATE"
  sleep 3
  t_part=$(now_ms)
  blackhole api-a
  # a's Deployment would start it again: so does this test, at once
  # (through the same, still partitioned, proxy)
  relaunched=0
  end=$((t_part + LE_PARTITION_S * 1000))
  while [ "$(now_ms)" -lt "$end" ]; do
    if [ "$relaunched" = 0 ] && ! alive "$la"; then
      wait "$la" 2>/dev/null
      la_rc=$?
      t_exit=$(now_ms)
      echo "===== restarted" >>"$tmp/la.log"
      start_op a "$tmp/a.kubeconfig" "$tmp/la.log" "${le[@]}"
      la=$last_pid
      relaunched=1
    fi
    sleep 0.2
  done
  heal api-a
  t_heal=$(now_ms)
  churn_stop
  lost=$(grep -m1 'leader election lost: stopped writing' "$tmp/la.log")
  took=$(grep -m1 'msg="became leader"' "$tmp/lb.log")
  check "leader: the partitioned leader stopped writing and exited" test -n "$lost" -a "$relaunched" = 1
  if [ -n "$lost" ] && [ -n "$took" ]; then
    t_lost=$(log_ms "$lost")
    t_took=$(log_ms "$took")
    note "time leader stopped_ms=$((t_lost - t_part)) exit_rc=${la_rc:-?} exited_ms=$((${t_exit:-0} - t_part)) takeover_ms=$((t_took - t_part)) (after the partition began)"
    check "leader: a stopped $(secs $((t_took - t_lost))) s before b took the Lease" test "$t_lost" -lt "$t_took"
    # the Lease a renewed last (audit: its last successful update) and when
    # b could take it: that renew plus leaseDurationSeconds (15 s)
    last_renew=$(audit_since "$mark" | jq -r -s --arg u "$user_a" --arg l "$lease" '
      [.[] | select(.user.username == $u and .objectRef.resource == "leases" and .objectRef.name == $l and
        .verb == "update" and .stage == "ResponseComplete" and .responseStatus.code == 200) | .requestReceivedTimestamp] | max // ""')
    if [ -n "$last_renew" ]; then
      lr=$(date -d "$last_renew" +%s%3N)
      note "time leader last_renew_ms=$((lr - t_part)) lease_expiry_ms=$((lr + 15000 - t_part))"
      check "leader: a stopped before its Lease expired (renew + 15 s)" test "$t_lost" -lt $((lr + 15000))
    else
      not_ok "leader: a's last renew is in the audit log"
    fi
    first_b=$(writes_since "$mark" "$user_b" | jq -r -s 'map(.requestReceivedTimestamp) | min // ""')
    a_after=0
    if [ -n "$first_b" ]; then
      a_after=$(writes_since "$mark" "$user_a" | jq -r --arg t "$first_b" 'select(.requestReceivedTimestamp >= $t) | .requestReceivedTimestamp' | wc -l)
      note "time leader b_first_write_ms=$(($(date -d "$first_b" +%s%3N) - t_part))"
    fi
    expect_eq "leader: no write of a after b's first (no two writers)" 0 "$a_after"
  else
    not_ok "leader: a lost and b took over" "a: ${lost:-no lost line}; b: ${took:-no became-leader line}"
  fi
  converged_within "leader: after the heal" "$CONVERGE_MAX_S" "$t_heal"
  sleep 5
  check "leader: the old leader came back and runs" alive "$la"
  a_restart_line=$(grep -n '^===== restarted' "$tmp/la.log" | cut -d: -f1)
  check "leader: it is a standby (sees b as the holder, never became leader)" sh -c \
    "tail -n +${a_restart_line:-1} '$tmp/la.log' | grep -q 'msg=\"leader is\"' && ! tail -n +${a_restart_line:-1} '$tmp/la.log' | grep -q 'msg=\"became leader\"'"
  holder=$("$KUBECTL" -n "$ns" get lease "$lease" -o jsonpath='{.spec.holderIdentity}')
  bid=$(sed -n 's/.*msg="leader election".* identity=\([^ ]*\).*/\1/p' "$tmp/lb.log" | head -n1)
  expect_eq "leader: the Lease stays with b" "$bid" "$holder"
  write_audit leader "$mark"
  no_orphans leader
  clean_reconcile leader
  stop_op "$la"
  stop_op "$lb"
  cat "$tmp/la.log" "$tmp/lb.log" >>"$tmp/leader-all.log"
  rm -f "$tmp/la.log" "$tmp/lb.log"
  start_a
fi

# --- etcd killed under load ------------------------------------------------------
if in_scenarios etcd; then
  note "--- etcd: SIGKILL under churn, ${ETCD_DOWN_S} s down, started again"
  ensure_a
  wait_converged "$CONVERGE_MAX_S" || true
  mark=$(audit_mark)
  churn_start "$CHURN_RATE"
  sleep 3
  check "etcd: killed" "$root/deploy/local/cluster.sh" kill-etcd
  sleep "$ETCD_DOWN_S"
  t_up0=$(now_ms)
  check "etcd: started again" "$root/deploy/local/cluster.sh" start-etcd
  check "etcd: the apiserver is ready again" wait_for 60 sh -c "'$KUBECTL' get --raw /readyz | grep -q ok"
  t_up=$(now_ms)
  note "time etcd restart_ms=$((t_up - t_up0))"
  sleep 3
  churn_stop
  t_end=$(now_ms)
  converged_within "etcd: after the restart" "$CONVERGE_MAX_S" "$t_end"
  check "etcd: the operator kept running" alive "$op_a"
  write_audit etcd "$mark"
  no_orphans etcd
  clean_reconcile etcd
fi

# --- apiserver restarts ----------------------------------------------------------
if in_scenarios restarts; then
  note "--- restarts: the apiserver SIGKILLed and started again $RESTARTS times under churn"
  ensure_a
  wait_converged "$CONVERGE_MAX_S" || true
  mark=$(audit_mark)
  worst=0 bad=0
  for i in $(seq 1 "$RESTARTS"); do
    churn_start "$CHURN_RATE"
    sleep "$((1 + RANDOM % 8)).$((RANDOM % 10))"
    t_k=$(now_ms)
    if ! "$root/deploy/local/cluster.sh" restart-apiserver >"$tmp/restart.out" 2>&1; then
      not_ok "restarts: restart $i" "$(tail -n 5 "$tmp/restart.out")"
      bad=$((bad + 1))
    fi
    t_r=$(now_ms)
    churn_stop
    if wait_converged "$CONVERGE_MAX_S"; then
      d=$((conv_ms - t_r))
      [ "$d" -gt "$worst" ] && worst=$d
      note "time restarts restart=$i apiserver_down_ms=$((t_r - t_k)) converged_ms=$d load=$(load)"
    else
      bad=$((bad + 1))
      note "restarts: restart $i: not converged within $CONVERGE_MAX_S s: $(head -n 3 <<<"$problems_left" | tr '\n' ';')"
    fi
  done
  if [ "$bad" = 0 ]; then
    ok "restarts: converged after each of $RESTARTS apiserver restarts (slowest $(secs "$worst") s after ready, bound $CONVERGE_MAX_S s)"
  else
    not_ok "restarts: converged after each of $RESTARTS apiserver restarts" "$bad failed"
  fi
  check "restarts: the operator kept running" alive "$op_a"
  write_audit restarts "$mark"
  no_orphans restarts
  clean_reconcile restarts
fi

# --- kill -9 of the operator ----------------------------------------------------
if in_scenarios kill9; then
  note "--- kill9: the operator kill -9-ed every $KILL_EVERY_S s, $KILLS times, under churn"
  ensure_a
  wait_converged "$CONVERGE_MAX_S" || true
  mark=$(audit_mark)
  churn_start "$CHURN_RATE"
  t_k0=$(now_ms)
  for i in $(seq 1 "$KILLS"); do
    ensure_a
    sleep "$KILL_EVERY_S"
    kill -9 "$op_a" 2>/dev/null
    wait "$op_a" 2>/dev/null
    op_a=
  done
  churn_stop
  t_last=$(now_ms)
  kwrites=$(writes_since "$mark" "$user_a" | wc -l)
  note "kill9: $(churn_summary "$t_k0"); $kwrites writes by the killed operators in $(secs $((t_last - t_k0))) s"
  start_a
  converged_within "kill9: after the last kill" "$CONVERGE_MAX_S" "$t_last"
  write_audit kill9 "$mark"
  no_orphans kill9
  clean_reconcile kill9
fi

# The tests after this one need the node (when there is one) Ready again.
nodes_ready() {
  local n
  n=$("$KUBECTL" get nodes -o json 2>/dev/null |
    jq '[.items[] | select(([.status.conditions[]? | select(.type == "Ready") | .status][0]) != "True")] | length') &&
    [ "$n" = 0 ]
}
if [ -n "$("$KUBECTL" get nodes -o name 2>/dev/null)" ]; then
  check "the cluster's nodes are Ready again" wait_for 120 nodes_ready
fi
note "load $(load) at the end"
tap_summary
