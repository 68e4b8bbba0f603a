#!/usr/bin/env bash
# deploy/local/cluster.sh: a real, local Kubernetes control plane for tests.
#
# Two versions (DITTOFS_KUBE_VERSION):
#   current (default)  Kubernetes $KUBE_CURRENT: kube-apiserver, kube-controller-manager,
#                      kube-scheduler, kubelet, kube-proxy (and kubectl when none is on
#                      PATH) built from the k8s.io/kubernetes Go module with the Go at
#                      /usr/local/go, and etcd built from go.etcd.io/etcd/server/v3.
#   1.20               Kubernetes 1.20.2, the oldest version we support: the same
#                      components built from Debian bookworm's `kubernetes` source
#                      package with Debian's Go 1.19 (/usr/lib/go-1.19), etcd 3.4 from
#                      Debian.
# Everything listens on 127.0.0.1 with free ports. The node (kubelet, containerd,
# CNI, kube-proxy, PVC provisioner) is deploy/local/node.sh; the control plane
# here is ready for it (Node authorizer, kubelet client certificate, kubeconfigs
# for kubelet, scheduler and proxy, the node controllers in kube-controller-manager).
#
#   cluster.sh install                 install packages, build binaries (cached)
#   cluster.sh start                   start etcd + apiserver + controller-manager,
#                                      then the node (node.sh start; DITTOFS_NODE=0
#                                      for the control plane alone)
#   cluster.sh stop [--purge]          stop what start started, the node first
#                                      (--purge: rm state)
#   cluster.sh kill-apiserver [--graceful]   SIGKILL (or TERM) the apiserver only
#   cluster.sh start-apiserver         start it again, same port, same certs
#   cluster.sh restart-apiserver [--graceful]
#   cluster.sh kill-etcd               SIGKILL etcd only (the apiserver keeps running)
#   cluster.sh start-etcd              start it again, same ports and data dir
#   cluster.sh env                     print the sourceable env file
#   cluster.sh status
#   cluster.sh sa-kubeconfig NAMESPACE SA FILE
#                                      write a kubeconfig that authenticates as
#                                      ServiceAccount NAMESPACE/SA (1.20: its token
#                                      Secret, waited for; current: a TokenRequest
#                                      token valid 24 h), context namespace
#                                      NAMESPACE: run a program under its RBAC
#
# Knobs (environment):
#   DITTOFS_KUBE_VERSION current (default), 1.20, or an exact X.Y.Z (>= 1.29)
#                        that the Go module proxy serves
#   DITTOFS_CACHE        build cache       (default ~/.cache/dittofs-operator)
#   DITTOFS_CLUSTER_DIR  state directory   (default /tmp/dittofs-cluster)
#   DITTOFS_START_TIMEOUT           seconds to wait for readiness (default 60)
#   DITTOFS_KCM_CONTROLLERS         controller list for kube-controller-manager
#   DITTOFS_APISERVER_EXTRA_ARGS    extra kube-apiserver flags (space separated),
#                                   e.g. "--watch-cache=false"
#   DITTOFS_KCM_EXTRA_ARGS          extra kube-controller-manager flags, e.g.
#                                   "--kube-api-qps=200 --kube-api-burst=400"
#                                   (its garbage collector at the default 20
#                                   falls behind a churn of 10 DittoServers/s)
#
# A start with another version than the running one stops it and starts fresh.
# Progress goes to stderr; `start` and `env` print the env file on stdout, so
# `eval "$(deploy/local/cluster.sh start)"` works.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# The newest release the Go module proxy served when this was written; bump it
# here (and run the suite) to move "current" forward.
KUBE_CURRENT=1.37.2
KUBE_OLDEST=1.20.2
ETCD_CURRENT=3.7.0   # the etcd that KUBE_CURRENT's go.mod requires
case ${DITTOFS_KUBE_VERSION:-current} in
  current) KUBE_VERSION=$KUBE_CURRENT ;;
  1.20 | 1.20.2) KUBE_VERSION=$KUBE_OLDEST ;;
  1.[2-9][0-9].[0-9]*) KUBE_VERSION=${DITTOFS_KUBE_VERSION} ;;
  *) echo "cluster.sh: DITTOFS_KUBE_VERSION must be current, 1.20 or X.Y.Z, not '${DITTOFS_KUBE_VERSION}'" >&2
     exit 2 ;;
esac
KUBE_MINOR=$(cut -d. -f2 <<<"$KUBE_VERSION")
# Kubernetes 1.20 comes from Debian's source package; anything newer from the module proxy.
if [[ $KUBE_VERSION == "$KUBE_OLDEST" ]]; then FROM_DEBIAN=1; else FROM_DEBIAN=0; fi
CACHE=${DITTOFS_CACHE:-${HOME:-/root}/.cache/dittofs-operator}
KDIR=$CACHE/kube-$KUBE_VERSION
BIN=$KDIR/bin
WORK=$KDIR/work
BUILD_LOG=$KDIR/build.log
DIR=${DITTOFS_CLUSTER_DIR:-/tmp/dittofs-cluster}
START_TIMEOUT=${DITTOFS_START_TIMEOUT:-60}
NODE_NAME=${DITTOFS_NODE_NAME:-dittofs-node}
# The controllers these tests and a one-node cluster need (a node: lifecycle,
# Endpoints for Services, PV binding for dynamically provisioned PVCs, the
# kube-root-ca.crt ConfigMap that every projected ServiceAccount token needs).
KCM_CONTROLLERS=${DITTOFS_KCM_CONTROLLERS:-statefulset,garbagecollector,namespace,serviceaccount,serviceaccount-token,replicaset,deployment,pvc-protection,pv-protection,nodelifecycle,endpoint,endpointslice,persistentvolume-binder,podgc,ttl,daemonset,job,tokencleaner,root-ca-cert-publisher}
SERVICE_CIDR=10.96.0.0/16
ISSUER=https://kubernetes.default.svc
# Go for the module builds (current): the one at /usr/local/go, never a toolchain download.
GO_CURRENT=${DITTOFS_GO:-/usr/local/go/bin/go}
# Debian's Go 1.19 for the 1.20 tree (Go 1.23+ refuses its vendored code).
GO_DEBIAN_BIN=/usr/lib/go-1.19/bin

APT_PKGS=(openssl curl ca-certificates xz-utils)
if ((FROM_DEBIAN)); then
  APT_PKGS+=(etcd-server etcd-client golang-go rsync make golang-github-modern-go-reflect2-dev dpkg-dev)
fi
REFLECT2_SRC=/usr/share/gocode/src/github.com/modern-go/reflect2

# Components in start order; stop goes in reverse.
COMPONENTS=(etcd kube-apiserver kube-controller-manager)
# The node's binaries, built with the control plane (used by node.sh).
NODE_BINARIES=(kubelet kube-scheduler kube-proxy)

log() { printf '[cluster.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------------------
# install

pkg_installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

# Print "TYPE URI SIGNED-BY" for the first enabled deb entry of bookworm main,
# where TYPE is deb822 or list. SIGNED-BY may be "-".
find_bookworm_mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f $f ]] || continue
    awk -v FILE="$f" '
      function flush() {
        if (types ~ /(^| )deb( |$)/ && suites ~ /(^| )bookworm( |$)/ &&
            comps ~ /(^| )main( |$)/ && enabled !~ /^[Nn]o/ && uris != "") {
          split(uris, u, " ")
          print "deb822", u[1], (signed == "" ? "-" : signed)
          found = 1; exit
        }
        types = uris = suites = comps = signed = enabled = ""
      }
      /^[ \t]*#/ { next }
      /^[ \t]*$/ { flush(); next }
      {
        key = tolower($1); sub(/:$/, "", key)
        val = $0; sub(/^[^:]*:[ \t]*/, "", val)
        if (key == "types") types = val
        else if (key == "uris") uris = val
        else if (key == "suites") suites = val
        else if (key == "components") comps = val
        else if (key == "signed-by") signed = val
        else if (key == "enabled") enabled = val
      }
      END { if (!found) flush() }
    ' "$f" | head -n1 | grep . && return 0
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f $f ]] || continue
    awk '
      $1 == "deb" {
        signed = "-"; i = 2
        if ($2 ~ /^\[/) {
          while (i <= NF && $i !~ /\]$/) {
            if ($i ~ /signed-by=/) { s = $i; sub(/.*signed-by=/, "", s); signed = s }
            i++
          }
          if ($i ~ /signed-by=/) { s = $i; sub(/.*signed-by=/, "", s); sub(/\]$/, "", s); signed = s }
          i++
        }
        if ($(i + 1) == "bookworm") {
          for (j = i + 2; j <= NF; j++) if ($j == "main") { print "list", $i, signed; exit }
        }
      }' "$f" | head -n1 | grep . && return 0
  done
  return 1
}

have_bookworm_deb_src() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f $f ]] || continue
    awk '
      function flush() {
        if (types ~ /deb-src/ && suites ~ /(^| )bookworm( |$)/ && comps ~ /(^| )main( |$)/ &&
            enabled !~ /^[Nn]o/) { found = 1; exit }
        types = suites = comps = enabled = ""
      }
      /^[ \t]*#/ { next }
      /^[ \t]*$/ { flush(); next }
      {
        key = tolower($1); sub(/:$/, "", key)
        val = $0; sub(/^[^:]*:[ \t]*/, "", val)
        if (key == "types") types = val
        else if (key == "suites") suites = val
        else if (key == "components") comps = val
        else if (key == "enabled") enabled = val
      }
      END { if (!found) flush(); exit !found }
    ' "$f" && return 0
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f $f ]] || continue
    grep -Eq '^[[:space:]]*deb-src[[:space:]]+(\[[^]]*\][[:space:]]+)?[^[:space:]]+[[:space:]]+bookworm[[:space:]].*\bmain\b' "$f" &&
      return 0
  done
  return 1
}

# Add a deb-src entry for bookworm main on the mirror of the existing deb entry.
# Returns 0 when it wrote a file (so the caller must apt-get update).
ensure_deb_src() {
  have_bookworm_deb_src && return 1
  local kind uri signed line
  if line=$(find_bookworm_mirror); then
    read -r kind uri signed <<<"$line"
  else
    log "no deb entry for bookworm main found; using http://deb.debian.org/debian"
    kind=deb822 uri=http://deb.debian.org/debian signed=-
    [[ -f /usr/share/keyrings/debian-archive-keyring.gpg ]] &&
      signed=/usr/share/keyrings/debian-archive-keyring.gpg
  fi
  if [[ $kind == deb822 ]]; then
    {
      echo "# added by dittofs-operator deploy/local/cluster.sh (apt-get source kubernetes)"
      echo "Types: deb-src"
      echo "URIs: $uri"
      echo "Suites: bookworm"
      echo "Components: main"
      [[ $signed != - ]] && echo "Signed-By: $signed"
    } >/etc/apt/sources.list.d/dittofs-operator-src.sources
    log "added deb-src bookworm main ($uri) in /etc/apt/sources.list.d/dittofs-operator-src.sources"
  else
    local opts=""
    [[ $signed != - ]] && opts="[signed-by=$signed] "
    {
      echo "# added by dittofs-operator deploy/local/cluster.sh (apt-get source kubernetes)"
      echo "deb-src ${opts}$uri bookworm main"
    } >/etc/apt/sources.list.d/dittofs-operator-src.list
    log "added deb-src bookworm main ($uri) in /etc/apt/sources.list.d/dittofs-operator-src.list"
  fi
  return 0
}

apt_get() {
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 -q "$@" </dev/null
}

install_packages() {
  local missing=() p need_update=0
  for p in "${APT_PKGS[@]}"; do pkg_installed "$p" || missing+=("$p"); done
  if ((${#missing[@]})) || { ((FROM_DEBIAN)) && ! have_bookworm_deb_src; }; then
    [[ $(id -u) == 0 ]] || die "must run as root to install packages: ${missing[*]} (or deb-src)"
  fi
  if ((FROM_DEBIAN)); then
    if ensure_deb_src; then need_update=1; fi
    if ((!need_update)) && ! apt-cache showsrc kubernetes 2>/dev/null | grep -q '^Version:'; then
      need_update=1
    fi
  fi
  for p in "${missing[@]}"; do
    if ! apt-cache policy "$p" 2>/dev/null | grep -q 'Candidate: [0-9]'; then need_update=1; fi
  done
  if ((need_update)); then
    log "apt-get update"
    apt_get update >/dev/null || die "apt-get update failed"
  fi
  if ((${#missing[@]})); then
    log "apt-get install ${missing[*]}"
    apt_get install -y --no-install-recommends "${missing[@]}" >/dev/null ||
      die "apt-get install ${missing[*]} failed"
  else
    log "apt packages present"
  fi
}

path_kubectl() {
  local k
  k=$(command -v kubectl 2>/dev/null) || return 1
  [[ $k == "$BIN/kubectl" ]] && return 1
  printf '%s\n' "$k"
}

# kubectl: for current the one built with it (kubectl warns on stderr about
# a skew of more than one minor version); for 1.20 the one on PATH, else the
# one built from the same tree.
resolve_kubectl() {
  if ((!FROM_DEBIAN)) && [[ -x $BIN/kubectl ]]; then printf '%s\n' "$BIN/kubectl"; return 0; fi
  if path_kubectl; then return 0; fi
  if [[ -x $BIN/kubectl ]]; then printf '%s\n' "$BIN/kubectl"; return 0; fi
  return 1
}

# The etcd this version runs: Debian's for 1.20, the one built here otherwise.
etcd_bin() {
  if ((FROM_DEBIAN)); then command -v etcd; else printf '%s\n' "$BIN/etcd"; fi
}

binaries_present() {
  local b
  for b in kube-apiserver kube-controller-manager "${NODE_BINARIES[@]}"; do
    [[ -s $BIN/$b && -x $BIN/$b ]] || return 1
  done
  # client-go's sample-controller (the benchmark's peer) comes with 1.20's
  # tree; the module proxy refuses k8s.io/sample-controller.
  if ((FROM_DEBIAN)); then
    [[ -s $BIN/sample-controller && -f $KDIR/sample-controller/crd.yaml ]] || return 1
  fi
  [[ -x $(etcd_bin) ]] || return 1
  ((FROM_DEBIAN)) || [[ -s $BIN/kubectl ]] || return 1
  path_kubectl >/dev/null || [[ -s $BIN/kubectl ]]
}

build_fail() {
  log "build failed; last lines of $BUILD_LOG:"
  tail -n 40 "$BUILD_LOG" >&2 || true
  exit 1
}

# Fetch and unpack the kubernetes source package into $WORK/src; print the tree.
fetch_source() {
  mkdir -p "$WORK/dl"
  local tree=$WORK/src/kubernetes
  if [[ -f $tree/.dittofs-prepared ]]; then printf '%s\n' "$tree"; return 0; fi
  local ver
  ver=$(apt-cache showsrc kubernetes 2>/dev/null | awk '/^Version:/ { print $2 }' | sort -V | tail -n1)
  [[ -n $ver ]] || die "apt-cache showsrc kubernetes: no source package (deb-src missing?)"
  [[ $ver == *"$KUBE_VERSION"* ]] ||
    die "source package kubernetes $ver is not Kubernetes $KUBE_VERSION"
  if ! compgen -G "$WORK/dl/kubernetes_*.orig.tar.*" >/dev/null; then
    log "apt-get source --download-only kubernetes=$ver"
    (cd "$WORK/dl" && apt_get source --download-only "kubernetes=$ver") >>"$BUILD_LOG" 2>&1 ||
      build_fail
  fi
  local orig
  orig=$(compgen -G "$WORK/dl/kubernetes_*.orig.tar.*" | head -n1)
  log "unpacking $(basename "$orig")"
  rm -rf "$WORK/src" && mkdir -p "$WORK/src/unpack"
  tar -xf "$orig" -C "$WORK/src/unpack" >>"$BUILD_LOG" 2>&1 || build_fail
  local top
  top=$(find "$WORK/src/unpack" -mindepth 1 -maxdepth 1 -type d | head -n1)
  [[ -f $top/hack/lib/golang.sh && -d $top/vendor ]] ||
    die "unexpected orig tarball layout in $orig (no hack/ or vendor/)"
  mv "$top" "$tree"
  rmdir "$WORK/src/unpack" 2>/dev/null || true

  # Must-do: kubernetes 1.20 vendors reflect2 v1.0.1, which faults under
  # Go >= 1.18 (apiserver SIGSEGV in UnsafeMapType.UnsafeIterate). Use Debian's v1.0.2.
  [[ -d $REFLECT2_SRC ]] || die "$REFLECT2_SRC missing (golang-github-modern-go-reflect2-dev)"
  log "replacing vendored reflect2 with $REFLECT2_SRC"
  rm -rf "$tree/vendor/github.com/modern-go/reflect2"
  mkdir -p "$tree/vendor/github.com/modern-go/reflect2"
  cp -rL "$REFLECT2_SRC/." "$tree/vendor/github.com/modern-go/reflect2/"
  rm -f "$tree/vendor/github.com/modern-go/reflect2/go.mod" "$tree/vendor/github.com/modern-go/reflect2/go.sum"
  printf 'kubernetes %s\n' "$ver" >"$tree/.dittofs-prepared"
  printf '%s\n' "$tree"
}

run_make() {
  local gopath_tree=$1; shift
  [[ -x $GO_DEBIAN_BIN/go ]] || die "$GO_DEBIAN_BIN/go missing (Debian's golang-go, Go 1.19)"
  (
    cd "$gopath_tree"
    # Debian's Go first on PATH: the Go at /usr/local/go (1.23+) refuses this tree.
    export PATH=$GO_DEBIAN_BIN:$PATH GOTOOLCHAIN=local
    export GOPATH=$WORK/.go GOCACHE=$WORK/go-build CGO_ENABLED=0 GOPROXY=off GOFLAGS=-mod=vendor
    make WHAT="$*"
  ) >>"$BUILD_LOG" 2>&1
}

# Kubernetes 1.20.2 from Debian's source package (Debian's Go 1.19).
build_debian() {
  local targets=() need_kubectl=0
  if ! path_kubectl >/dev/null && [[ ! -s $BIN/kubectl ]]; then need_kubectl=1; fi
  local b
  for b in kube-apiserver kube-controller-manager "${NODE_BINARIES[@]}"; do
    [[ -s $BIN/$b ]] || targets+=("cmd/$b")
  done
  [[ -s $BIN/sample-controller && -f $KDIR/sample-controller/crd.yaml ]] ||
    targets+=(vendor/k8s.io/sample-controller)
  ((need_kubectl)) && targets+=(cmd/kubectl)
  ((${#targets[@]})) || return 0

  mkdir -p "$WORK" "$BIN"
  : >"$BUILD_LOG"
  local tree
  tree=$(fetch_source)
  mkdir -p "$WORK/.go/src/k8s.io"
  ln -sfn "$tree" "$WORK/.go/src/k8s.io/kubernetes"
  local gtree=$WORK/.go/src/k8s.io/kubernetes

  # A failed generator step (rsync missing) leaves 0-byte binaries behind.
  if [[ -d $tree/_output ]] && find "$tree/_output" -path '*bin*' -type f -size 0 | grep -q .; then
    log "removing _output with 0-byte binaries from an earlier failed build"
    rm -rf "$tree/_output"
  fi

  local hint=""
  [[ -d $tree/_output ]] || hint="cold build, 6-9 min on 2 cores; "
  log "building ${targets[*]} (${hint}log: $BUILD_LOG)"
  local t0=$SECONDS
  if ! run_make "$gtree" "${targets[@]}"; then
    log "make failed; retrying once after rm -rf _output"
    rm -rf "$tree/_output"
    run_make "$gtree" "${targets[@]}" || build_fail
  fi
  log "build done in $((SECONDS - t0)) s"

  local out=$tree/_output/bin
  for b in "${targets[@]}"; do
    b=${b##*/}
    [[ -s $out/$b ]] || { log "$out/$b missing or empty after build"; build_fail; }
    install -m 0755 "$out/$b" "$BIN/$b.tmp" && mv -f "$BIN/$b.tmp" "$BIN/$b"
  done
  mkdir -p "$KDIR/sample-controller"
  cp "$tree"/staging/src/k8s.io/sample-controller/artifacts/examples/*.yaml "$KDIR/sample-controller/"
  printf '%s built %s from %s (vendored reflect2 replaced)\n' "$(date -u +%FT%TZ)" \
    "${targets[*]}" "$(<"$tree/.dittofs-prepared")" >>"$KDIR/BUILD-INFO"
}

# go for the module builds, with the module proxy; never a toolchain download.
go_mod() {
  (
    # Go's own caches (~/.cache/go-build, ~/go/pkg/mod) are shared with
    # node.sh's and images.sh's module builds.
    export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
    "$GO_CURRENT" "$@"
  )
}

# A module of our own that requires k8s.io/kubernetes vX and points every
# staging module (required at v0.0.0 and replaced with ./staging/... in
# kubernetes' own go.mod, which a dependent module does not see) at its
# published v0.X.Y: the replace list is read from that release's go.mod.
write_kube_module() {
  local dir=$1 gomod
  mkdir -p "$dir"
  gomod=$(cd "$dir" && go_mod mod download -json "k8s.io/kubernetes@v$KUBE_VERSION" |
    sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
  [[ -f $gomod ]] || die "go mod download k8s.io/kubernetes@v$KUBE_VERSION: no go.mod (does the proxy serve it?)"
  {
    printf 'module dittofs.local/kubebuild\n\ngo %s\n\nrequire k8s.io/kubernetes v%s\n\nreplace (\n' \
      "$(awk '$1 == "go" { print $2; exit }' "$gomod")" "$KUBE_VERSION"
    sed -n '/^replace (/,/^)/p' "$gomod" |
      awk -v v="v0.${KUBE_VERSION#1.}" '$2 == "=>" && $1 ~ /^k8s\.io\// { printf "\t%s => %s %s\n", $1, $1, v }'
    printf ')\n'
  } >"$dir/go.mod"
}

# Kubernetes >= 1.2x and etcd from the Go module proxy (the Go at /usr/local/go).
build_module() {
  [[ -x $GO_CURRENT ]] || die "$GO_CURRENT missing: the module build needs a current Go (DITTOFS_GO)"
  mkdir -p "$BIN" "$KDIR"
  : >"$BUILD_LOG"
  local t0=$SECONDS cmds=() b
  for b in kube-apiserver kube-controller-manager "${NODE_BINARIES[@]}"; do
    [[ -s $BIN/$b ]] || cmds+=("k8s.io/kubernetes/cmd/$b")
  done
  [[ -s $BIN/kubectl ]] || cmds+=(k8s.io/kubernetes/cmd/kubectl)
  if ((${#cmds[@]})); then
    log "building Kubernetes $KUBE_VERSION from the Go module proxy: ${cmds[*]##*/} (cold: 20-30 min on 2 cores; log: $BUILD_LOG)"
    write_kube_module "$KDIR/mod" >>"$BUILD_LOG" 2>&1
    local ld="-s -w" p
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ld+=" -X $p.gitVersion=v$KUBE_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$KUBE_MINOR"
      ld+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
    done
    (cd "$KDIR/mod" && go_mod get "k8s.io/kubernetes@v$KUBE_VERSION" &&
      go_mod build -trimpath -ldflags "$ld" -o "$BIN/" "${cmds[@]}") >>"$BUILD_LOG" 2>&1 || build_fail
  fi
  if [[ ! -s $BIN/etcd ]]; then
    log "building etcd $ETCD_CURRENT from the Go module proxy"
    mkdir -p "$KDIR/etcd-mod"
    printf 'module dittofs.local/etcdbuild\n\ngo 1.24\n' >"$KDIR/etcd-mod/go.mod"
    (cd "$KDIR/etcd-mod" && go_mod get "go.etcd.io/etcd/server/v3@v$ETCD_CURRENT" &&
      go_mod build -trimpath -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3) >>"$BUILD_LOG" 2>&1 ||
      build_fail
  fi
  log "build done in $((SECONDS - t0)) s"
  printf '%s built Kubernetes %s (module proxy) and etcd %s\n' "$(date -u +%FT%TZ)" \
    "$KUBE_VERSION" "$ETCD_CURRENT" >>"$KDIR/BUILD-INFO"
}

cmd_install() {
  mkdir -p "$KDIR"
  exec 9>"$KDIR/.install.lock"
  flock 9
  install_packages
  if binaries_present; then
    log "binaries present in $BIN"
  elif ((FROM_DEBIAN)); then
    build_debian
  else
    build_module
  fi
  local k
  k=$(resolve_kubectl) || die "no kubectl"
  log "Kubernetes $KUBE_VERSION: kube-apiserver $("$BIN/kube-apiserver" --version 2>/dev/null | awk '{print $2}'), kubectl $k, etcd $("$(etcd_bin)" --version 2>/dev/null | awk 'NR==1{print $3}')"
  exec 9>&-
}

# ---------------------------------------------------------------------------
# processes

pidfile() { printf '%s/%s.pid\n' "$DIR" "$1"; }

# Print the pid of component NAME if it is alive and really ours (the pid's
# executable is that binary, so a recycled pid is never touched).
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

launch() {
  local name=$1; shift
  printf '%s\n' "$@" >"$DIR/$name.cmd"
  printf '\n===== %s start %s\n' "$(date -u +%FT%TZ)" "$name" >>"$DIR/$name.log"
  # setsid: own session, so the daemons outlive the calling shell's job control.
  # Lock fds 8 and 9 are closed so the daemons never hold the script's locks.
  setsid "$@" >>"$DIR/$name.log" 2>&1 </dev/null 8>&- 9>&- &
  local pid=$!
  echo "$pid" >"$(pidfile "$name")"
  sleep 0.2
  alive_pid "$name" >/dev/null || {
    log "$name exited at once; last lines of $DIR/$name.log:"
    tail -n 30 "$DIR/$name.log" >&2
    exit 1
  }
}

relaunch() {
  local name=$1 args
  [[ -f $DIR/$name.cmd ]] || die "$DIR/$name.cmd missing: run start first"
  mapfile -t args <"$DIR/$name.cmd"
  launch "$name" "${args[@]}"
}

# stop_component NAME [SIGNAL [GRACE_SECONDS]]: signal, wait, then SIGKILL.
stop_component() {
  local name=$1 sig=${2:-TERM} grace=${3:-10} pid i
  if pid=$(alive_pid "$name"); then
    log "stopping $name (pid $pid, SIG$sig)"
    kill -s "$sig" "$pid" 2>/dev/null || true
    for ((i = 0; i < grace * 10; i++)); do
      alive_pid "$name" >/dev/null || break
      sleep 0.1
    done
    if alive_pid "$name" >/dev/null; then
      log "$name still alive after $grace s; SIGKILL"
      kill -s KILL "$pid" 2>/dev/null || true
      for ((i = 0; i < 50; i++)); do
        alive_pid "$name" >/dev/null || break
        sleep 0.1
      done
    fi
  fi
  rm -f "$(pidfile "$name")"
}

# ---------------------------------------------------------------------------
# ports, certs, config

port_listening() {
  local port=$1 hex f
  hex=$(printf '%04X' "$port")
  for f in /proc/net/tcp /proc/net/tcp6; do
    [[ -r $f ]] || continue
    # local_address is field 2 (ADDR:PORT in hex), state 0A is LISTEN.
    if awk -v P=":$hex" '$4 == "0A" && substr($2, length($2) - 4) == P { found = 1 } END { exit !found }' "$f"; then
      return 0
    fi
  done
  # Belt and braces: something accepts connections there.
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
}

# Pick a free port in 20000..32000 (below the kernel's ephemeral range),
# not in the space-separated list $1.
pick_port() {
  local taken=" ${1:-} " port i
  for ((i = 0; i < 200; i++)); do
    port=$((20000 + RANDOM % 12000))
    [[ $taken == *" $port "* ]] && continue
    port_listening "$port" && continue
    printf '%s\n' "$port"
    return 0
  done
  die "no free port found"
}

gen_token() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

gen_pki() {
  local p=$DIR/pki
  mkdir -p "$p"
  (
    cd "$p"
    cat >openssl.cnf <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = placeholder
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign, digitalSignature
subjectKeyIdentifier = hash
[v3_server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost, DNS:kubernetes, DNS:kubernetes.default, DNS:kubernetes.default.svc, IP:10.96.0.1
[v3_client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
EOF
    openssl genrsa -out ca.key 2048
    openssl req -config openssl.cnf -x509 -new -key ca.key -subj /CN=dittofs-local-ca \
      -days 3650 -extensions v3_ca -out ca.crt
    openssl genrsa -out apiserver.key 2048
    openssl req -config openssl.cnf -new -key apiserver.key -subj /CN=kube-apiserver -out apiserver.csr
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 \
      -extfile openssl.cnf -extensions v3_server -out apiserver.crt
    openssl genrsa -out admin-client.key 2048
    openssl req -config openssl.cnf -new -key admin-client.key \
      -subj "/O=system:masters/CN=dittofs-admin-cert" -out admin-client.csr
    openssl x509 -req -in admin-client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 \
      -extfile openssl.cnf -extensions v3_client -out admin-client.crt
    # The apiserver's client certificate towards the kubelet (exec, logs, port-forward).
    openssl genrsa -out kubelet-client.key 2048
    openssl req -config openssl.cnf -new -key kubelet-client.key \
      -subj "/O=system:masters/CN=kube-apiserver-kubelet-client" -out kubelet-client.csr
    openssl x509 -req -in kubelet-client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 \
      -extfile openssl.cnf -extensions v3_client -out kubelet-client.crt
    openssl genrsa -out sa.key 2048
    openssl rsa -in sa.key -pubout -out sa.pub
    rm -f ./*.csr
    chmod 600 ./*.key
  ) >>"$DIR/pki.log" 2>&1 || { tail -n 20 "$DIR/pki.log" >&2; die "openssl failed"; }
}

write_kubeconfig() {
  local file=$1 user=$2 token=$3 port=$4 ns=${5:-default} cadata
  cadata=$(base64 -w0 <"$DIR/pki/ca.crt")
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: dittofs-local
  cluster:
    server: https://127.0.0.1:$port
    certificate-authority-data: $cadata
users:
- name: $user
  user:
    token: $token
contexts:
- name: dittofs-local
  context:
    cluster: dittofs-local
    user: $user
    namespace: $ns
current-context: dittofs-local
EOF
  chmod 600 "$file"
}

write_env() {
  local api_port=$1 etcd_port=$2 kubectl
  kubectl=$(resolve_kubectl) || kubectl=""
  {
    echo "# dittofs-operator local control plane; source this file"
    printf 'export KUBECONFIG=%q\n' "$DIR/kubeconfig"
    printf 'export DITTOFS_APISERVER=%q\n' "https://127.0.0.1:$api_port"
    printf 'export DITTOFS_APISERVER_PORT=%q\n' "$api_port"
    printf 'export DITTOFS_ETCD_URL=%q\n' "http://127.0.0.1:$etcd_port"
    printf 'export DITTOFS_CLUSTER_DIR=%q\n' "$DIR"
    printf 'export DITTOFS_KUBECTL=%q\n' "$kubectl"
    printf 'export DITTOFS_KUBE_BIN=%q\n' "$BIN"
    printf 'export DITTOFS_ADMIN_TOKEN_FILE=%q\n' "$DIR/admin.token"
    printf 'export DITTOFS_CA_CERT=%q\n' "$DIR/pki/ca.crt"
    printf 'export DITTOFS_CA_KEY=%q\n' "$DIR/pki/ca.key"
    printf 'export DITTOFS_AUDIT_LOG=%q\n' "$DIR/audit.log"
    printf 'export DITTOFS_SAMPLE_CONTROLLER_DIR=%q\n' "$KDIR/sample-controller"
    printf 'export DITTOFS_KUBE_VERSION=%q\n' "$KUBE_VERSION"
    printf 'export DITTOFS_NODE_NAME=%q\n' "$NODE_NAME"
    printf 'export DITTOFS_SERVICE_CIDR=%q\n' "$SERVICE_CIDR"
  } >"$DIR/env.tmp"
  mv -f "$DIR/env.tmp" "$DIR/env"
}

api_get() {
  # api_get PATH -> body on stdout; fails on non-2xx.
  curl -sS --fail --max-time 5 --cacert "$DIR/pki/ca.crt" \
    -H "Authorization: Bearer $(<"$DIR/admin.token")" \
    "https://127.0.0.1:$(<"$DIR/apiserver.port")$1" 2>/dev/null
}

wait_etcd() {
  local port=$1 deadline=$((SECONDS + START_TIMEOUT))
  until curl -sS --max-time 2 "http://127.0.0.1:$port/health" 2>/dev/null | grep -q '"health":"true"'; do
    alive_pid etcd >/dev/null || { tail -n 30 "$DIR/etcd.log" >&2; die "etcd died"; }
    ((SECONDS < deadline)) || { tail -n 30 "$DIR/etcd.log" >&2; die "etcd not healthy after ${START_TIMEOUT}s"; }
    sleep 0.2
  done
}

wait_apiserver_ready() {
  local deadline=$((SECONDS + START_TIMEOUT))
  until [[ $(api_get /readyz || true) == ok ]]; do
    if ! alive_pid kube-apiserver >/dev/null; then
      log "kube-apiserver died; last lines of $DIR/kube-apiserver.log:"
      tail -n 40 "$DIR/kube-apiserver.log" >&2
      exit 1
    fi
    if ((SECONDS >= deadline)); then
      log "kube-apiserver not ready after ${START_TIMEOUT}s; /readyz?verbose says:"
      curl -sS --max-time 5 --cacert "$DIR/pki/ca.crt" -H "Authorization: Bearer $(<"$DIR/admin.token")" \
        "https://127.0.0.1:$(<"$DIR/apiserver.port")/readyz?verbose" 2>&1 | grep -v '^\[+\]' >&2 || true
      log "last lines of $DIR/kube-apiserver.log:"
      tail -n 40 "$DIR/kube-apiserver.log" >&2
      exit 1
    fi
    sleep 0.3
  done
}

# The default namespace, and the default ServiceAccount with its token secret
# (without the secret the ServiceAccount admission plugin rejects pods).
wait_default_sa() {
  local deadline=$((SECONDS + START_TIMEOUT)) body
  while :; do
    body=$(api_get /api/v1/namespaces/default/serviceaccounts/default || true)
    # Before 1.24 the token controller adds a token Secret, which the
    # ServiceAccount admission plugin needs before it admits pods.
    if ((KUBE_MINOR >= 24)); then
      [[ $body == *'"name":"default"'* || $body == *'"name": "default"'* ]] && return 0
    else
      [[ $body == *'"secrets"'* ]] && return 0
    fi
    if ! alive_pid kube-controller-manager >/dev/null; then
      tail -n 40 "$DIR/kube-controller-manager.log" >&2
      die "kube-controller-manager died"
    fi
    if ((SECONDS >= deadline)); then
      tail -n 40 "$DIR/kube-controller-manager.log" >&2
      die "default ServiceAccount (with token secret) not there after ${START_TIMEOUT}s"
    fi
    sleep 0.3
  done
}

apiserver_args() {
  local api_port=$1 etcd_port=$2
  local p=$DIR/pki
  local args=(
    "$BIN/kube-apiserver"
    --etcd-servers="http://127.0.0.1:$etcd_port"
    # All addresses: pods reach it as the kubernetes Service (10.96.0.1:443,
    # routed to the advertised address, the host's default-route IP).
    --bind-address=0.0.0.0
    --secure-port="$api_port"
    --cert-dir="$DIR/apiserver-certs"
    --tls-cert-file="$p/apiserver.crt"
    --tls-private-key-file="$p/apiserver.key"
    --client-ca-file="$p/ca.crt"
    --token-auth-file="$DIR/tokens.csv"
    --service-account-key-file="$p/sa.pub"
    --service-account-signing-key-file="$p/sa.key"
    --service-account-issuer="$ISSUER"
    --api-audiences="$ISSUER"
    --authorization-mode=Node,RBAC
    --enable-admission-plugins=NodeRestriction
    --service-cluster-ip-range="$SERVICE_CIDR"
    --kubelet-client-certificate="$p/kubelet-client.crt"
    --kubelet-client-key="$p/kubelet-client.key"
    --kubelet-preferred-address-types=InternalIP,Hostname
    --allow-privileged=true
    --audit-policy-file="$DIR/audit-policy.yaml"
    --audit-log-path="$DIR/audit.log"
    --audit-log-maxsize=200
    --audit-log-maxbackup=2
  )
  # The insecure port went away in 1.24; before, it must be turned off.
  ((KUBE_MINOR < 24)) && args+=(--insecure-port=0)
  # shellcheck disable=SC2206 # word splitting is the point
  [[ -n ${DITTOFS_APISERVER_EXTRA_ARGS:-} ]] && args+=(${DITTOFS_APISERVER_EXTRA_ARGS})
  printf '%s\n' "${args[@]}"
}

fresh_start() {
  # Anything left from an earlier run (its processes are already stopped).
  rm -rf "$DIR"
  mkdir -p "$DIR"
  chmod 700 "$DIR"
  log "state dir $DIR"

  gen_pki
  local admin_token kcm_token
  admin_token=$(gen_token)
  kcm_token=$(gen_token)
  local node_token sched_token proxy_token
  node_token=$(gen_token)
  sched_token=$(gen_token)
  proxy_token=$(gen_token)
  printf '%s\n' "$admin_token" >"$DIR/admin.token"
  chmod 600 "$DIR/admin.token"
  # The node's components authenticate as Kubernetes' own identities, which
  # the bootstrap RBAC (and for the kubelet the Node authorizer) grants what
  # they need: nothing here runs in system:masters but admin and the KCM.
  {
    printf '%s,admin,admin-uid,"system:masters"\n' "$admin_token"
    printf '%s,system:kube-controller-manager,kcm-uid,"system:masters"\n' "$kcm_token"
    printf '%s,system:node:%s,node-uid,"system:nodes"\n' "$node_token" "$NODE_NAME"
    printf '%s,system:kube-scheduler,scheduler-uid\n' "$sched_token"
    printf '%s,system:kube-proxy,proxy-uid\n' "$proxy_token"
  } >"$DIR/tokens.csv"
  chmod 600 "$DIR/tokens.csv"
  cat >"$DIR/audit-policy.yaml" <<'EOF'
apiVersion: audit.k8s.io/v1
kind: Policy
# One event per request (at ResponseComplete; watches also log ResponseStarted).
omitStages:
- RequestReceived
rules:
# Writes by a client in this group carry their bodies (client certificates
# with O=dittofs:audit-request; spec/integration/faults_test.sh reads which
# generation each write of the operator carried).
- level: Request
  userGroups: ["dittofs:audit-request"]
  verbs: ["create", "update", "patch"]
- level: Metadata
EOF

  local etcd_port etcd_peer api_port
  etcd_port=$(pick_port)
  etcd_peer=$(pick_port "$etcd_port")
  api_port=$(pick_port "$etcd_port $etcd_peer")
  echo "$api_port" >"$DIR/apiserver.port"
  echo "$etcd_port" >"$DIR/etcd.port"

  local etcd_args=(
    "$(etcd_bin)"
    --name=dittofs
    --data-dir="$DIR/etcd"
    --listen-client-urls="http://127.0.0.1:$etcd_port"
    --advertise-client-urls="http://127.0.0.1:$etcd_port"
    --listen-peer-urls="http://127.0.0.1:$etcd_peer"
    --initial-advertise-peer-urls="http://127.0.0.1:$etcd_peer"
    --initial-cluster="dittofs=http://127.0.0.1:$etcd_peer"
  )
  # Tests do not need durability; skip fsync when this etcd supports it.
  if "$(etcd_bin)" --help 2>&1 | grep -q -- '--unsafe-no-fsync'; then etcd_args+=(--unsafe-no-fsync); fi
  log "starting etcd on 127.0.0.1:$etcd_port"
  launch etcd "${etcd_args[@]}"
  wait_etcd "$etcd_port"

  log "starting kube-apiserver on 127.0.0.1:$api_port"
  local api_args
  mapfile -t api_args < <(apiserver_args "$api_port" "$etcd_port")
  launch kube-apiserver "${api_args[@]}"
  write_kubeconfig "$DIR/kubeconfig" admin "$admin_token" "$api_port"
  write_kubeconfig "$DIR/kube-controller-manager.kubeconfig" system:kube-controller-manager "$kcm_token" "$api_port"
  write_kubeconfig "$DIR/kubelet.kubeconfig" "system:node:$NODE_NAME" "$node_token" "$api_port"
  write_kubeconfig "$DIR/kube-scheduler.kubeconfig" system:kube-scheduler "$sched_token" "$api_port"
  write_kubeconfig "$DIR/kube-proxy.kubeconfig" system:kube-proxy "$proxy_token" "$api_port"
  echo "$KUBE_VERSION" >"$DIR/version"
  write_env "$api_port" "$etcd_port"
  wait_apiserver_ready
  log "kube-apiserver ready"

  log "starting kube-controller-manager ($KCM_CONTROLLERS)"
  local kcm_extra=()
  # The insecure port went away in 1.24; before, it must be turned off.
  ((KUBE_MINOR < 24)) && kcm_extra+=(--port=0)
  # shellcheck disable=SC2206 # words, as DITTOFS_APISERVER_EXTRA_ARGS
  [[ -n ${DITTOFS_KCM_EXTRA_ARGS:-} ]] && kcm_extra+=(${DITTOFS_KCM_EXTRA_ARGS})
  launch kube-controller-manager \
    "$BIN/kube-controller-manager" \
    --kubeconfig="$DIR/kube-controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port=0 \
    --controllers="$KCM_CONTROLLERS" \
    --node-monitor-grace-period=20s \
    --leader-elect=false \
    --service-account-private-key-file="$DIR/pki/sa.key" \
    --root-ca-file="$DIR/pki/ca.crt" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    "${kcm_extra[@]}"
  wait_default_sa
}

# The token of ServiceAccount $1/$2 on stdout. In 1.20 the token controller
# (kube-controller-manager) creates a kubernetes.io/service-account-token
# Secret <sa>-token-<random> and lists it in the account's .secrets, shortly
# after the account is created: wait for both.
sa_token() {
  local ns=$1 sa=$2 deadline=$((SECONDS + START_TIMEOUT)) body secret token
  ((KUBE_MINOR >= 24)) && { sa_token_request "$ns" "$sa"; return; }
  while :; do
    secret="" token=""
    body=$(api_get "/api/v1/namespaces/$ns/serviceaccounts/$sa" || true)
    secret=$(grep -o "\"name\": *\"$sa-token-[a-z0-9]*\"" <<<"$body" | head -n1 | sed 's/.*: *"//; s/"$//') || true
    if [[ -n $secret ]]; then
      body=$(api_get "/api/v1/namespaces/$ns/secrets/$secret" || true)
      token=$(grep -o '"token": *"[^"]*"' <<<"$body" | head -n1 | sed 's/.*: *"//; s/"$//') || true
    fi
    if [[ -n $token ]]; then
      base64 -d <<<"$token"
      return 0
    fi
    ((SECONDS < deadline)) ||
      die "no token for ServiceAccount $ns/$sa: no token Secret after ${START_TIMEOUT}s (does it exist? is kube-controller-manager running?)"
    sleep 0.3
  done
}

# From 1.24 on no token Secret is made: ask the TokenRequest API for a
# token of ServiceAccount $1/$2 (valid 24 h), once the account exists.
sa_token_request() {
  local ns=$1 sa=$2 deadline=$((SECONDS + START_TIMEOUT)) body token
  while :; do
    body=$(curl -sS --max-time 5 --cacert "$DIR/pki/ca.crt" \
      -H "Authorization: Bearer $(<"$DIR/admin.token")" -H 'Content-Type: application/json' \
      -X POST --data '{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{"expirationSeconds":86400}}' \
      "https://127.0.0.1:$(<"$DIR/apiserver.port")/api/v1/namespaces/$ns/serviceaccounts/$sa/token" 2>/dev/null || true)
    token=$(grep -o '"token": *"[^"]*"' <<<"$body" | head -n1 | sed 's/.*: *"//; s/"$//') || true
    if [[ -n $token ]]; then
      printf '%s' "$token"
      return 0
    fi
    ((SECONDS < deadline)) ||
      die "no token for ServiceAccount $ns/$sa after ${START_TIMEOUT}s (does it exist?)"
    sleep 0.3
  done
}

cmd_sa_kubeconfig() {
  (($# == 3)) || usage 2
  local ns=$1 sa=$2 file=$3 token
  [[ -f $DIR/apiserver.port && -f $DIR/admin.token ]] || die "no control plane in $DIR: run start first"
  token=$(sa_token "$ns" "$sa")
  write_kubeconfig "$file.tmp" "system:serviceaccount:$ns:$sa" "$token" "$(<"$DIR/apiserver.port")" "$ns"
  mv -f "$file.tmp" "$file"
  log "wrote $file (ServiceAccount $ns/$sa)"
}

all_running() {
  local c
  for c in "${COMPONENTS[@]}"; do alive_pid "$c" >/dev/null || return 1; done
  [[ $(api_get /readyz || true) == ok ]]
}

cmd_start() {
  local t0=$SECONDS
  if ! binaries_present; then
    cmd_install
  fi
  if [[ -f $DIR/version && $(<"$DIR/version") != "$KUBE_VERSION" ]]; then
    log "running Kubernetes $(<"$DIR/version"), $KUBE_VERSION asked for: starting fresh"
    stop_all
    rm -f "$DIR/env"
  fi
  if [[ -f $DIR/env ]] && all_running; then
    log "already running"
    cat "$DIR/env"
    return 0
  fi
  if alive_pid etcd >/dev/null && [[ -f $DIR/kube-apiserver.cmd ]]; then
    # Partly running (say, after kill-apiserver): bring back what is missing.
    if ! alive_pid kube-apiserver >/dev/null; then
      log "restarting kube-apiserver"
      relaunch kube-apiserver
    fi
    wait_apiserver_ready
    if ! alive_pid kube-controller-manager >/dev/null; then
      log "restarting kube-controller-manager"
      relaunch kube-controller-manager
    fi
  else
    stop_all
    # A start that fails half way stops what it started (logs stay in $DIR).
    trap 'log "start failed; stopping what was started (logs in $DIR)"; stop_all' EXIT
    fresh_start
    trap - EXIT
  fi
  log "control plane ready in $((SECONDS - t0)) s; env: $DIR/env"
  # The node (kubelet, containerd, CNI, kube-proxy, provisioner, images):
  # one entry point for the whole test ground; DITTOFS_NODE=0 skips it.
  if [[ ${DITTOFS_NODE:-1} != 0 ]]; then
    "$HERE/node.sh" start >/dev/null || die "node.sh start failed (logs in $DIR)"
    log "control plane and node ready in $((SECONDS - t0)) s"
  fi
  cat "$DIR/env"
}

stop_all() {
  local c
  # The node first: its kubelet and kube-proxy talk to this apiserver. The
  # node is one per machine (node.sh stop stops whichever runs): only when it
  # was started for this state dir (node.sh leaves node.version here), so a
  # second control plane (another DITTOFS_CLUSTER_DIR, DITTOFS_NODE=0) never
  # stops the node of the first.
  if [[ -x $HERE/node.sh ]] && [[ -f $DIR/node.version || $DIR == /tmp/dittofs-cluster ]]; then
    "$HERE/node.sh" stop || log "node.sh stop failed"
  fi
  for ((c = ${#COMPONENTS[@]} - 1; c >= 0; c--)); do stop_component "${COMPONENTS[c]}"; done
}

cmd_stop() {
  local purge=0
  [[ ${1:-} == --purge ]] && purge=1
  stop_all
  if ((purge)); then
    case $DIR in /|"") die "refusing to purge '$DIR'";; esac
    rm -rf "$DIR"
    rm -f "$DIR.lock"
    log "stopped; removed $DIR"
  else
    log "stopped (state and logs kept in $DIR)"
  fi
}

cmd_kill_apiserver() {
  if [[ ${1:-} == --graceful ]]; then
    # The apiserver stops listening at once, then waits up to 60 s for
    # long-running requests (watches) to finish.
    stop_component kube-apiserver TERM 70
  else
    stop_component kube-apiserver KILL
  fi
}

cmd_start_apiserver() {
  alive_pid etcd >/dev/null || die "etcd is not running: use start"
  if alive_pid kube-apiserver >/dev/null; then
    log "kube-apiserver already running"
  else
    log "starting kube-apiserver on 127.0.0.1:$(<"$DIR/apiserver.port")"
    relaunch kube-apiserver
  fi
  wait_apiserver_ready
  log "kube-apiserver ready"
}

cmd_kill_etcd() { stop_component etcd KILL; }

cmd_start_etcd() {
  [[ -f $DIR/etcd.cmd && -f $DIR/etcd.port ]] || die "no etcd in $DIR: use start"
  if alive_pid etcd >/dev/null; then
    log "etcd already running"
  else
    log "starting etcd on 127.0.0.1:$(<"$DIR/etcd.port")"
    relaunch etcd
  fi
  wait_etcd "$(<"$DIR/etcd.port")"
  log "etcd healthy"
}

cmd_env() {
  [[ -f $DIR/env ]] || die "no $DIR/env: run start first"
  cat "$DIR/env"
}

cmd_status() {
  local c pid rc=0
  echo "state dir: $DIR (Kubernetes $KUBE_VERSION)"
  echo "binaries:  $BIN ($(binaries_present && echo present || echo missing))"
  for c in "${COMPONENTS[@]}"; do
    if pid=$(alive_pid "$c"); then
      printf '%-24s running (pid %s)\n' "$c" "$pid"
    else
      printf '%-24s stopped\n' "$c"
      rc=1
    fi
  done
  if [[ -f $DIR/apiserver.port ]]; then
    printf '%-24s https://127.0.0.1:%s readyz=%s\n' "apiserver endpoint" "$(<"$DIR/apiserver.port")" \
      "$(api_get /readyz || echo unreachable)"
  fi
  return "$rc"
}

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2
  exit "${1:-2}"
}

# Serialise commands that change the cluster in $DIR (parallel test runners).
lock_cluster() {
  mkdir -p "$(dirname "$DIR")"
  exec 8>"$DIR.lock"
  flock 8
}

# Commands on a running control plane act on the version it runs, whatever
# DITTOFS_KUBE_VERSION says (only start and install choose the version).
adopt_running_version() {
  [[ -f $DIR/version ]] || return 0
  KUBE_VERSION=$(<"$DIR/version")
  KUBE_MINOR=$(cut -d. -f2 <<<"$KUBE_VERSION")
  if [[ $KUBE_VERSION == "$KUBE_OLDEST" ]]; then FROM_DEBIAN=1; else FROM_DEBIAN=0; fi
  KDIR=$CACHE/kube-$KUBE_VERSION
  BIN=$KDIR/bin
}

main() {
  local cmd=${1:-}
  shift || true
  case $cmd in
    install|start) ;;
    *) adopt_running_version ;;
  esac
  case $cmd in
    start|stop|kill-apiserver|start-apiserver|restart-apiserver|kill-etcd|start-etcd) lock_cluster ;;
  esac
  case $cmd in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop "$@" ;;
    kill-apiserver) cmd_kill_apiserver "$@" ;;
    start-apiserver) cmd_start_apiserver ;;
    restart-apiserver) cmd_kill_apiserver "$@"; cmd_start_apiserver ;;
    kill-etcd) cmd_kill_etcd ;;
    start-etcd) cmd_start_etcd ;;
    env) cmd_env ;;
    status) cmd_status ;;
    sa-kubeconfig) cmd_sa_kubeconfig "$@" ;;
    -h|--help|help) usage 0 ;;
    *) usage 2 ;;
  esac
}

main "$@"
