#!/usr/bin/env bash
# deploy/local/images.sh: the container images a local node runs, built on
# this machine (no registry can be reached, nothing is pulled).
#
#   images.sh build [base|pause|operator|standin ...]   build (default: all)
#   images.sh import SOCKET [--snapshotter NAME]        load them into a containerd
#   images.sh list                                      the tags, one per line
#   images.sh clean                                     remove the images and the cache
#
# Images (never :latest, so imagePullPolicy IfNotPresent uses them as is):
#   dittofs-local/debian:bookworm          mmdebstrap --variant=minbase bookworm, from
#                                          the machine's apt sources (docker import)
#   dittofs-local/pause:3.10               gcc -Os -static of Kubernetes' pause.c
#   dittofs-local/dittofs-operator:dev     the project's Dockerfile (its build stage
#                                          FROM the local base; runtime: scratch)
#   dittofs-local/dittofs-standin:0.1      deploy/local/standin: a STAND-IN for the
#                                          DittoFS server (its source cannot be fetched)
#   dittofs-local/dittofs-standin:crash    the same with STANDIN_FAIL set (exits 1)
#
# Each image carries the label io.dittofs.local.content-hash, a hash of what
# it is built from (sources, recipe, the image it builds on); a step whose
# image already has the current hash is skipped. Large artefacts (the base
# tarball) are cached in $DITTOFS_CACHE/images.
#
# Knobs: DITTOFS_CACHE (default ~/.cache/dittofs-operator), DITTOFS_DEBIAN_MIRROR
# (a mirror URI instead of the machine's apt sources), DITTOFS_K8S_VERSION (the
# Kubernetes release whose pause.c is built, default v1.37.2), DITTOFS_GO (the go
# binary, default /usr/local/go/bin/go), DITTOFS_DOCKER_NETWORK (network of the
# operator's docker build: default auto = the bridge when it reaches the mirror,
# else host), DITTOFS_IMAGES_FORCE=1 (rebuild even when up to date),
# DITTOFS_CTR_SNAPSHOTTER (import's default snapshotter, else containerd's).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE_ROOT=${DITTOFS_CACHE:-$HOME/.cache/dittofs-operator}
CACHE=$CACHE_ROOT/images
K8S_VERSION=${DITTOFS_K8S_VERSION:-v1.37.2}
GO=${DITTOFS_GO:-/usr/local/go/bin/go}
FORCE=${DITTOFS_IMAGES_FORCE:-0}
LABEL=io.dittofs.local.content-hash
CTR_LABEL=io.dittofs.local.docker-id

TAG_BASE=dittofs-local/debian:bookworm
TAG_PAUSE=dittofs-local/pause:3.10
TAG_OPERATOR=dittofs-local/dittofs-operator:dev
TAG_STANDIN=dittofs-local/dittofs-standin:0.1
TAG_CRASH=dittofs-local/dittofs-standin:crash
ALL_TAGS=("$TAG_BASE" "$TAG_PAUSE" "$TAG_OPERATOR" "$TAG_STANDIN" "$TAG_CRASH")

CRASH_MESSAGE="dittofs-standin: simulated startup failure (STANDIN_FAIL is set in the :crash image)"

# Bump when a recipe changes in a way the hashed inputs do not show.
RECIPE=1

say() { printf 'images: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
# A freshly built image that fails its smoke test loses its tag, so the
# next build does not take it for up to date.
reject() { docker image rm "$1" >/dev/null 2>&1 || true; die "$2"; }

# Installs the Debian packages that are missing (non-interactive).
need_pkgs() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  say "installing ${missing[*]}"
  if ! $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
       "${missing[@]}" >/dev/null </dev/null; then
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null </dev/null
  fi
}

need_docker() {
  command -v docker >/dev/null || die "docker is not installed"
  docker version -f "{{.Server.Version}}" >/dev/null 2>&1 || die "the Docker Engine does not answer (docker version)"
}

go_cmd() {
  local go=$GO
  [ -x "$go" ] || go=$(command -v go) || die "no go binary ($GO, PATH)"
  GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false "$go" "$@"
}

# sha256 of the stdin, then of the named files (paths relative to ROOT,
# directories walked; names and contents count).
hash_of() {
  {
    cat
    if [ $# -gt 0 ]; then
      (cd "$ROOT" && find "$@" -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum)
    fi
  } | sha256sum | cut -c1-64
}

image_label() { docker image inspect -f "{{ index .Config.Labels \"$LABEL\" }}" "$1" 2>/dev/null || true; }
image_id() { docker image inspect -f '{{ .Id }}' "$1" 2>/dev/null || true; }
image_size() { docker image inspect -f '{{ .Size }}' "$1" | awk '{ printf "%.1f MB", $1 / 1e6 }'; }

# up_to_date TAG HASH: the image exists with that hash (and no FORCE).
up_to_date() {
  [ "$FORCE" != 1 ] && [ "$(image_label "$1")" = "$2" ]
}

skipped() { say "$1: up to date ($2, hash ${3:0:12}, $(image_size "$2"))"; }
built() { say "$1: built $2 in $(($(date +%s) - $3)) s (hash ${4:0:12}, $(image_size "$2"))"; }

# docker build, quiet unless it fails (the log is kept then).
docker_build() {
  local log
  log=$(mktemp "$CACHE/build-log.XXXXXX")
  if ! docker build "$@" >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    die "docker build $* failed (log: $log)"
  fi
  rm -f "$log"
}

# --- the apt sources of the base -------------------------------------------

# A source file of the Debian archive (a *.debian.org host, a .../debian or
# .../debian-security path, or Debian's keyring): only those go into the
# base; a third-party repository (its key is not in the image) would make
# every apt-get update in the operator's build fail.
is_debian_source() {
  grep -qE '://([^/[:space:]]*\.)?debian\.org(/|[[:space:]]|$)|://[^[:space:]]*/debian(-security)?/?([[:space:]]|$)|debian-archive-keyring' "$1"
}

# The mmdebstrap MIRROR arguments: DITTOFS_DEBIAN_MIRROR, else the machine's
# own apt source files of the Debian archive (deb822 .sources and one-line
# lists), pasted as is.
mirror_args() {
  if [ -n "${DITTOFS_DEBIAN_MIRROR:-}" ]; then
    printf '%s\n' "deb ${DITTOFS_DEBIAN_MIRROR} bookworm main" \
      "deb ${DITTOFS_DEBIAN_MIRROR} bookworm-updates main"
    return
  fi
  local f found=0
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    # binary sources only: a deb-src-only file (cluster.sh adds one) would
    # make every apt-get update in the image fetch Sources indexes too
    grep -qE '^[[:space:]]*(deb[[:space:]]|Types:(.*[[:space:]])?deb([[:space:]]|$))' "$f" || continue
    is_debian_source "$f" || continue
    printf '%s\n' "$f"
    found=1
  done
  [ $found = 1 ] || die "no apt sources of the Debian archive on this machine; set DITTOFS_DEBIAN_MIRROR"
}

# A host name and port of the first mirror (for the network probe).
mirror_host() {
  local uri
  if [ -n "${DITTOFS_DEBIAN_MIRROR:-}" ]; then
    uri=$DITTOFS_DEBIAN_MIRROR
  else
    local files=()
    mapfile -t files < <(mirror_args)
    uri=$(cat "${files[@]}" 2>/dev/null | grep -E '^[[:space:]]*(deb|URIs:)' |
      grep -oE 'https?://[^ ]+' | head -n1 || true)
  fi
  [ -n "$uri" ] || uri=http://deb.debian.org/debian
  local scheme=${uri%%://*} rest=${uri#*://}
  local hostport=${rest%%/*}
  local port=80
  [ "$scheme" = https ] && port=443
  case $hostport in *:*) port=${hostport##*:}; hostport=${hostport%:*} ;; esac
  printf '%s %s\n' "$hostport" "$port"
}

# --- 1. base ----------------------------------------------------------------

# merged-usr hook: merged /usr from the start and usr-is-merged installed,
# else apt satisfies init-system-helpers with usrmerge, which pulls in perl
# (+45 MB).
MMDEBSTRAP_OPTS=(--variant=minbase --format=tar
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
  --dpkgopt='path-exclude=/usr/share/man/*'
  --dpkgopt='path-exclude=/usr/share/locale/*'
  --dpkgopt='path-include=/usr/share/locale/locale.alias'
  --dpkgopt='path-exclude=/usr/share/doc/*'
  --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --dpkgopt='path-exclude=/usr/share/info/*')

build_base() {
  local mirrors=() m hash t0
  mapfile -t mirrors < <(mirror_args)
  hash=$({
    printf 'base %s\n' "$RECIPE" "${MMDEBSTRAP_OPTS[@]}" "${mirrors[@]}"
    for m in "${mirrors[@]}"; do [ -f "$m" ] && cat "$m"; done
    true
  } | hash_of)
  if up_to_date "$TAG_BASE" "$hash"; then skipped base "$TAG_BASE" "$hash"; return; fi
  t0=$(date +%s)
  local tar=$CACHE/debian-bookworm-minbase-${hash:0:16}.tar
  if [ ! -s "$tar" ]; then
    need_pkgs mmdebstrap
    say "base: mmdebstrap --variant=minbase bookworm (from ${mirrors[*]})"
    local log=$CACHE/mmdebstrap.log
    if ! mmdebstrap "${MMDEBSTRAP_OPTS[@]}" bookworm "$tar.tmp" "${mirrors[@]}" >"$log" 2>&1 </dev/null; then
      tail -n 30 "$log" >&2
      rm -f "$tar.tmp"
      die "mmdebstrap failed (log: $log)"
    fi
    mv -f "$tar.tmp" "$tar"
    # older tarballs of other recipes are of no further use
    find "$CACHE" -maxdepth 1 -name 'debian-bookworm-minbase-*.tar' ! -path "$tar" -delete
  else
    say "base: reusing the cached $tar"
  fi
  local old
  old=$(image_id "$TAG_BASE")
  docker import --change "LABEL $LABEL=$hash" --change 'CMD ["/bin/bash"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    "$tar" "$TAG_BASE" >/dev/null
  docker run --rm "$TAG_BASE" sh -c 'mkdir -p /tmp/x && chmod 700 /tmp/x && rm -r /tmp/x' ||
    reject "$TAG_BASE" "base: the imported image cannot run sh/mkdir/chmod/rm"
  # the previous base, now untagged (kept while images built on it exist)
  if [ -n "$old" ] && [ "$old" != "$(image_id "$TAG_BASE")" ]; then
    docker image rm "$old" >/dev/null 2>&1 || true
  fi
  built base "$TAG_BASE" "$t0" "$hash"
}

# --- 2. pause ---------------------------------------------------------------

pause_source() {
  local modcache dir
  modcache=$(go_cmd env GOMODCACHE)
  dir=$modcache/k8s.io/kubernetes@$K8S_VERSION
  if [ ! -f "$dir/build/pause/linux/pause.c" ]; then
    say "pause: go mod download k8s.io/kubernetes@$K8S_VERSION (the module cache keeps it)"
    (cd / && GOFLAGS=-mod=mod go_cmd mod download "k8s.io/kubernetes@$K8S_VERSION") >&2 ||
      die "pause: go mod download k8s.io/kubernetes@$K8S_VERSION failed"
  fi
  [ -f "$dir/build/pause/linux/pause.c" ] || die "pause: no $dir/build/pause/linux/pause.c"
  printf '%s\n' "$dir/build/pause/linux/pause.c"
}

build_pause() {
  local src hash t0 ctx
  src=$(pause_source)
  need_pkgs gcc libc6-dev
  hash=$({ printf 'pause %s %s\n' "$RECIPE" "$K8S_VERSION"; gcc --version | head -n1; cat "$src"; } | hash_of)
  if up_to_date "$TAG_PAUSE" "$hash"; then skipped pause "$TAG_PAUSE" "$hash"; return; fi
  t0=$(date +%s)
  ctx=$(mktemp -d "$CACHE/ctx-pause.XXXXXX")
  gcc -Os -Wall -Werror -static -DVERSION="${K8S_VERSION}-dittofs-local" -o "$ctx/pause" "$src"
  strip "$ctx/pause"
  cat >"$ctx/Dockerfile" <<'EOF'
FROM scratch
COPY pause /pause
USER 65535:65535
ENTRYPOINT ["/pause"]
EOF
  docker_build --label "$LABEL=$hash" -t "$TAG_PAUSE" "$ctx"
  rm -rf "$ctx"
  docker run --rm "$TAG_PAUSE" -v >/dev/null || reject "$TAG_PAUSE" "pause: the image does not run"
  built pause "$TAG_PAUSE" "$t0" "$hash"
}

# --- 3. operator ------------------------------------------------------------

# The bridge network reaches the mirror (probed from the base image), else host.
build_network() {
  case ${DITTOFS_DOCKER_NETWORK:-auto} in
    auto) ;;
    *) printf '%s\n' "$DITTOFS_DOCKER_NETWORK"; return ;;
  esac
  local host port
  read -r host port < <(mirror_host)
  if docker run --rm --network bridge "$TAG_BASE" timeout 5 \
       bash -c "exec 3<>/dev/tcp/$host/$port" >/dev/null 2>&1; then
    printf 'default\n'
  else
    say "operator: the bridge network does not reach $host:$port; building with --network host"
    printf 'host\n'
  fi
}

# What the Dockerfile COPYs, plus the Dockerfile and .dockerignore.
OPERATOR_INPUTS=(Dockerfile .dockerignore CMakeLists.txt core lua policies crd)

build_operator() {
  local base_id hash t0 net
  base_id=$(image_id "$TAG_BASE")
  [ -n "$base_id" ] || die "operator: $TAG_BASE is missing (images.sh build base)"
  hash=$(printf 'operator %s %s\n' "$RECIPE" "$base_id" | hash_of "${OPERATOR_INPUTS[@]}")
  if up_to_date "$TAG_OPERATOR" "$hash"; then skipped operator "$TAG_OPERATOR" "$hash"; return; fi
  t0=$(date +%s)
  net=$(build_network)
  say "operator: docker build $ROOT (network $net; cold 8-16 min on 2 cores, 2-4 min when only the operator's sources changed)"
  docker_build --network "$net" --label "$LABEL=$hash" \
    --build-arg BASE_IMAGE="$TAG_BASE" \
    -f "$ROOT/Dockerfile" -t "$TAG_OPERATOR" "$ROOT"
  local out
  docker run --rm "$TAG_OPERATOR" --version >/dev/null ||
    reject "$TAG_OPERATOR" "operator: the image does not run --version"
  out=$(docker run --rm -i "$TAG_OPERATOR" --script-test - <"$ROOT/deploy/samples/dittoserver.yaml") ||
    reject "$TAG_OPERATOR" "operator: the image does not run --script-test"
  grep -q '^kind: StatefulSet' <<<"$out" ||
    reject "$TAG_OPERATOR" "operator: the image does not render the sample"
  built operator "$TAG_OPERATOR" "$t0" "$hash"
}

# --- 4. stand-in ------------------------------------------------------------

STANDIN_DIR=deploy/local/standin

build_standin() {
  local goversion hash t0 ctx
  goversion=$(go_cmd env GOVERSION)
  local inputs=()
  mapfile -t inputs < <(cd "$ROOT" && ls "$STANDIN_DIR"/go.mod "$STANDIN_DIR"/Dockerfile "$STANDIN_DIR"/*.go)
  hash=$(printf 'standin %s %s\n' "$RECIPE" "$goversion" | hash_of "${inputs[@]}")
  if up_to_date "$TAG_STANDIN" "$hash"; then
    skipped standin "$TAG_STANDIN" "$hash"
  else
    t0=$(date +%s)
    ctx=$(mktemp -d "$CACHE/ctx-standin.XXXXXX")
    (cd "$ROOT/$STANDIN_DIR" && go_cmd build -trimpath -ldflags '-s -w' -o "$ctx/dittofs" .) ||
      die "standin: go build failed"
    mkdir -p "$ctx/data/metadata" "$ctx/data/content"
    docker_build --label "$LABEL=$hash" -f "$ROOT/$STANDIN_DIR/Dockerfile" -t "$TAG_STANDIN" "$ctx"
    rm -rf "$ctx"
    [[ $(docker run --rm "$TAG_STANDIN" version) == dittofs-standin* ]] ||
      reject "$TAG_STANDIN" "standin: the image does not run"
    built standin "$TAG_STANDIN" "$t0" "$hash"
  fi

  local id
  id=$(image_id "$TAG_STANDIN")
  hash=$(printf 'crash %s %s %s\n' "$RECIPE" "$id" "$CRASH_MESSAGE" | hash_of)
  if up_to_date "$TAG_CRASH" "$hash"; then skipped standin-crash "$TAG_CRASH" "$hash"; return; fi
  t0=$(date +%s)
  printf 'FROM %s\nENV STANDIN_FAIL="%s"\n' "$TAG_STANDIN" "$CRASH_MESSAGE" |
    docker_build --label "$LABEL=$hash" -t "$TAG_CRASH" -
  built standin-crash "$TAG_CRASH" "$t0" "$hash"
}

# --- commands ---------------------------------------------------------------

cmd_build() {
  local steps=("$@") s
  [ ${#steps[@]} -gt 0 ] || steps=(base pause operator standin)
  for s in "${steps[@]}"; do
    case $s in base|pause|operator|standin) ;; *) die "unknown image '$s' (base pause operator standin)" ;; esac
  done
  need_docker
  mkdir -p "$CACHE"
  local t0 ctx
  t0=$(date +%s)
  for ctx in "$CACHE"/ctx-*; do [ -e "$ctx" ] && rm -rf "$ctx"; done
  for s in "${steps[@]}"; do "build_$s"; done
  say "done in $(($(date +%s) - t0)) s"
}

cmd_import() {
  [ $# -ge 1 ] || die "usage: images.sh import SOCKET [--snapshotter NAME]"
  local sock=$1 snap=${DITTOFS_CTR_SNAPSHOTTER:-}
  shift
  while [ $# -gt 0 ]; do
    case $1 in
      --snapshotter) [ $# -ge 2 ] || die "--snapshotter needs a name"; snap=$2; shift 2 ;;
      --snapshotter=*) snap=${1#*=}; shift ;;
      *) die "unknown argument '$1'" ;;
    esac
  done
  [ -S "$sock" ] || die "no containerd socket at $sock"
  need_docker
  command -v ctr >/dev/null || need_pkgs containerd
  local ctr=(ctr -a "$sock" -n k8s.io)
  local tag id todo=() ids=()
  for tag in "${ALL_TAGS[@]}"; do
    id=$(image_id "$tag")
    [ -n "$id" ] || die "$tag is not built (images.sh build)"
    # the snapshotter it was unpacked for counts too
    id=$id@${snap:-default}
    # skip what this containerd already holds from the same Docker image
    if "${ctr[@]}" images ls "name==docker.io/$tag" 2>/dev/null | grep -qF "$CTR_LABEL=$id"; then
      say "import: $tag already in $sock"
      continue
    fi
    todo+=("$tag")
    ids+=("$id")
  done
  [ ${#todo[@]} -gt 0 ] || return 0
  local t0 i
  t0=$(date +%s)
  docker save "${todo[@]}" | "${ctr[@]}" images import ${snap:+--snapshotter "$snap"} - >/dev/null
  for i in "${!todo[@]}"; do
    "${ctr[@]}" images label "docker.io/${todo[$i]}" "$CTR_LABEL=${ids[$i]}" >/dev/null
  done
  say "import: ${todo[*]} into $sock (namespace k8s.io${snap:+, snapshotter $snap}) in $(($(date +%s) - t0)) s"
}

cmd_clean() {
  need_docker
  local tag
  for tag in "$TAG_CRASH" "$TAG_STANDIN" "$TAG_OPERATOR" "$TAG_PAUSE" "$TAG_BASE"; do
    docker image rm "$tag" >/dev/null 2>&1 && say "removed $tag"
  done
  rm -rf "$CACHE"
  say "removed $CACHE"
}

case ${1:-} in
  build) shift; cmd_build "$@" ;;
  import) shift; cmd_import "$@" ;;
  list) printf '%s\n' "${ALL_TAGS[@]}" ;;
  clean) cmd_clean ;;
  -h|--help|help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' ;;
  *) die "usage: images.sh build [base|pause|operator|standin ...] | import SOCKET [--snapshotter NAME] | list | clean" ;;
esac
