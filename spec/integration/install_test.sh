#!/usr/bin/env bash
# spec/integration/install_test.sh: the install bundle end to end on the
# local test ground (issue 9 section 5, and section 1's Pod Security and
# uninstall points; run through spec/integration/with-cluster). The operator
# runs as the bundle runs it: its image (deploy/local/images.sh) in two pods
# of the Deployment in dittofs-system, in-cluster credentials, policies from
# the mounted ConfigMap.
#
#   0. the operator image is built (cached by content hash) and imported
#      into the node's containerd;
#   1. `kubectl apply -f deploy/install.yaml`: no Pod Security warning, both
#      operator pods Running and Ready, exactly one leader (the Lease
#      dittofs-operator-leader names it, only its leader_election_master_status
#      is 1), the namespace labelled enforce=restricted;
#   2. Pod Security (1.25+, where the admission exists): a privileged pod is
#      refused in dittofs-system and in the sample's namespace (labelled
#      enforce=restricted), the README sample's pod is admitted there (the
#      audit log shows the restricted policy evaluated) and runs;
#   3. the README sample (DittoFS stand-in image) Running and serving: its
#      Service's NFS port accepts a TCP connection, a file written through
#      the stand-in's file API reads back;
#   4. the policies ConfigMap replaced with the example policy of
#      deploy/examples/policies that adds tolerations, a nodeSelector and a
#      sidecar (the sample given its parameters: a node pool this node is
#      labelled with for the test, a sidecar image the node has): the
#      kubelet updates the volume, the operator reloads (Normal
#      PolicyReloaded Event, dittofs_policy_reload_total{result="accepted"},
#      dittofs_policy_info's origin), the StatefulSet gets what
#      `--script-test` renders with that policy, and the new pod with the
#      sidecar is admitted (restricted) and runs;
#   5. replaced with a broken policy (a syntax error): refused, no child
#      written (audit log; the DittoServer's status follows its pod), the
#      StatefulSet unchanged, a Warning PolicyRejected Event and a log line
#      with file:line, result="rejected", both pods stay Ready; rolled back
#      to the example (so that a replacement pod starts: a syntax error
#      in the mounted policies stops a starting operator): noticed, nothing
#      changes;
#   6. the leader pod deleted: the other replica holds the Lease; a spec
#      change made right after the delete is not lost, one made after the
#      takeover is written from the new leader's pod IP (audit log); the
#      Deployment is back to 2 Ready, still one leader;
#   7. uninstall in the README's order: the DittoServers (this test's
#      namespace's: the README's command takes every namespace; children
#      collected), then `kubectl delete -f deploy/install.yaml`: nothing of
#      the bundle left (namespace, Lease, CRD, ClusterRoles and bindings,
#      the aggregated rules gone from `view`), the PVCs kept.
# Each step's duration is printed as "# time STEP: N ms"
# (spec/bench/install_bench.sh collects them).
#
# The cluster is shared with the other integration tests: the bundle's
# namespace and cluster-scoped objects are this test's while it runs; the
# CRD and deploy/rbac are applied again at the end when they were there
# before (the other tests apply them themselves too). On Kubernetes before
# 1.25 (1.20) the Pod Security checks are skipped with the reason: that
# admission does not exist there.
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
PAUSE=dittofs-local/pause:3.10
: "${KUBECONFIG:?run through spec/integration/with-cluster}"
: "${DITTOFS_AUDIT_LOG:?run through spec/integration/with-cluster}"
: "${DITTOFS_NODE_NAME:?run through spec/integration/with-cluster}"
bundle=$root/deploy/install.yaml
examples=$root/deploy/examples/policies
ns="install-test-$$"
opns=dittofs-system
lease=dittofs-operator-leader
cm=dittofs-operator-policies
mountdir=/etc/dittofs-operator/policies
sa_user="system:serviceaccount:$opns:dittofs-operator"
ds=dittofs-sample
# the resource by its full name (a short name can be shadowed by another
# group's CRD: "ditto" can match a test CRD of another group)
DSR=dittoservers.dittofs.dittofs.com
kubelet_root=/var/lib/dittofs-node/kubelet
tmp=$(mktemp -d)
installed=0

now_ms() { echo $(($(date +%s%N) / 1000000)); }
not() { ! "$@"; }
# timed STEP MS: one step's duration, for the report and install_bench.sh
timed() {
  echo "# time $1: $2 ms"
  printf '%s %s\n' "$1" "$2" >>"$tmp/times"
}

k() { "$KUBECTL" -n "$ns" "$@"; }
kop() { "$KUBECTL" -n "$opns" "$@"; }

# The state the other tests rely on, to put back at the end.
had_crd=0
had_rbac=0
"$KUBECTL" get crd dittoservers.dittofs.dittofs.com >/dev/null 2>&1 && had_crd=1
"$KUBECTL" -n "$opns" get serviceaccount dittofs-operator >/dev/null 2>&1 && had_rbac=1

# bundle_gone: no object of the bundle is left
bundle_gone() {
  [ -z "$("$KUBECTL" get -f "$bundle" --ignore-not-found -o name 2>/dev/null)" ] &&
    ! "$KUBECTL" get namespace "$opns" >/dev/null 2>&1
}
uninstall_bundle() {
  "$KUBECTL" delete -f "$bundle" --ignore-not-found --wait=true --timeout=180s >"$tmp/delete.out" 2>&1
  wait_for 180 bundle_gone
}
restore() {
  if [ "$had_crd" = 1 ] && ! "$KUBECTL" get crd dittoservers.dittofs.dittofs.com >/dev/null 2>&1; then
    echo "# restoring the CRD (it was there before this test)"
    crd_install --force-conflicts >/dev/null 2>&1 # no CEL rules below 1.28
  fi
  if [ "$had_rbac" = 1 ] && ! "$KUBECTL" -n "$opns" get serviceaccount dittofs-operator >/dev/null 2>&1; then
    echo "# restoring deploy/rbac (it was there before this test)"
    "$KUBECTL" apply --server-side --force-conflicts -k "$root/deploy/rbac" >/dev/null 2>&1
  fi
}
cleanup() {
  [ -n "${oldlog:-}" ] && kill "$oldlog" 2>/dev/null
  if [ "${failed:-0}" -gt 0 ] && [ "$installed" = 1 ]; then
    for p in $(kop get pods -l app.kubernetes.io/name=dittofs-operator -o name 2>/dev/null); do
      echo "# --- last lines of $p"
      kop logs "$p" --tail=30 2>&1 | sed 's/^/#   /'
    done
  fi
  # An interrupted run must not leave an operator running cluster-wide
  # under the ServiceAccount the other tests use.
  if [ "$installed" = 1 ]; then
    k delete "$DSR" --all --wait=true --timeout=60s >/dev/null 2>&1
    uninstall_bundle
  fi
  "$KUBECTL" delete namespace "$ns" --wait=false >/dev/null 2>&1 || true
  for l in ${node_labels:-}; do
    "$KUBECTL" label node "$DITTOFS_NODE_NAME" "${l%%=*}-" >/dev/null 2>&1
  done
  restore
  if [ -s "$tmp/times" ]; then
    echo "# step durations:"
    sed 's/^/#   /; s/$/ ms/' "$tmp/times"
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

minor=$("$KUBECTL" version -o json 2>/dev/null | jq -r '.serverVersion.minor' | tr -dc 0-9)
pod_security=0
[ "${minor:-0}" -ge 25 ] && pod_security=1
no_ps="Kubernetes 1.$minor has no Pod Security admission (1.25+)"
echo "# Kubernetes 1.$minor"

# --- 0. the image in the node's containerd ---------------------------------
sock=$("$root/deploy/local/node.sh" env 2>/dev/null | sed -n 's/^export DITTOFS_CONTAINERD_SOCK=//p')
sock=${sock:-/run/dittofs-containerd/containerd.sock}
t0=$(now_ms)
if "$root/deploy/local/images.sh" build >"$tmp/images.log" 2>&1 &&
  "$root/deploy/local/images.sh" import "$sock" >>"$tmp/images.log" 2>&1; then
  ok "images.sh build (cached) and import into $sock"
else
  not_ok "images.sh build (cached) and import into $sock" "$(tail -n 20 "$tmp/images.log")"
fi
timed "image build+import" $(($(now_ms) - t0))
image=$(sed -n 's/^ *image: \(dittofs-local\/dittofs-operator:.*\)$/\1/p' "$bundle" | head -n1)
# grep reads the whole list (no -q): with pipefail, a grep that exits at the
# first match can make ctr die of SIGPIPE and the pipeline fail.
in_containerd() { ctr -a "$sock" -n k8s.io images ls -q | grep -x "docker.io/$1" >/dev/null; }
check "the bundle's image $image is in the node's containerd" in_containerd "$image"

# A Deployment left by an interrupted run would not restart on apply: start
# from no bundle at all.
if "$KUBECTL" -n "$opns" get deployment dittofs-operator >/dev/null 2>&1; then
  echo "# an operator Deployment is already installed: uninstalling it first"
  "$KUBECTL" delete "$DSR" --all --all-namespaces --wait=true --timeout=60s >/dev/null 2>&1
  uninstall_bundle
fi

# The bundle's operator watches every namespace and the uninstall deletes
# the CRD: DittoServers of other tests would be reconciled and deleted. Wait
# (up to 120 s) until none is left (an earlier test's namespace still
# terminating), and say so otherwise.
foreign() { "$KUBECTL" get "$DSR" --all-namespaces -o name 2>/dev/null | grep . >/dev/null; }
if [ "${DITTOFS_INSTALL_TEST_SCOPED:-0}" != 1 ] && ! wait_for 120 not foreign; then
  echo "# DittoServers of others exist, the in-cluster operator will reconcile them:"
  "$KUBECTL" get "$DSR" --all-namespaces --no-headers 2>&1 | sed 's/^/#   /'
fi
# DITTOFS_INSTALL_TEST_SCOPED=1 (development, on a cluster others use at the
# same time): the Deployment also gets DITTOFS_OPERATOR_NAMESPACE=<this
# test's namespace>. Off by default: the bundle is applied as shipped.
apply_file=$bundle
if [ "${DITTOFS_INSTALL_TEST_SCOPED:-0}" = 1 ]; then
  echo "# scoped: the operator watches $ns only (not the bundle as shipped)"
  "$KUBECTL" create --dry-run=client --validate=false -o json -f "$bundle" |
    jq -s --arg ns "$ns" '{apiVersion: "v1", kind: "List", items: .} |
      (.items[] | select(.kind == "Deployment") | .spec.template.spec.containers[0].env) +=
      [{name: "DITTOFS_OPERATOR_NAMESPACE", value: $ns}]' >"$tmp/scoped.json"
  apply_file=$tmp/scoped.json
fi

# --- 1. kubectl apply -f deploy/install.yaml --------------------------------
installed=1
t0=$(now_ms)
# Below 1.28 kubectl refuses the CRD's CEL rules (a field those apiservers
# lack) unless --validate=false; the apiserver then drops them (README).
apply_bundle() {
  local v=()
  [ "${minor:-0}" -ge 28 ] || v=(--validate=false)
  "$KUBECTL" apply "${v[@]}" -f "$apply_file" >"$tmp/apply.out" 2>&1 || { cat "$tmp/apply.out"; return 1; }
}
check "kubectl apply -f deploy/install.yaml" apply_bundle
if [ "$pod_security" = 1 ]; then
  check "no Pod Security warning for the bundle's pods (warn=restricted)" \
    not grep -i PodSecurity "$tmp/apply.out"
else
  skip "no Pod Security warning for the bundle's pods" "$no_ps"
fi
expect_eq "dittofs-system: pod-security.kubernetes.io/enforce=restricted" restricted \
  "$("$KUBECTL" get namespace "$opns" -o jsonpath='{.metadata.labels.pod-security\.kubernetes\.io/enforce}')"

op_pods() {
  kop get pods -l app.kubernetes.io/name=dittofs-operator,app.kubernetes.io/component=controller -o json
}
# ready_pods: names of the operator's pods that are Running and Ready (not
# being deleted)
ready_pods() {
  op_pods | jq -r '.items[] | select(.metadata.deletionTimestamp == null and .status.phase == "Running" and
    ([.status.conditions[]? | select(.type == "Ready" and .status == "True")] | length) == 1) | .metadata.name'
}
two_ready() {
  [ "$(ready_pods | wc -l)" = 2 ] &&
    kop get deployment dittofs-operator -o json |
    jq -e '.status.readyReplicas == 2 and .status.updatedReplicas == 2 and (.status.replicas // 0) == 2' >/dev/null
}
check "the CRD is established" "$KUBECTL" wait --for condition=established --timeout=60s \
  crd/dittoservers.dittofs.dittofs.com
if wait_for 180 two_ready; then
  ok "both operator pods Running and Ready ($(ready_pods | tr '\n' ' '))"
else
  not_ok "both operator pods Running and Ready" "$(op_pods | jq -r '.items[] | "\(.metadata.name) \(.status.phase) \(.status.containerStatuses)"')"
fi
timed "apply -> 2 pods Ready" $(($(now_ms) - t0))

holder() { kop get lease "$lease" -o jsonpath='{.spec.holderIdentity}' 2>/dev/null; }
pod_ip() { kop get pod "$1" -o jsonpath='{.status.podIP}'; }
metrics_of() { curl -sf --max-time 3 "http://$(pod_ip "$1"):8080/metrics"; }
is_master() { metrics_of "$1" | grep '^leader_election_master_status{.*} 1$' >/dev/null; }
# leader: the pod the Lease names (the identity is "<hostname>_<random>",
# the hostname being the pod's name)
leader() { local h; h=$(holder); echo "${h%_*}"; }
# one_leader: the Lease names one of the Ready pods, which alone reports
# leader_election_master_status 1
one_leader() {
  local l p masters=0
  l=$(leader)
  [ -n "$l" ] || return 1
  ready_pods | grep -x "$l" >/dev/null || return 1
  for p in $(ready_pods); do
    if is_master "$p"; then
      masters=$((masters + 1))
      [ "$p" = "$l" ] || return 1
    fi
  done
  [ "$masters" = 1 ]
}
if wait_for 60 one_leader; then
  ok "exactly one leader: $(holder) (the other replica's leader_election_master_status is 0)"
else
  not_ok "exactly one leader" "lease holder: $(holder); $(for p in $(ready_pods); do
    echo "$p: $(metrics_of "$p" | grep '^leader_election_master_status')"; done)"
fi
timed "apply -> one leader" $(($(now_ms) - t0))
lead=$(leader)
# logged POD MSG: POD's log has a line with that msg (a prefix of it)
logged() { kop logs "$1" | jq -r --arg m "$2" 'select(.msg | startswith($m)) | .msg' 2>/dev/null | grep . >/dev/null; }
check "the leader's log says it became leader (in-cluster credentials)" logged "$lead" "became leader"

# --- 2. Pod Security --------------------------------------------------------
"$KUBECTL" create namespace "$ns" >/dev/null
"$KUBECTL" label namespace "$ns" pod-security.kubernetes.io/enforce=restricted \
  pod-security.kubernetes.io/warn=restricted >/dev/null
cat >"$tmp/privileged.yaml" <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: privileged
spec:
  containers:
  - name: pause
    image: $PAUSE
    imagePullPolicy: IfNotPresent
    securityContext:
      privileged: true
EOF
# refused NS: a privileged pod is refused there by Pod Security admission
refused() {
  local out
  if out=$("$KUBECTL" -n "$1" create -f "$tmp/privileged.yaml" 2>&1); then
    "$KUBECTL" -n "$1" delete pod privileged --wait=false >/dev/null 2>&1
    echo "admitted: $out; the namespace's labels now: $("$KUBECTL" get namespace "$1" -o jsonpath='{.metadata.labels}')"
    return 1
  fi
  grep -q 'violates PodSecurity "restricted:latest"' <<<"$out" || { echo "$out"; return 1; }
}
if [ "$pod_security" = 1 ]; then
  check "negative control: a privileged pod is refused in $opns (enforce=restricted)" refused "$opns"
  check "negative control: a privileged pod is refused in $ns (enforce=restricted)" refused "$ns"
else
  skip "negative control: a privileged pod is refused in $opns" "$no_ps"
  skip "negative control: a privileged pod is refused in $ns" "$no_ps"
fi

# --- 3. the README sample ----------------------------------------------------
# As it is, but the image (the stand-in the node has) and no resource
# requests (the node is small).
"$KUBECTL" create --dry-run=client -o json -f "$root/deploy/samples/dittoserver.yaml" |
  jq --arg img "$STANDIN" '.spec.image = $img | del(.spec.resources) | del(.metadata.namespace)' >"$tmp/sample.json"
mark=$(audit_mark)
t0=$(now_ms)
check "the README sample is applied in $ns" k apply -f "$tmp/sample.json"
phase() { k get "$DSR" "$ds" -o jsonpath='{.status.phase}' 2>/dev/null; }
running() { [ "$(phase)" = Running ]; }
if wait_for 180 running; then
  ok "the sample becomes Running (its pod on the node, reconciled by the in-cluster operator)"
else
  not_ok "the sample becomes Running" "phase: $(phase); $(k get pods -o wide 2>&1); $(k get events 2>&1 | tail -n 10)"
fi
timed "sample applied -> Running" $(($(now_ms) - t0))
expect_eq "its pod is admitted and runs in the enforce=restricted namespace" Running \
  "$(k get pod "$ds-0" -o jsonpath='{.status.phase}')"
# the pod's create request, with Pod Security's audit annotations
pod_creates() {
  audit_since "$mark" | jq -c "select(.verb == \"create\" and .objectRef.resource == \"pods\" and
    .objectRef.namespace == \"$ns\" and (.objectRef.subresource // \"\") == \"\" and
    (.responseStatus.code // 0) == 201)"
}
if [ "$pod_security" = 1 ]; then
  expect_eq "the audit log: Pod Security evaluated the pod at restricted:latest" "restricted:latest" \
    "$(pod_creates | jq -r '.annotations["pod-security.kubernetes.io/enforce-policy"] // empty' | sort -u)"
else
  skip "the audit log: Pod Security evaluated the pod at restricted" "$no_ps"
fi

ip=$(k get service "$ds" -o jsonpath='{.spec.clusterIP}')
nfs_port=$(k get service "$ds" -o json | jq -r '.spec.ports[] | select(.name == "nfs") | .port')
tcp_open() { timeout 3 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }
t0=$(now_ms)
check "the Service's NFS port ($ip:$nfs_port) accepts a TCP connection" wait_for 30 tcp_open "$ip" "$nfs_port"
msg="install-test $$ at $(date -u +%FT%TZ)"
put_file() { curl -sf --max-time 5 -X PUT --data-binary "$msg" "http://$ip:9090/files/install.txt"; }
check "a file written through the stand-in's file API (Service port 9090)" wait_for 30 put_file
expect_eq "... reads back" "$msg" "$(curl -sf --max-time 5 "http://$ip:9090/files/install.txt")"
timed "Running -> serving (TCP + file read back)" $(($(now_ms) - t0))

# --- 4. the policies ConfigMap replaced with an example policy --------------
leader_metrics() { metrics_of "$(leader)"; }
reloads() { leader_metrics | sed -n "s/^dittofs_policy_reload_total{result=\"$1\"} //p"; }
reloads_above() { local v; v=$(reloads "$1"); [ -n "$v" ] && [ "$v" -gt "$2" ]; }
cm_uid() { kop get configmap "$cm" -o jsonpath='{.metadata.uid}'; }
events() {
  kop get events --field-selector \
    "involvedObject.kind=ConfigMap,involvedObject.name=$cm,involvedObject.uid=$(cm_uid),type=$1,reason=$2" \
    -o jsonpath='{range .items[*]}{.message}{"\n"}{end}'
}
has_event() { events "$1" "$2" | grep -F -- "$3" >/dev/null; }
# operator_writes MARK: the operator's mutating requests since MARK, but
# Events and its Lease renewals; from its pods' addresses (other tests on
# the cluster may use the same ServiceAccount from the host)
operator_writes() {
  local ips
  ips=$(op_pods | jq -c '[.items[].status.podIP | select(. != null)]')
  audit_since "$1" |
    jq -c --arg u "$sa_user" --argjson ips "$ips" 'select(.user.username == $u and
      (.verb | test("create|update|patch|delete")) and
      .objectRef.resource != "events" and .objectRef.resource != "leases" and
      (.sourceIPs[0] as $ip | $ips | index($ip)))'
}
# child_writes MARK: the same but the DittoServers' status (which follows
# the pods)
child_writes() { operator_writes "$1" | jq -c 'select(.objectRef.subresource != "status")'; }
# swap_ms POD: when the kubelet swapped the ..data link of POD's policies
# volume (the symlink's mtime, ms), empty off this node
swap_ms() {
  local uid d
  uid=$(kop get pod "$1" -o jsonpath='{.metadata.uid}')
  d=$kubelet_root/pods/$uid/volumes/kubernetes.io~configmap/policies
  [ -L "$d/..data" ] || return 0
  stat -c '%.3Y' "$d/..data" | tr -d .
}
# log_ms POD MSG: the time of POD's last log line with that msg (ms)
log_ms() {
  local ts
  ts=$(kop logs "$1" | jq -r --arg m "$2" 'select(.msg | startswith($m)) | .ts' 2>/dev/null | tail -n1)
  [ -n "$ts" ] && date -d "$ts" +%s%3N
}
# replace_cm FILE: the policies ConfigMap becomes FILE's (its name and
# namespace forced to the bundle's)
replace_cm() {
  "$KUBECTL" create --dry-run=client -o json -f "$1" |
    jq --arg n "$cm" --arg ns "$opns" '.metadata.name = $n | .metadata.namespace = $ns' >"$tmp/cm.json" &&
    "$KUBECTL" replace -f "$tmp/cm.json"
}
sts_json() { k get statefulset "$ds" -o json; }
# quiet: the operator wrote nothing (Events and the Lease aside) for 3 s
quiet() {
  local m
  m=$(audit_mark)
  sleep 3
  [ -z "$(operator_writes "$m")" ]
}

# The example that adds tolerations and a sidecar, and its ConfigMap.
exdir=
for f in "$examples"/*/*.lua; do
  [ -f "$f" ] || continue
  if grep -q toleration "$f"; then exdir=$(dirname "$f"); break; fi
done
excm=
if [ -n "$exdir" ]; then
  for f in "$exdir"/*.yaml; do
    [ -f "$f" ] || continue
    grep -q '^kind: ConfigMap' "$f" && excm=$f && break
  done
fi
if [ -n "$excm" ]; then
  ok "the example policy with tolerations: ${excm#"$root"/}"
else
  not_ok "an example policy with tolerations and its ConfigMap in deploy/examples/policies/*/" \
    "$(ls -R "$examples" 2>&1)"
fi

# What the example renders for the sample, offline: its policy files as the
# operator reads them from the mounted ConfigMap.
if [ -n "$excm" ]; then
  mkdir -p "$tmp/expol"
  "$KUBECTL" create --dry-run=client -o json -f "$excm" |
    jq -r '.data | to_entries[] | @base64' | while read -r e; do
      name=$(jq -r '.key' <<<"$(base64 -d <<<"$e")")
      jq -r '.value' <<<"$(base64 -d <<<"$e")" >"$tmp/expol/$name"
    done
  # Its parameters (spec.policy, its header lists them): the node pool this
  # node is labelled with for the test, and a sidecar image the node has
  # (nothing can be pulled here), so that the new pod can run.
  pool="install-test-$$"
  if grep -q nodePool "$exdir/dittoserver.lua" && grep -q shipperImage "$exdir/dittoserver.lua"; then
    k patch "$DSR" "$ds" --type merge \
      -p "{\"spec\":{\"policy\":{\"nodePool\":\"$pool\",\"shipperImage\":\"$PAUSE\"}}}" >/dev/null
  fi
  k get "$DSR" "$ds" -o json | jq 'del(.status)' >"$tmp/live.json"
  if "$BIN" --script-test "$tmp/live.json" --policies "$tmp/expol" --output json >"$tmp/want.json" 2>"$tmp/want.err"; then
    ok "--script-test renders the sample with the example policy"
  else
    not_ok "--script-test renders the sample with the example policy" "$(cat "$tmp/want.err")"
  fi
  want_sts() { jq '.objects[] | select(.kind == "StatefulSet") | .spec.template.spec' "$tmp/want.json"; }
  want_tol=$(want_sts | jq -c '.tolerations // []')
  want_containers=$(want_sts | jq -c '[.containers[].name]')
  want_selector=$(want_sts | jq -c '.nodeSelector // {}')
  # the node gets the labels the nodeSelector asks for (removed at the end)
  node_labels=$(jq -r 'to_entries[] | "\(.key)=\(.value)"' <<<"$want_selector")
  for l in $node_labels; do
    "$KUBECTL" label node "$DITTOFS_NODE_NAME" --overwrite "$l" >/dev/null
  done
  check "the example policy renders tolerations and a sidecar ($want_tol, $want_containers)" \
    test "$want_tol" != "[]" -a "$(jq length <<<"$want_containers")" -gt 1
  sts_has_example() {
    sts_json | jq -e --argjson t "$want_tol" --argjson c "$want_containers" \
      '(.spec.template.spec.tolerations // []) == $t and [.spec.template.spec.containers[].name] == $c' >/dev/null
  }
  # pod_has_example: the sample's pod runs the sidecar, every container ready
  pod_has_example() {
    k get pod "$ds-0" -o json | jq -e --argjson c "$want_containers" \
      '.metadata.deletionTimestamp == null and .status.phase == "Running" and
       [.spec.containers[].name] == $c and ([.status.containerStatuses[] | select(.ready | not)] | length) == 0' >/dev/null
  }

  acc0=$(reloads accepted)
  gen0=$(sts_json | jq '.metadata.generation')
  t0=$(now_ms)
  check "the policies ConfigMap replaced with the example's" replace_cm "$excm"
  if wait_for 150 reloads_above accepted "${acc0:-0}"; then
    ok "the kubelet updates the volume and the operator reloads (result=\"accepted\" $acc0 -> $(reloads accepted))"
  else
    not_ok "the operator reloads the example policy" "$(kop logs "$(leader)" --tail=10 2>&1)"
  fi
  t1=$(now_ms)
  timed "ConfigMap replaced -> reload accepted (kubelet sync + reload)" $((t1 - t0))
  lead=$(leader)
  swapped=$(swap_ms "$lead")
  reloaded=$(log_ms "$lead" "policies reloaded")
  if [ -n "$swapped" ] && [ -n "$reloaded" ]; then
    timed "..data swapped by the kubelet -> reload logged" $((reloaded - swapped))
    timed "ConfigMap replaced -> ..data swapped by the kubelet" $((swapped - t0))
  fi
  check "the StatefulSet gets the example's tolerations and sidecar" wait_for 60 sts_has_example
  timed "reload -> StatefulSet updated" $(($(now_ms) - t1))
  expect_eq "... and its nodeSelector" "$want_selector" "$(sts_json | jq -c '.spec.template.spec.nodeSelector // {}')"
  if wait_for 180 pod_has_example; then
    ok "the new pod, with the sidecar, is admitted in the restricted namespace and runs ($want_containers)"
  else
    not_ok "the new pod with the sidecar runs" "$(k get pod "$ds-0" -o wide 2>&1; k get events 2>&1 | tail -n 8)"
  fi
  check "the sample is Running again" wait_for 60 running
  timed "reload -> the sample's new pod Running with the sidecar" $(($(now_ms) - t1))
  check "a Normal PolicyReloaded Event on the policies ConfigMap" \
    wait_for 20 has_event Normal PolicyReloaded "from $mountdir replace"
  expect_eq "dittofs_policy_info: origin the mounted ConfigMap" "$mountdir" \
    "$(metrics_of "$lead" | sed -n 's/^dittofs_policy_info{hash="[0-9a-f]*",origin="\([^"]*\)"} 1$/\1/p')"
  gen1=$(sts_json | jq '.metadata.generation')
  check "the StatefulSet's generation moved ($gen0 -> $gen1)" test "$gen1" -gt "$gen0"
fi

# --- 5. a broken policy: nothing changes -------------------------------------
cat >"$tmp/broken.yaml" <<'EOF'
apiVersion: v1
kind: ConfigMap
metadata:
  name: dittofs-operator-policies
  namespace: dittofs-system
data:
  dittoserver.lua: |
    local policy = require("dittoserver.default").new()
    return = policy
EOF
# (its status follows the rollout the example started: not compared)
sts_spec() { sts_json | jq -S -c '{generation: .metadata.generation, spec: .spec}'; }
wait_for 60 quiet # the reload's writes are over
stable=$(sts_spec)
rej0=$(reloads rejected)
mark=$(audit_mark)
t0=$(now_ms)
check "the policies ConfigMap replaced with a broken policy (a syntax error)" replace_cm "$tmp/broken.yaml"
if wait_for 150 reloads_above rejected "${rej0:-0}"; then
  ok "refused: result=\"rejected\" $rej0 -> $(reloads rejected)"
else
  not_ok "the broken policy is refused" "$(kop logs "$(leader)" --tail=10 2>&1)"
fi
timed "broken ConfigMap replaced -> refused" $(($(now_ms) - t0))
want="$mountdir/dittoserver.lua:2: unexpected symbol near '='"
check "a Warning PolicyRejected Event with file:line" \
  wait_for 20 has_event Warning PolicyRejected "$want"
refusal_logged() {
  kop logs "$(leader)" | jq -r 'select(.msg | startswith("policies refused")) | .error' | grep -F -- "$1" >/dev/null
}
check "the leader's log line says why" refusal_logged "$want"
sleep 2 # what a wrongly accepted set would write, by now
echo "# status writes meanwhile (they follow the pod): $(operator_writes "$mark" | grep -c .)"
expect_eq "no child written by the operator (audit log)" 0 "$(child_writes "$mark" | grep -c .)"
expect_eq "the StatefulSet is unchanged (generation and spec)" "$stable" "$(sts_spec)"
check "both operator pods stay Ready" two_ready

# Rolled back to the example: the set equals the active one, nothing
# happens (and a replacement pod started on the broken file would wait,
# alive but not Ready, for a set that loads).
if [ -n "$excm" ]; then
  lead=$(leader)
  mark=$(audit_mark)
  t0=$(now_ms)
  before=$(kop logs "$lead" | grep -c '"msg":"policy directory changed, policies did not"')
  replace_cm "$excm" >/dev/null
  rolled_back() {
    [ "$(kop logs "$lead" | grep -c '"msg":"policy directory changed, policies did not"')" -gt "$before" ]
  }
  check "rolled back to the example: noticed, the active set unchanged" wait_for 150 rolled_back
  timed "rollback ConfigMap replaced -> noticed" $(($(now_ms) - t0))
  expect_eq "... no child written" 0 "$(child_writes "$mark" | grep -c .)"
fi

# --- 6. the leader pod deleted -----------------------------------------------
# The leader releases the Lease on SIGTERM; the standby (polling every 2 s)
# or the Deployment's replacement pod, whichever asks first, takes it. A
# spec change made right after the delete must not be lost (the old leader
# may still reconcile it while it shuts down, or the new one after the
# takeover); one made after the takeover must be written from the new
# leader's pod.
old=$(leader)
standby=$(ready_pods | grep -vx "$old" | head -n1)
# annotate VALUE: a spec change (an annotation on the DittoServer's Service)
annotate() {
  k patch "$DSR" "$ds" --type merge \
    -p "{\"spec\":{\"service\":{\"annotations\":{\"install-test.dittofs.io/stamp\":\"$1\"}}}}" >/dev/null
}
stamped() {
  [ "$(k get service "$ds" -o jsonpath='{.metadata.annotations.install-test\.dittofs\.io/stamp}')" = "$1" ]
}
kop logs -f "$old" >"$tmp/old-leader.log" 2>&1 &
oldlog=$!
sleep 1 # kubectl logs -f attached
t0=$(now_ms)
kop delete pod "$old" --wait=false >/dev/null
annotate "during-$t0"
new_leader() { local l; l=$(leader); [ -n "$l" ] && [ "$l" != "$old" ]; }
if wait_for 60 new_leader; then
  new=$(leader)
  ok "another pod holds the Lease: $new ($([ "$new" = "$standby" ] && echo "the standby" || echo "the Deployment's replacement pod"))"
else
  new=
  not_ok "another pod holds the Lease" "holder: $(holder)"
fi
timed "leader deleted -> another pod holds the Lease (seen)" $(($(now_ms) - t0))
acquired=$(kop get lease "$lease" -o jsonpath='{.spec.acquireTime}')
[ -n "$acquired" ] && timed "leader deleted -> Lease acquireTime" $(($(date -d "$acquired" +%s%3N) - t0))
wait_for 30 not kill -0 "$oldlog"
check "the old leader released the Lease on SIGTERM (its log)" \
  grep -q '"msg":"released the lease"' "$tmp/old-leader.log"
check "the spec change made right after the delete is reconciled (Service annotated)" \
  wait_for 60 stamped "during-$t0"
timed "leader deleted -> that change reconciled" $(($(now_ms) - t0))
mark=$(audit_mark)
t1=$(now_ms)
annotate "after-$t1"
check "a spec change after the takeover is reconciled" wait_for 60 stamped "after-$t1"
timed "spec change -> reconciled by the new leader" $(($(now_ms) - t1))
# patched_from IP: the operator's patches of the Service since $mark all
# came from IP (the pod's address as the apiserver saw it), and one did
patched_from() {
  audit_since "$mark" | jq -e -s --arg u "$sa_user" --arg ns "$ns" --arg n "$ds" --arg ip "$1" \
    'map(select(.user.username == $u and .verb == "patch" and .objectRef.resource == "services" and
      .objectRef.namespace == $ns and .objectRef.name == $n))
     | length > 0 and all(.sourceIPs[0] == $ip)'
}
if [ -n "$new" ]; then
  new_ip=$(pod_ip "$new")
  check "... by the new leader (the Service patch came from its pod IP $new_ip)" patched_from "$new_ip"
  check "$new reports leader_election_master_status 1" wait_for 10 is_master "$new"
fi
if wait_for 120 two_ready; then
  ok "the Deployment is back to 2 Ready pods"
else
  not_ok "the Deployment is back to 2 Ready pods" "$(op_pods | jq -r '.items[] | "\(.metadata.name) \(.status.phase)"')"
fi
timed "leader deleted -> 2 pods Ready again" $(($(now_ms) - t0))
expect_eq "still the same leader" "$new" "$(leader)"
check "... and one master_status 1" one_leader

# --- 7. uninstall: the DittoServers, then the bundle -------------------------
# Deleting the CRD deletes every DittoServer: wait a while for those of
# others (a test sharing the cluster) to go first.
others_ds() { "$KUBECTL" get "$DSR" --all-namespaces --no-headers 2>/dev/null | awk -v ns="$ns" '$1 != ns' | grep . >/dev/null; }
if ! wait_for "$([ "${DITTOFS_INSTALL_TEST_SCOPED:-0}" = 1 ] && echo 600 || echo 120)" not others_ds; then
  echo "# DittoServers of others are still there: deleting the CRD removes them"
fi
t0=$(now_ms)
check "1. kubectl delete dittoservers --all (and wait)" \
  k delete "$DSR" --all --wait=true --timeout=120s
children_gone() {
  [ -z "$(k get statefulsets,services,configmaps,pods -l "app.kubernetes.io/instance=$ds" -o name 2>/dev/null)" ] &&
    [ -z "$(k get statefulsets,services,configmaps -l "dittofs.dittofs.com/server=$ds" -o name 2>/dev/null)" ]
}
check "its ConfigMap, Services, StatefulSet and pod are collected" wait_for 120 children_gone
timed "uninstall: DittoServers deleted and children collected" $(($(now_ms) - t0))
# bundle_objects: the bundle's objects in the cluster, as a JSON array
bundle_objects() {
  "$KUBECTL" get -f "$bundle" --ignore-not-found -o json 2>/dev/null |
    jq -s '[.[] | if .kind == "List" then .items[] else . end]'
}
uids=$(bundle_objects | jq -c '[.[].metadata.uid]')
ns_uid=$("$KUBECTL" get namespace "$opns" -o jsonpath='{.metadata.uid}')
t0=$(now_ms)
check "2. kubectl delete -f deploy/install.yaml" \
  "$KUBECTL" delete -f "$bundle" --wait=true --timeout=180s
# (by uid: another test sharing the cluster may create the namespace, the
# CRD or deploy/rbac again meanwhile; those are not left behind)
ns_gone() { [ "$("$KUBECTL" get namespace "$opns" -o jsonpath='{.metadata.uid}' 2>/dev/null)" != "$ns_uid" ]; }
check "the namespace $opns is gone (with the operator's pods and Lease)" wait_for 180 ns_gone
timed "uninstall: bundle deleted, namespace gone" $(($(now_ms) - t0))
installed=0
left=$(bundle_objects | jq -r --argjson u "$uids" '.[] | select(.metadata.uid as $x | $u | index($x)) |
  "\(.kind)/\(.metadata.name)"')
expect_eq "none of the $(jq length <<<"$uids") objects of deploy/install.yaml is left (Namespace, CRD, ServiceAccount, ClusterRoles, ClusterRoleBindings, Role, RoleBinding, ConfigMap, Deployment, Service)" "" "$left"
view_has_ds() {
  "$KUBECTL" get clusterrole view -o json | jq -e '[.rules[]? | select(.resources | index("dittoservers"))] | length > 0' >/dev/null
}
view_lacks_ds() { ! view_has_ds; }
check "the aggregated dittoservers rules leave the view ClusterRole" wait_for 30 view_lacks_ds
expect_eq "left behind: the sample's PVCs (metadata, content), Bound" \
  "content-$ds-0 Bound metadata-$ds-0 Bound" \
  "$(k get pvc -o json | jq -r '[.items[] | "\(.metadata.name) \(.status.phase)"] | sort | join(" ")')"

tap_summary
