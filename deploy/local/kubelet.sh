#!/usr/bin/env bash
# deploy/local/kubelet.sh: a kubelet STAND-IN for the local control plane,
# kept only where one node cannot host the pods (benchmarks with hundreds or
# thousands of DittoServers). The test ground has a real node (node.sh); run
# this only with the control plane alone (DITTOFS_NODE=0 cluster.sh start),
# where pods stay Pending and unbound. This script plays
# the kubelet's part that controllers can see: it writes pod status (phase
# Running, conditions Initialized/Ready/ContainersReady/PodScheduled True,
# running and ready containerStatuses, podIP, startTime) through the pods/status
# subresource, so the StatefulSet controller counts the pods as ready.
#
#   kubelet.sh ready NAMESPACE STATEFULSET [--timeout S]
#       Mark the StatefulSet's pods ready as they appear (OrderedReady creates
#       them one by one) until the StatefulSet reports all replicas ready and
#       updated. Default timeout 60 s; exit 1 on timeout.
#   kubelet.sh watch NAMESPACE|-A [--interval S]
#       Every S seconds (default 1) mark every pod that is not Ready as ready,
#       until killed.
#   kubelet.sh pod NAMESPACE POD        mark one pod ready
#   kubelet.sh unready NAMESPACE POD    set Ready/ContainersReady False (the
#                                       pod stays Running)
#
# Uses $DITTOFS_CLUSTER_DIR/env (default /tmp/dittofs-cluster/env) written by
# cluster.sh start. Pods are never bound to a node, so deleting one is immediate.
set -euo pipefail

DIR=${DITTOFS_CLUSTER_DIR:-/tmp/dittofs-cluster}
[[ -f $DIR/env ]] || { echo "kubelet.sh: no $DIR/env; run deploy/local/cluster.sh start" >&2; exit 1; }
# shellcheck source=/dev/null
. "$DIR/env"
KUBECTL=${DITTOFS_KUBECTL:-kubectl}
TOKEN=$(<"$DITTOFS_ADMIN_TOKEN_FILE")

log() { printf '[kubelet.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

kc() { "$KUBECTL" --kubeconfig="$KUBECONFIG" --request-timeout=10s "$@"; }

json_str() {
  local s=$1
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  printf '"%s"' "$s"
}

# A stable fake pod IP in 10.244.0.0/16 derived from namespace/name.
pod_ip() {
  local n
  n=$(printf '%s/%s' "$1" "$2" | cksum | awk '{print $1}')
  printf '10.244.%d.%d' $(((n / 254) % 256)) $((n % 254 + 1))
}

# patch_status NAMESPACE POD JSON: merge-patch pods/NAME/status.
patch_status() {
  local ns=$1 pod=$2 body=$3 out code
  out=$(mktemp)
  code=$(curl -sS --max-time 10 --cacert "$DITTOFS_CA_CERT" -o "$out" -w '%{http_code}' \
    -X PATCH -H "Authorization: Bearer $TOKEN" \
    -H 'Content-Type: application/merge-patch+json' \
    --data-binary "$body" \
    "$DITTOFS_APISERVER/api/v1/namespaces/$ns/pods/$pod/status") || code=000
  if [[ $code != 2* ]]; then
    log "PATCH $ns/$pod/status: HTTP $code $(head -c 300 "$out")"
    rm -f "$out"
    return 1
  fi
  rm -f "$out"
}

mark_ready() {
  local ns=$1 pod=$2 now ip spec name image kind statuses="" init_statuses="" sep="" isep=""
  now=$(date -u +%FT%TZ)
  ip=$(pod_ip "$ns" "$pod")
  # kind|name|image per container
  spec=$(kc get pod -n "$ns" "$pod" -o jsonpath='{range .spec.initContainers[*]}init{"|"}{.name}{"|"}{.image}{"\n"}{end}{range .spec.containers[*]}main{"|"}{.name}{"|"}{.image}{"\n"}{end}') ||
    return 1
  while IFS='|' read -r kind name image; do
    [[ -n $name ]] || continue
    if [[ $kind == init ]]; then
      init_statuses+="$isep{\"name\":$(json_str "$name"),\"image\":$(json_str "$image"),\"imageID\":\"\",\"containerID\":\"fake://$pod-$name\",\"ready\":true,\"restartCount\":0,\"state\":{\"terminated\":{\"exitCode\":0,\"reason\":\"Completed\",\"startedAt\":\"$now\",\"finishedAt\":\"$now\"}}}"
      isep=,
    else
      statuses+="$sep{\"name\":$(json_str "$name"),\"image\":$(json_str "$image"),\"imageID\":\"\",\"containerID\":\"fake://$pod-$name\",\"ready\":true,\"started\":true,\"restartCount\":0,\"state\":{\"running\":{\"startedAt\":\"$now\"}}}"
      sep=,
    fi
  done <<<"$spec"
  local cond=""
  for c in PodScheduled Initialized ContainersReady Ready; do
    cond+="${cond:+,}{\"type\":\"$c\",\"status\":\"True\",\"lastProbeTime\":null,\"lastTransitionTime\":\"$now\"}"
  done
  local body="{\"status\":{\"phase\":\"Running\",\"conditions\":[$cond],\"hostIP\":\"127.0.0.1\",\"podIP\":\"$ip\",\"podIPs\":[{\"ip\":\"$ip\"}],\"startTime\":\"$now\",\"containerStatuses\":[$statuses]"
  [[ -n $init_statuses ]] && body+=",\"initContainerStatuses\":[$init_statuses]"
  body+="}}"
  patch_status "$ns" "$pod" "$body" && log "pod $ns/$pod Running and Ready ($ip)"
}

mark_unready() {
  local ns=$1 pod=$2 now cond=""
  now=$(date -u +%FT%TZ)
  for c in PodScheduled Initialized; do
    cond+="${cond:+,}{\"type\":\"$c\",\"status\":\"True\",\"lastProbeTime\":null,\"lastTransitionTime\":\"$now\"}"
  done
  for c in ContainersReady Ready; do
    cond+=",{\"type\":\"$c\",\"status\":\"False\",\"reason\":\"ContainersNotReady\",\"lastProbeTime\":null,\"lastTransitionTime\":\"$now\"}"
  done
  patch_status "$ns" "$pod" "{\"status\":{\"conditions\":[$cond]}}" && log "pod $ns/$pod not Ready"
}

# Lines "namespace|name|owner StatefulSet|Ready status|deletionTimestamp".
# Not tabs: read would merge the empty fields that tab (IFS white space) separates.
list_pods() {
  local scope=("$@")
  kc get pods "${scope[@]}" -o jsonpath='{range .items[*]}{.metadata.namespace}{"|"}{.metadata.name}{"|"}{.metadata.ownerReferences[?(@.kind=="StatefulSet")].name}{"|"}{.status.conditions[?(@.type=="Ready")].status}{"|"}{.metadata.deletionTimestamp}{"\n"}{end}'
}

cmd_ready() {
  local ns=${1:-} sts=${2:-} timeout=60
  [[ -n $ns && -n $sts ]] || usage
  shift 2
  while (($#)); do
    case $1 in
      --timeout) timeout=${2:?--timeout needs seconds}; shift 2 ;;
      *) usage ;;
    esac
  done
  local deadline=$((SECONDS + timeout)) pns pod owner ready deleting st
  while :; do
    if st=$(kc get statefulset -n "$ns" "$sts" -o jsonpath='{.spec.replicas}{"|"}{.status.readyReplicas}{"|"}{.status.updatedReplicas}{"|"}{.metadata.generation}{"|"}{.status.observedGeneration}{"|"}{.spec.updateStrategy.type}{"|"}{.spec.updateStrategy.rollingUpdate.partition}' 2>/dev/null); then
      local want rdy upd gen ogen strategy part
      IFS='|' read -r want rdy upd gen ogen strategy part <<<"$st"
      want=${want:-1}
      [[ $rdy =~ ^[0-9]+$ ]] || rdy=0
      [[ $upd =~ ^[0-9]+$ ]] || upd=0
      [[ $ogen =~ ^[0-9]+$ ]] || ogen=0
      [[ $part =~ ^[0-9]+$ ]] || part=0
      local want_upd=$((want - part))
      [[ $strategy == OnDelete ]] && want_upd=0
      if ((ogen >= gen && rdy == want && upd >= want_upd)); then
        log "statefulset $ns/$sts: $rdy/$want ready"
        return 0
      fi
      while IFS='|' read -r pns pod owner ready deleting; do
        [[ -n $pod && $owner == "$sts" && $ready != True && -z $deleting ]] || continue
        mark_ready "$pns" "$pod" || true
      done < <(list_pods -n "$ns" 2>/dev/null || true)
    fi
    if ((SECONDS >= deadline)); then
      log "timeout after ${timeout}s waiting for statefulset $ns/$sts (replicas ready updated gen observedGen: ${st:-not found})"
      kc get pods -n "$ns" -o wide >&2 || true
      return 1
    fi
    sleep 0.5
  done
}

cmd_watch() {
  local target=${1:-} interval=1 scope
  [[ -n $target ]] || usage
  shift
  while (($#)); do
    case $1 in
      --interval) interval=${2:?--interval needs seconds}; shift 2 ;;
      *) usage ;;
    esac
  done
  if [[ $target == -A || $target == --all-namespaces ]]; then scope=(-A); else scope=(-n "$target"); fi
  trap 'log "stopped"; exit 0' TERM INT
  log "marking pods ready in ${target/-A/all namespaces} every ${interval}s"
  local pns pod owner ready deleting
  while :; do
    while IFS='|' read -r pns pod owner ready deleting; do
      [[ -n $pod && $ready != True && -z $deleting ]] || continue
      mark_ready "$pns" "$pod" || true
    done < <(list_pods "${scope[@]}" 2>/dev/null || true)
    sleep "$interval"
  done
}

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2
  exit 2
}

case ${1:-} in
  ready) shift; cmd_ready "$@" ;;
  watch) shift; cmd_watch "$@" ;;
  pod) [[ $# == 3 ]] || usage; mark_ready "$2" "$3" ;;
  unready) [[ $# == 3 ]] || usage; mark_unready "$2" "$3" ;;
  *) usage ;;
esac
