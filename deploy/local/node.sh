#!/usr/bin/env bash
# deploy/local/node.sh: a real node for the local control plane (cluster.sh),
# so pods really run on this machine.
#
# containerd (Debian's 1.6, its own root/state/socket, never Docker's), CNI
# (Debian's plugins: a bridge cni0 with host-local 10.244.0.0/24), the kubelet,
# kube-scheduler and kube-proxy (iptables mode) of the control plane's version
# (cluster.sh builds them into $DITTOFS_KUBE_BIN), the images of images.sh, and
# rancher's local-path-provisioner (built from its Go module, run as a host
# process) behind a default StorageClass `standard`.
#
#   node.sh install           install packages, build the provisioner (cached)
#   node.sh start             start everything; wait until the node is Ready,
#                             the StorageClass exists and a test pod ran
#   node.sh stop [--purge]    stop in reverse, kill the pods' containers,
#                             unmount, delete cni0 and the KUBE-/CNI- chains
#                             (--purge: also remove node state, images, volumes)
#   node.sh status
#   node.sh env               print the node's env file
#
# Needs a running control plane: eval "$(deploy/local/cluster.sh start)" (or
# DITTOFS_CLUSTER_DIR pointing at one). The node is one per machine (cni0,
# iptables, ports 10250/10248/10249/10256).
#
# Knobs (environment):
#   DITTOFS_CACHE         build cache (default ~/.cache/dittofs-operator)
#   DITTOFS_CLUSTER_DIR   the control plane's state dir (default /tmp/dittofs-cluster);
#                         the node's logs and pid files go there too
#   DITTOFS_NODE_TIMEOUT  seconds to wait for each readiness step (default 90)
#   DITTOFS_GO            Go for the provisioner build (default /usr/local/go/bin/go)
#
# Progress goes to stderr; `start` and `env` print the node's env file on stdout.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${DITTOFS_CACHE:-${HOME:-/root}/.cache/dittofs-operator}
DIR=${DITTOFS_CLUSTER_DIR:-/tmp/dittofs-cluster}
TIMEOUT=${DITTOFS_NODE_TIMEOUT:-90}
GO=${DITTOFS_GO:-/usr/local/go/bin/go}

# Machine-wide node state, outside $DIR: cluster.sh wipes $DIR on a fresh
# start, and an rm -rf must never walk into the kubelet's mounts.
NODE_STATE=/var/lib/dittofs-node
KUBELET_ROOT=$NODE_STATE/kubelet
CNI_CONF_DIR=$NODE_STATE/cni/net.d
CNI_IPAM_DIR=$NODE_STATE/cni/networks
STORAGE_DIR=$NODE_STATE/local-path
CTRD_ROOT=/var/lib/dittofs-containerd
CTRD_STATE=/run/dittofs-containerd
CTRD_SOCK=$CTRD_STATE/containerd.sock
CTRD_CONFIG=$NODE_STATE/containerd.toml
POD_CIDR=10.244.0.0/24
CLUSTER_CIDR=10.244.0.0/16
KUBELET_PORT=10250
KUBELET_HEALTHZ_PORT=10248

# The images images.sh builds; the node needs these two itself.
PAUSE_IMAGE=dittofs-local/pause:3.10
HELPER_IMAGE=dittofs-local/debian:bookworm

# The newest release `go list -m -versions` showed when this was written.
LPP_VERSION=v0.0.30
LPP_BIN=$CACHE/local-path-provisioner-$LPP_VERSION/local-path-provisioner

APT_PKGS=(containerd runc containernetworking-plugins iptables conntrack ipset iproute2 openssl curl)

# Components in start order; stop goes in reverse.
COMPONENTS=(containerd kubelet kube-scheduler kube-proxy local-path-provisioner)

log() { printf '[node.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------------------
# install

pkg_installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

apt_get() {
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 -q "$@" </dev/null
}

install_packages() {
  local missing=() p
  for p in "${APT_PKGS[@]}"; do pkg_installed "$p" || missing+=("$p"); done
  ((${#missing[@]})) || return 0
  [[ $(id -u) == 0 ]] || die "must run as root to install packages: ${missing[*]}"
  for p in "${missing[@]}"; do
    if ! apt-cache policy "$p" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
      log "apt-get update"
      apt_get update >/dev/null || die "apt-get update failed"
      break
    fi
  done
  log "apt-get install ${missing[*]}"
  apt_get install -y --no-install-recommends "${missing[@]}" >/dev/null ||
    die "apt-get install ${missing[*]} failed"
}

# local-path-provisioner from its Go module (the module zip has no vendor/:
# the proxy serves the dependencies). 2-6 min on 2 cores, then cached.
build_provisioner() {
  [[ -x $LPP_BIN ]] && return 0
  [[ -x $GO ]] || die "$GO missing: the provisioner build needs Go (DITTOFS_GO)"
  local out=${LPP_BIN%/*}
  mkdir -p "$out"
  log "building local-path-provisioner $LPP_VERSION from the Go module proxy (log: $out/build.log)"
  if ! (cd "$out" && GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod GOBIN=$out \
      nice "$GO" install -trimpath -ldflags '-s -w' \
      "github.com/rancher/local-path-provisioner@$LPP_VERSION") >"$out/build.log" 2>&1; then
    tail -n 30 "$out/build.log" >&2
    die "local-path-provisioner build failed"
  fi
}

cmd_install() {
  mkdir -p "$CACHE"
  exec 9>"$CACHE/.node-install.lock"
  flock 9
  install_packages
  build_provisioner
  exec 9>&-
}

installed() {
  local p
  for p in "${APT_PKGS[@]}"; do pkg_installed "$p" || return 1; done
  [[ -x $LPP_BIN ]]
}

# ---------------------------------------------------------------------------
# the control plane's env

load_cluster_env() {
  [[ -f $DIR/env ]] || die "no control plane in $DIR: run deploy/local/cluster.sh start first"
  # shellcheck disable=SC1091
  source "$DIR/env"
  KUBE_BIN=${DITTOFS_KUBE_BIN:?}
  NODE_NAME=${DITTOFS_NODE_NAME:-dittofs-node}
  KUBE_VERSION=${DITTOFS_KUBE_VERSION:-$("$KUBE_BIN/kubelet" --version | sed 's/^Kubernetes v//')}
  KUBE_MINOR=$(cut -d. -f2 <<<"$KUBE_VERSION")
  KUBECTL=${DITTOFS_KUBECTL:-}
  [[ -n $KUBECTL ]] || KUBECTL=$(command -v kubectl) || die "no kubectl"
  local b
  for b in kubelet kube-scheduler kube-proxy; do
    [[ -x $KUBE_BIN/$b ]] || die "$KUBE_BIN/$b missing: deploy/local/cluster.sh install builds the node's binaries"
  done
  for b in kubelet kube-scheduler kube-proxy; do
    [[ -f $DIR/$b.kubeconfig ]] || die "$DIR/$b.kubeconfig missing: the control plane predates node support (cluster.sh stop; cluster.sh start)"
  done
}

kc() { "$KUBECTL" --kubeconfig="$DIR/kubeconfig" "$@"; }

# ---------------------------------------------------------------------------
# processes (as in cluster.sh: pid files, logs and command lines in $DIR)

pidfile() { printf '%s/%s.pid\n' "$DIR" "$1"; }

# The pid of component NAME if it is alive and really ours (its executable
# is that binary, so a recycled pid is never touched).
alive_pid() {
  local name=$1 f pid exe
  f=$(pidfile "$name")
  [[ -f $f ]] || return 1
  pid=$(<"$f")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
  exe=${exe% (deleted)}
  [[ ${exe##*/} == "$name" ]] || return 1
  printf '%s\n' "$pid"
}

# Every daemon carries DITTOFS_NODE_DAEMON=<name> in its environment (and
# containerd passes it on to its shims), so a daemon whose pid file is gone
# (cluster.sh wiped $DIR under a running node) is still found, and only ours.
stray_pids() {
  local f pid
  # shellcheck disable=SC2013 # /proc/PID/environ: no spaces
  for f in $(grep -lzx "DITTOFS_NODE_DAEMON=${1:-.*}" /proc/[0-9]*/environ 2>/dev/null); do
    pid=${f#/proc/}; pid=${pid%/environ}
    [[ $pid == "$$" || $pid == "$BASHPID" ]] || echo "$pid"
  done
  return 0
}

launch() {
  local name=$1; shift
  printf '%s\n' "$@" >"$DIR/$name.cmd"
  printf '\n===== %s start %s\n' "$(date -u +%FT%TZ)" "$name" >>"$DIR/$name.log"
  # setsid: own session, so the daemons outlive the calling shell's job control.
  # Lock fds 8 and 9 are closed so the daemons never hold the script's locks.
  DITTOFS_NODE_DAEMON=$name setsid "$@" >>"$DIR/$name.log" 2>&1 </dev/null 8>&- 9>&- &
  echo "$!" >"$(pidfile "$name")"
}

# Fail loudly, with the last log lines, when a daemon died.
check_alive() {
  local c
  for c in "$@"; do
    alive_pid "$c" >/dev/null && continue
    log "$c died; last lines of $DIR/$c.log:"
    tail -n 40 "$DIR/$c.log" >&2
    exit 1
  done
}

# A process is gone once it is a zombie: PID 1 on these VMs reaps only every
# second or two, and /proc/PID/exe is unreadable from the moment it exits.
running() { readlink "/proc/$1/exe" >/dev/null 2>&1; }

# stop_pid NAME PID [GRACE_SECONDS]: TERM, wait, then KILL.
stop_pid() {
  local name=$1 pid=$2 grace=${3:-10} i
  log "stopping $name (pid $pid)"
  kill -s TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < grace * 10; i++)); do
    running "$pid" || return 0
    sleep 0.1
  done
  log "$name still alive after $grace s; SIGKILL"
  kill -s KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    running "$pid" || return 0
    sleep 0.1
  done
}

stop_component() {
  local name=$1 pid
  if pid=$(alive_pid "$name"); then stop_pid "$name" "$pid" "${2:-10}"; fi
  for pid in $(stray_pids "$name"); do
    # containerd's shims carry containerd's marker: they go with the pods.
    [[ $name == containerd && $(readlink "/proc/$pid/exe" 2>/dev/null) == *shim* ]] && continue
    stop_pid "$name (no pid file)" "$pid" "${2:-10}"
  done
  rm -f "$(pidfile "$name")"
}

# ---------------------------------------------------------------------------
# configuration

host_ip() {
  # The address of the default route's interface: pods reach the node there
  # (127.0.0.1 would be each pod's own loopback).
  local ip
  ip=$(ip -4 route get 1.1.1.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p' | head -n1)
  [[ -n $ip ]] || ip=$(ip -4 -o addr show scope global 2>/dev/null | awk '{ sub(/\/.*/, "", $4); print $4; exit }')
  printf '%s\n' "${ip:-127.0.0.1}"
}

set_sysctls() {
  sysctl -qw net.ipv4.ip_forward=1
  # Present when br_netfilter is loaded (no modules can be loaded here): pod
  # to pod traffic over cni0 then passes iptables, which Services need.
  local k
  for k in net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables; do
    [[ -e /proc/sys/${k//.//} ]] && sysctl -qw "$k=1"
  done
  return 0
}

write_containerd_config() {
  mkdir -p "$NODE_STATE" "$CNI_CONF_DIR" "$CTRD_ROOT" "$CTRD_STATE"
  cat >"$CTRD_CONFIG.tmp" <<EOF
# Written by deploy/local/node.sh. Own root, state and socket: the Docker
# Engine on these machines runs a containerd of its own.
version = 2
root = "$CTRD_ROOT"
state = "$CTRD_STATE"
oom_score = 0

[grpc]
  address = "$CTRD_SOCK"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "$CTRD_ROOT/opt"

[plugins."io.containerd.grpc.v1.cri"]
  # Built locally (images.sh); there is no registry to pull from.
  sandbox_image = "$PAUSE_IMAGE"
  # These VMs drop CAP_SYS_RESOURCE from every bounding set, so no process can
  # lower an oom_score_adj. The kubelet asks for -997/-998 for some pods; runc
  # then fails every sandbox with "can't get final child's PID from pipe: EOF"
  # (nsexec: failed to update /proc/self/oom_score_adj: Permission denied).
  # This clamps the requested score to containerd's own (0).
  restrict_oom_score_adj = true
  # Pod network namespaces under $CTRD_STATE, not /run/netns: stop unmounts them.
  netns_mounts_under_state_dir = true
  # containerd 2.x defaults: ports below 1024 and ping for non-root pods
  # (net.ipv4.ip_unprivileged_port_start=0 in each pod's network namespace).
  enable_unprivileged_ports = true
  enable_unprivileged_icmp = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        # The kubelet's cgroupDriver is cgroupfs: no systemd here.
        SystemdCgroup = false

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$CNI_CONF_DIR"
    max_conf_num = 1
EOF
  mv -f "$CTRD_CONFIG.tmp" "$CTRD_CONFIG"

  # containerd's CRI plugin brings up each pod's lo itself (the loopback
  # plugin from bin_dir), so the chain below has no loopback entry.
  # firewall: the Docker Engine sets the FORWARD policy to DROP; this plugin
  # accepts traffic from and (established) to each pod IP.
  cat >"$CNI_CONF_DIR/10-dittofs.conflist.tmp" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "dittofs",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": "$POD_CIDR" }]],
        "routes": [{ "dst": "0.0.0.0/0" }],
        "dataDir": "$CNI_IPAM_DIR"
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } },
    { "type": "firewall", "backend": "iptables" }
  ]
}
EOF
  mv -f "$CNI_CONF_DIR/10-dittofs.conflist.tmp" "$CNI_CONF_DIR/10-dittofs.conflist"
}

write_kubelet_config() {
  local f=$NODE_STATE/kubelet-config.yaml
  {
    cat <<EOF
# Written by deploy/local/node.sh for Kubernetes $KUBE_VERSION.
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
failSwapOn: false
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
# The apiserver's kubelet client certificate is signed by the cluster CA.
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: false
  x509:
    clientCAFile: $DITTOFS_CA_CERT
authorization:
  mode: AlwaysAllow
# ConfigMap/Secret volumes follow an update in 8-14 s instead of ~30 s.
syncFrequency: 10s
# Ready is posted within a second of the runtime and PLEG being ready, not
# at the next 10 s tick (a status is only sent when it changed, or each minute).
nodeStatusUpdateFrequency: 1s
nodeStatusReportFrequency: 1m
runtimeRequestTimeout: 5m
resolvConf: /etc/resolv.conf
# A negative score for itself fails without CAP_SYS_RESOURCE (a warning only).
oomScoreAdj: 0
# Images come from images.sh, not a registry: never garbage-collect them, and
# never evict pods or taint the node on a fuller CI disk.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%"
  nodefs.inodesFree: "1%"
  imagefs.available: "1%"
EOF
    if ((KUBE_MINOR >= 27)); then
      echo "containerRuntimeEndpoint: unix://$CTRD_SOCK"
    fi
    if ((KUBE_MINOR >= 31)); then
      # This machine has cgroup v1; from 1.35 the kubelet refuses it by default.
      echo "failCgroupV1: false"
    fi
  } >"$f.tmp"
  mv -f "$f.tmp" "$f"
}

kubelet_args() {
  local args=(
    "$KUBE_BIN/kubelet"
    --config="$NODE_STATE/kubelet-config.yaml"
    --kubeconfig="$DIR/kubelet.kubeconfig"
    --hostname-override="$NODE_NAME"
    --node-ip="$(host_ip)"
    --root-dir="$KUBELET_ROOT"
    --cert-dir="$KUBELET_ROOT/pki"
    --volume-plugin-dir="$NODE_STATE/volume-plugins"
  )
  if ((KUBE_MINOR < 27)); then
    # Removed in 1.27 (containerRuntimeEndpoint in the config from then on).
    args+=(--container-runtime=remote --container-runtime-endpoint="unix://$CTRD_SOCK"
           --pod-infra-container-image="$PAUSE_IMAGE")
  fi
  printf '%s\n' "${args[@]}"
}

write_proxy_config() {
  cat >"$NODE_STATE/kube-proxy-config.yaml.tmp" <<EOF
# Written by deploy/local/node.sh for Kubernetes $KUBE_VERSION.
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: $DIR/kube-proxy.kubeconfig
hostnameOverride: $NODE_NAME
mode: iptables
clusterCIDR: $CLUSTER_CIDR
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# A negative score for itself fails without CAP_SYS_RESOURCE.
oomScoreAdj: 0
# Leave the machine's conntrack sysctls alone.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
EOF
  mv -f "$NODE_STATE/kube-proxy-config.yaml.tmp" "$NODE_STATE/kube-proxy-config.yaml"
}

scheduler_args() {
  local args=(
    "$KUBE_BIN/kube-scheduler"
    --kubeconfig="$DIR/kube-scheduler.kubeconfig"
    --leader-elect=false
    --bind-address=127.0.0.1
    # No serving at all: nothing here asks the scheduler's healthz.
    --secure-port=0
  )
  # The insecure port went away in 1.24; before, it must be turned off.
  ((KUBE_MINOR < 24)) && args+=(--port=0)
  printf '%s\n' "${args[@]}"
}

provisioner_args() {
  printf '%s\n' "$LPP_BIN" start \
    --kubeconfig="$DIR/kubeconfig" \
    --namespace=local-path-storage \
    --configmap-name=local-path-config \
    --service-account-name=local-path-provisioner-service-account \
    --provisioner-name=rancher.io/local-path \
    --helper-image="$HELPER_IMAGE"
}

# ---------------------------------------------------------------------------
# images

ctr_k8s() { timeout 60 ctr --address "$CTRD_SOCK" -n k8s.io "$@"; }

have_images() {
  local have t
  have=$(ctr_k8s images ls -q 2>/dev/null) || return 1
  for t in "$@"; do
    grep -qx "docker.io/$t" <<<"$have" || grep -qx "$t" <<<"$have" || return 1
  done
}

# images.sh import skips what this containerd already holds from the same
# Docker image (warm path: well under a second), and refuses when an image
# is not built yet: then build them all (cached by content hash) and retry.
import_images() {
  local images=$HERE/images.sh
  [[ -x $images ]] || die "$images missing: it builds the pause and Debian images the node needs"
  if ! "$images" import "$CTRD_SOCK" 2>>"$DIR/images.log"; then
    log "building the local images (images.sh build; log: $DIR/images.log)"
    "$images" build >>"$DIR/images.log" 2>&1 || { tail -n 30 "$DIR/images.log" >&2; die "images.sh build failed"; }
    "$images" import "$CTRD_SOCK" 2>>"$DIR/images.log" || { tail -n 30 "$DIR/images.log" >&2; die "images.sh import failed"; }
  fi
  have_images "$PAUSE_IMAGE" "$HELPER_IMAGE" ||
    die "after images.sh import: $PAUSE_IMAGE or $HELPER_IMAGE missing in $CTRD_SOCK"
}

# ---------------------------------------------------------------------------
# waiting

# wait_for WHAT DAEMONS... -- COMMAND...: until COMMAND succeeds; the daemons
# must stay alive meanwhile.
wait_for() {
  local what=$1 daemons=() deadline=$((SECONDS + TIMEOUT))
  shift
  while [[ $1 != -- ]]; do daemons+=("$1"); shift; done
  shift
  until "$@" >/dev/null 2>&1; do
    check_alive "${daemons[@]}"
    if ((SECONDS >= deadline)); then
      log "$what: not after ${TIMEOUT}s"
      local c
      for c in "${daemons[@]}"; do log "last lines of $DIR/$c.log:"; tail -n 15 "$DIR/$c.log" >&2; done
      exit 1
    fi
    sleep 0.3
  done
}

node_ready() {
  [[ $(kc get node "$NODE_NAME" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}') == True ]]
}

kubelet_healthy() { [[ $(curl -sS --max-time 2 "http://127.0.0.1:$KUBELET_HEALTHZ_PORT/healthz") == ok ]]; }

storage_class_ready() { kc get storageclass standard; }

apply_storage() {
  sed -e "s|@STORAGE_DIR@|$STORAGE_DIR|g" -e "s|@HELPER_IMAGE@|$HELPER_IMAGE|g" \
    "$HERE/node/local-path-storage.yaml" | kc apply -f - >/dev/null
}

test_pod_running() {
  [[ $(kc -n kube-system get pod dittofs-node-check -o 'jsonpath={.status.phase}') == Running ]]
}

# A pod that goes through the scheduler, the kubelet, containerd and CNI.
run_test_pod() {
  kc -n kube-system delete pod dittofs-node-check --ignore-not-found --wait=false >/dev/null 2>&1 || true
  cat >"$NODE_STATE/check-pod.yaml" <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: dittofs-node-check
  namespace: kube-system
spec:
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 0
  containers:
  - name: check
    image: $PAUSE_IMAGE
    imagePullPolicy: IfNotPresent
EOF
  wait_for "create the test pod" "${COMPONENTS[@]}" -- kc create -f "$NODE_STATE/check-pod.yaml"
  wait_for "test pod Running" "${COMPONENTS[@]}" -- test_pod_running
  kc -n kube-system delete pod dittofs-node-check --wait=false >/dev/null
}

# ---------------------------------------------------------------------------
# start

write_env() {
  {
    echo "# dittofs-operator local node; source this file (after cluster.sh's)"
    printf 'export DITTOFS_NODE_NAME=%q\n' "$NODE_NAME"
    printf 'export DITTOFS_NODE_IP=%q\n' "$(host_ip)"
    printf 'export DITTOFS_CONTAINERD_SOCK=%q\n' "$CTRD_SOCK"
    printf 'export DITTOFS_STORAGE_CLASS=%q\n' standard
    printf 'export DITTOFS_POD_CIDR=%q\n' "$POD_CIDR"
  } >"$DIR/node.env.tmp"
  mv -f "$DIR/node.env.tmp" "$DIR/node.env"
}

all_running() {
  local c
  for c in "${COMPONENTS[@]}"; do alive_pid "$c" >/dev/null || return 1; done
  [[ -f $DIR/node.env && -f $DIR/node.version && $(<"$DIR/node.version") == "$KUBE_VERSION" ]] &&
    node_ready
}

cmd_start() {
  local t0=$SECONDS
  installed || cmd_install
  load_cluster_env
  if all_running; then
    log "already running"
    cat "$DIR/node.env"
    return 0
  fi
  # Whatever is left (a half-started node, or one whose pid files went with
  # an earlier control plane) goes first: the node starts clean every time.
  if [[ -e $NODE_STATE/started ]] || [[ -n $(stray_pids) ]]; then stop_all; fi
  trap 'log "start failed; stopping what was started (logs in $DIR)"; stop_all' EXIT

  local port
  for port in $KUBELET_PORT $KUBELET_HEALTHZ_PORT 10249 10256; do
    [[ -z $(ss -Hltn "sport = :$port" 2>/dev/null) ]] ||
      die "port $port is in use ($(ss -Hltnp "sport = :$port" | grep -o 'users:.*' | head -n1)): another node?"
  done
  set_sysctls
  write_containerd_config
  write_kubelet_config
  write_proxy_config
  mkdir -p "$KUBELET_ROOT" "$STORAGE_DIR" "$NODE_STATE/volume-plugins"
  # Until a stop has cleaned up after this start.
  : >"$NODE_STATE/started"
  echo "$KUBE_VERSION" >"$DIR/node.version"

  log "starting containerd ($CTRD_SOCK)"
  launch containerd "$(command -v containerd)" --config "$CTRD_CONFIG"
  wait_for "containerd" containerd -- ctr --connect-timeout 2s --address "$CTRD_SOCK" version
  import_images

  local args
  log "starting kubelet $KUBE_VERSION (node $NODE_NAME, $(host_ip))"
  mapfile -t args < <(kubelet_args)
  launch kubelet "${args[@]}"
  log "starting kube-scheduler and kube-proxy"
  mapfile -t args < <(scheduler_args)
  launch kube-scheduler "${args[@]}"
  launch kube-proxy "$KUBE_BIN/kube-proxy" --config="$NODE_STATE/kube-proxy-config.yaml"
  wait_for "apply the StorageClass" containerd kubelet kube-scheduler kube-proxy -- apply_storage
  log "starting local-path-provisioner $LPP_VERSION (storage in $STORAGE_DIR)"
  mapfile -t args < <(provisioner_args)
  launch local-path-provisioner "${args[@]}"

  wait_for "kubelet healthz" "${COMPONENTS[@]}" -- kubelet_healthy
  wait_for "node $NODE_NAME Ready" "${COMPONENTS[@]}" -- node_ready
  log "node $NODE_NAME Ready after $((SECONDS - t0)) s"
  run_test_pod
  trap - EXIT
  write_env
  log "node ready in $((SECONDS - t0)) s: a test pod ran; StorageClass standard (default); env: $DIR/node.env"
  cat "$DIR/node.env"
}

# ---------------------------------------------------------------------------
# stop

# Kill every container of containerd's k8s.io namespace and forget them, so the
# next start (the kubelet) begins from an empty runtime; images stay.
kill_pods() {
  # Without --connect-timeout, ctr waits 10 s for a socket that is not there.
  [[ -S $CTRD_SOCK ]] && ctr --connect-timeout 2s --address "$CTRD_SOCK" version >/dev/null 2>&1 || return 0
  local t c
  for t in $(ctr_k8s tasks ls -q 2>/dev/null); do
    ctr_k8s tasks rm -f "$t" >/dev/null 2>&1 || true
  done
  for c in $(ctr_k8s containers ls -q 2>/dev/null); do
    ctr_k8s containers rm "$c" >/dev/null 2>&1 || true
  done
}

# Shims that outlived containerd (it died with pods running): their
# containers are their children.
kill_stray_shims() {
  local pid child
  for pid in $(stray_pids containerd); do
    [[ $(readlink "/proc/$pid/exe" 2>/dev/null) == *shim* ]] || continue
    for child in $(pgrep -P "$pid" || true); do kill -s KILL "$child" 2>/dev/null || true; done
    kill -s KILL "$pid" 2>/dev/null || true
  done
}

# Unmount everything under the kubelet's root dir (including its bind mount
# of itself) and containerd's root and state (rootfs, shm, netns), deepest
# first; stacked mounts need more than one round.
unmount_all() {
  local mp left
  for _ in 1 2 3 4 5; do
    left=0
    while read -r mp; do
      left=1
      umount "$mp" 2>/dev/null || umount -l "$mp" 2>/dev/null || true
    done < <(awk -v a="$KUBELET_ROOT" -v b="$CTRD_ROOT" -v c="$CTRD_STATE" -v d="$NODE_STATE" '
        { p = $5; gsub(/\\040/, " ", p) }
        p == a || index(p, a "/") == 1 || p == b || index(p, b "/") == 1 ||
        p == c || index(p, c "/") == 1 || p == d || index(p, d "/") == 1 { print length(p), p }' \
        /proc/self/mountinfo | sort -rn | cut -d' ' -f2-)
    ((left)) || return 0
  done
  log "mounts left under $KUBELET_ROOT, $CTRD_ROOT or $CTRD_STATE:"
  grep -E " ($KUBELET_ROOT|$CTRD_ROOT|$CTRD_STATE)" /proc/self/mountinfo >&2 || true
}

# The kubelet's, kube-proxy's and the CNI plugins' iptables chains (KUBE-*,
# CNI-*: nothing else on these machines uses those prefixes), in both families.
delete_chains() {
  local ipt table rules line chain chains
  for ipt in iptables ip6tables; do
    command -v "$ipt" >/dev/null || continue
    for table in filter nat mangle raw; do
      rules=$("$ipt" -w -t "$table" -S 2>/dev/null) || continue
      # Jumps into our chains from the others (DOCKER-*, the built-ins).
      while read -r line; do
        [[ -n $line ]] || continue
        eval "\"\$ipt\" -w -t \"\$table\" -D ${line#-A }" 2>/dev/null || true
      done < <(grep -E '^-A [^ ]+ .*-j (KUBE|CNI)-' <<<"$rules" | grep -Ev '^-A (KUBE|CNI)-' || true)
      chains=$(grep -oE '^-N (KUBE|CNI)-[^ ]+' <<<"$rules" | cut -d' ' -f2 || true)
      for chain in $chains; do "$ipt" -w -t "$table" -F "$chain" 2>/dev/null || true; done
      for chain in $chains; do "$ipt" -w -t "$table" -X "$chain" 2>/dev/null || true; done
    done
  done
}

stop_all() {
  local c
  for ((c = ${#COMPONENTS[@]} - 1; c >= 1; c--)); do stop_component "${COMPONENTS[c]}"; done
  kill_pods
  stop_component containerd
  kill_stray_shims
  unmount_all
  # The pods are gone: so are their netns, veths and IP leases.
  ip link show cni0 >/dev/null 2>&1 && ip link delete cni0
  rm -rf "$CNI_IPAM_DIR"
  local proxy=${KUBE_BIN:-${DITTOFS_KUBE_BIN:-}}/kube-proxy
  if [[ -x $proxy && -f $DIR/node.version ]]; then
    "$proxy" --cleanup >>"$DIR/kube-proxy.log" 2>&1 || true
  fi
  delete_chains
  rm -f "$DIR/node.env" "$NODE_STATE/started"
}

cmd_stop() {
  local purge=0
  [[ ${1:-} == --purge ]] && purge=1
  # Best effort: the kube-proxy binary for --cleanup comes from the env.
  # shellcheck disable=SC1091
  if [[ -f $DIR/env ]]; then source "$DIR/env" 2>/dev/null || true; fi
  if [[ -e $NODE_STATE/started ]] || [[ -n $(stray_pids) ]]; then
    stop_all
  else
    log "not running"
  fi
  if ((purge)); then
    rm -rf "$NODE_STATE" "$CTRD_ROOT" "$CTRD_STATE"
    rm -f "$DIR"/{containerd,kubelet,kube-scheduler,kube-proxy,local-path-provisioner}.{log,cmd} \
      "$DIR/node.version"
    log "stopped; removed $NODE_STATE, $CTRD_ROOT, $CTRD_STATE"
  else
    log "stopped (images in $CTRD_ROOT, volumes in $STORAGE_DIR, logs in $DIR)"
  fi
}

cmd_status() {
  local c pid rc=0
  echo "cluster dir: $DIR"
  for c in "${COMPONENTS[@]}"; do
    if pid=$(alive_pid "$c"); then
      printf '%-24s running (pid %s)\n' "$c" "$pid"
    else
      printf '%-24s stopped\n' "$c"
      rc=1
    fi
  done
  if ((rc == 0)) && [[ -f $DIR/env ]]; then
    load_cluster_env
    printf '%-24s %s\n' "node $NODE_NAME" \
      "$(kc get node "$NODE_NAME" --no-headers 2>/dev/null | awk '{print $2, $NF}' || echo unknown)"
  fi
  return "$rc"
}

cmd_env() {
  [[ -f $DIR/node.env ]] || die "no $DIR/node.env: run start first"
  cat "$DIR/node.env"
}

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2
  exit "${1:-2}"
}

# One node per machine: serialise the commands that change it.
lock_node() {
  exec 8>/run/dittofs-node.lock
  flock 8
}

main() {
  local cmd=${1:-}
  shift || true
  case $cmd in
    start|stop|install) [[ $(id -u) == 0 ]] || die "node.sh $cmd must run as root"; lock_node ;;
  esac
  case $cmd in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop "$@" ;;
    status) cmd_status ;;
    env) cmd_env ;;
    -h|--help|help) usage 0 ;;
    *) usage 2 ;;
  esac
}

main "$@"
