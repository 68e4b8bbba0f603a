#!/usr/bin/env bash
# The operator's container image (the Dockerfile), as the end-to-end tests
# run it in a pod. Needs the Docker Engine; no control plane (it uses the
# local one when it is up).
#
#   1. Build: deploy/local/images.sh build base operator (each skipped when
#      up to date; the Dockerfile's source layers come from docker's cache),
#      unless DITTOFS_IMAGE names an image to check instead.
#   2. The image: at most 30 MB; user 65532:65532; its files are the binary,
#      /etc/passwd and /etc/group and nothing else (no shell, no package
#      manager, no compiler, no shared library).
#   3. The binary inside: --version prints the CMake project version;
#      --script-test of deploy/samples/dittoserver.yaml exits 0 and prints
#      exactly what the developer build prints (DITTOFS_OPERATOR, else
#      build/dittofs-operator; without either, the rendered kinds).
#   4. The operator started as in a pod (in-cluster: KUBERNETES_SERVICE_HOST
#      and _PORT, the ServiceAccount's token, ca.crt and namespace mounted at
#      /var/run/secrets/kubernetes.io/serviceaccount; read-only root, no
#      capabilities; only DittoServers of an empty namespace with a label
#      nobody sets, so it writes nothing): it connects in-cluster, /healthz answers 200, /metrics
#      200, /readyz 200 against the local control plane or not 200 against
#      an API server that refuses connections; it runs as uid 65532; it logs
#      to stderr only; its idle RSS is at most 10 MiB (printed per mapping);
#      SIGTERM (docker stop) ends it with status 0 in under 10 s.
#      Control plane: the local one (deploy/local/cluster.sh, its admin
#      token and CA) when it answers, else a closed port on 127.0.0.1.
#
# Knobs: DITTOFS_IMAGE (check this image, do not build), DITTOFS_OPERATOR
# (the developer binary), DITTOFS_CLUSTER_DIR (default /tmp/dittofs-cluster),
# DITTOFS_IMAGE_CHECK_CLUSTER=0 (never use the local control plane).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
MAX_BYTES=30000000
MAX_RSS_KIB=10240
BIN=/usr/local/bin/dittofs-operator
SA=/var/run/secrets/kubernetes.io/serviceaccount

failures=0
ok() { printf 'ok - %s\n' "$*"; }
not_ok() { printf 'not ok - %s\n' "$*"; failures=$((failures + 1)); }
check() { # check DESCRIPTION COMMAND...
  local what=$1
  shift
  if "$@"; then ok "$what"; else not_ok "$what"; fi
}
die() { printf 'image_check: %s\n' "$*" >&2; exit 1; }

command -v docker >/dev/null || die "docker is not installed"
docker version -f '{{.Server.Version}}' >/dev/null 2>&1 || die "the Docker Engine does not answer"

tmp=$(mktemp -d)
name=dittofs-image-check-$$
cleanup() {
  docker rm -f "$name" "$name-fs" >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT

# --- 1. build -----------------------------------------------------------------
if [ -n "${DITTOFS_IMAGE:-}" ]; then
  image=$DITTOFS_IMAGE
else
  image=$("$root/deploy/local/images.sh" list | grep '/dittofs-operator:')
  t0=$(date +%s)
  "$root/deploy/local/images.sh" build base operator
  printf '# built or found %s in %d s\n' "$image" $(($(date +%s) - t0))
fi
docker image inspect "$image" >/dev/null 2>&1 || die "no image $image"

# --- 2. the image ---------------------------------------------------------------
size=$(docker image inspect -f '{{.Size}}' "$image")
printf '# image %s: %d bytes (%.1f MB)\n' "$image" "$size" "$(echo "$size / 1000000" | bc -l)"
check "image size $size <= $MAX_BYTES bytes" [ "$size" -le "$MAX_BYTES" ]
user=$(docker image inspect -f '{{.Config.User}}' "$image")
check "runs as 65532:65532 (User '$user')" [ "$user" = 65532:65532 ]
entry=$(docker image inspect -f '{{json .Config.Entrypoint}}' "$image")
check "entrypoint is [\"$BIN\"] ($entry)" [ "$entry" = "[\"$BIN\"]" ]

# The files of the image's layers: what docker export shows of a container
# never started, minus what the engine itself adds to every container.
docker create --name "$name-fs" "$image" >/dev/null
docker export "$name-fs" | tar -t | sed 's#/$##' | LC_ALL=C sort >"$tmp/files"
docker rm "$name-fs" >/dev/null
grep -vxE '\.dockerenv|dev|dev/console|dev/pts|dev/shm|etc|etc/hostname|etc/hosts|etc/mtab|etc/resolv\.conf|proc|sys' \
  "$tmp/files" >"$tmp/image-files" || true
printf '%s\n' etc/group etc/passwd usr usr/local usr/local/bin "${BIN#/}" | LC_ALL=C sort >"$tmp/want-files"
if diff -u "$tmp/want-files" "$tmp/image-files" >"$tmp/files.diff"; then
  ok "the image holds the binary, /etc/passwd and /etc/group, nothing else"
else
  not_ok "the image holds other files (- expected, + found):"
  sed 's/^/#   /' "$tmp/files.diff"
fi
for f in bin/sh usr/bin/sh bin/bash usr/bin/apt-get usr/bin/dpkg usr/bin/gcc usr/bin/cc \
  lib64/ld-linux-x86-64.so.2 usr/lib64/ld-linux-x86-64.so.2; do
  if grep -qxF "$f" "$tmp/files"; then not_ok "the image has /$f"; fi
done
if docker run --rm --entrypoint /bin/sh "$image" -c true >/dev/null 2>&1; then
  not_ok "/bin/sh runs in the image"
else
  ok "no /bin/sh to run"
fi
docker create --name "$name-fs" "$image" >/dev/null
docker cp "$name-fs:/etc/passwd" "$tmp/passwd"
docker rm "$name-fs" >/dev/null
check "/etc/passwd has user 65532 (group 65532)" grep -qE '^[a-z_][a-z0-9_-]*:x:65532:65532:' "$tmp/passwd"

# --- 3. the binary inside -------------------------------------------------------
want_version=$(sed -nE 's/^project\(dittofs-operator VERSION ([0-9.]+).*/\1/p' "$root/CMakeLists.txt")
version=$(docker run --rm "$image" --version 2>&1) || true
check "--version: '$version' is 'dittofs-operator $want_version'" [ "$version" = "dittofs-operator $want_version" ]

sample=$root/deploy/samples/dittoserver.yaml
if docker run --rm -i "$image" --script-test - <"$sample" >"$tmp/script-test.out" 2>"$tmp/script-test.err"; then
  ok "--script-test of the sample exits 0"
else
  not_ok "--script-test of the sample fails:"
  sed 's/^/#   /' "$tmp/script-test.err"
fi
dev=${DITTOFS_OPERATOR:-$root/build/dittofs-operator}
if [ -x "$dev" ]; then
  "$dev" --script-test - <"$sample" >"$tmp/script-test.dev" 2>/dev/null ||
    die "$dev --script-test of the sample fails (the developer build)"
  if cmp -s "$tmp/script-test.dev" "$tmp/script-test.out"; then
    ok "--script-test prints what $dev prints ($(wc -l <"$tmp/script-test.out") lines)"
  else
    not_ok "--script-test differs from $dev's:"
    diff -u "$tmp/script-test.dev" "$tmp/script-test.out" | head -n 40 | sed 's/^/#   /'
  fi
else
  for k in ConfigMap Service StatefulSet; do
    check "--script-test renders a $k (no developer binary to compare with)" \
      grep -q "^kind: $k\$" "$tmp/script-test.out"
  done
fi

# --- 4. running as in a pod --------------------------------------------------
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
cluster_dir=${DITTOFS_CLUSTER_DIR:-/tmp/dittofs-cluster}
mkdir -p "$tmp/sa"
mode=unreachable
if [ "${DITTOFS_IMAGE_CHECK_CLUSTER:-1}" != 0 ] && [ -s "$cluster_dir/apiserver.port" ] &&
  [ -s "$cluster_dir/pki/ca.crt" ] && [ -s "$cluster_dir/kubeconfig" ]; then
  api_port=$(<"$cluster_dir/apiserver.port")
  token=$(sed -nE 's/^[[:space:]]+token:[[:space:]]*(.*)$/\1/p' "$cluster_dir/kubeconfig" | head -n1)
  if [ -n "$token" ] && curl -sf --max-time 5 --cacert "$cluster_dir/pki/ca.crt" \
    -H "Authorization: Bearer $token" "https://127.0.0.1:$api_port/readyz" >/dev/null; then
    mode=cluster
    printf '%s' "$token" >"$tmp/sa/token"
    cp "$cluster_dir/pki/ca.crt" "$tmp/sa/ca.crt"
    # the operator waits for the DittoServer CRD to sync its caches
    curl -sf --max-time 5 --cacert "$cluster_dir/pki/ca.crt" -H "Authorization: Bearer $token" \
      "https://127.0.0.1:$api_port/apis/apiextensions.k8s.io/v1/customresourcedefinitions/dittoservers.dittofs.dittofs.com" \
      >/dev/null || mode=cluster-without-crd
  fi
fi
if [ "$mode" = unreachable ]; then
  api_port=$(free_port) # nothing listens there: connections are refused
  printf 'not-a-real-token' >"$tmp/sa/token"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$tmp/ca.key" -out "$tmp/sa/ca.crt" \
    -days 1 -subj /CN=image-check-ca >/dev/null 2>&1 || die "openssl req failed"
fi
# A namespace and a selector no DittoServer has: on a shared control plane
# this operator must not reconcile (write) what a test's operator manages.
ns=dittofs-image-check
selector=dittofs.dittofs.com/image-check=$$
printf '%s' "$ns" >"$tmp/sa/namespace"
chmod 755 "$tmp" "$tmp/sa"
chmod 644 "$tmp/sa/"*
metrics_port=$(free_port)
health_port=$(free_port)
printf '# operator against %s (127.0.0.1:%s), metrics :%s, probes :%s\n' \
  "$mode" "$api_port" "$metrics_port" "$health_port"

docker run -d --name "$name" --network host --read-only --cap-drop ALL \
  --security-opt no-new-privileges \
  -e KUBERNETES_SERVICE_HOST=127.0.0.1 -e KUBERNETES_SERVICE_PORT="$api_port" \
  -e DITTOFS_OPERATOR_METRICS_BIND_ADDRESS="127.0.0.1:$metrics_port" \
  -e DITTOFS_OPERATOR_HEALTH_PROBE_BIND_ADDRESS="127.0.0.1:$health_port" \
  -v "$tmp/sa:$SA:ro" "$image" --namespace "$ns" --selector "$selector" >/dev/null

http_code() { curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1" || true; }
wait_code() { # wait_code URL CODE SECONDS
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    [ "$(http_code "$1")" = "$2" ] && return 0
    sleep 0.1
  done
  return 1
}
check "/healthz answers 200" wait_code "http://127.0.0.1:$health_port/healthz" 200 10
case $mode in
  cluster)
    check "/readyz answers 200 (caches synced against the local control plane)" \
      wait_code "http://127.0.0.1:$health_port/readyz" 200 60 ;;
  *)
    sleep 2
    code=$(http_code "http://127.0.0.1:$health_port/readyz")
    check "/readyz is not ready ($code): nothing to sync from ($mode)" \
      [ "$code" != 200 ] ;;
esac
check "/metrics answers with process_resident_memory_bytes" \
  bash -c "curl -sf --max-time 2 http://127.0.0.1:$metrics_port/metrics | grep -q '^process_resident_memory_bytes '"

pid=$(docker inspect -f '{{.State.Pid}}' "$name")
uids=$(awk '/^Uid:/ { print $2, $3, $4, $5 }' "/proc/$pid/status")
check "the process runs as uid 65532 (Uid: $uids)" [ "$uids" = "65532 65532 65532 65532" ]

# idle: let the first lists, watches and retries settle
sleep 5
rss=$(awk '/^Rss:/ { print $2 }' "/proc/$pid/smaps_rollup")
printf '# idle RSS %d KiB (%s), per mapping (KiB):\n' "$rss" "$mode"
awk -v bin="$BIN" '
  /^[0-9a-f]+-[0-9a-f]+ / { name = $6; if (name == "") name = "[anon]"; if (name == bin) name = "binary " bin; next }
  /^Rss:/ { rss[name] += $2 }
  /^Anonymous:/ { anon[name] += $2 }
  END { for (n in rss) if (rss[n] > 0) printf "#   %6d  (anon %6d)  %s\n", rss[n], anon[n], n }
' "/proc/$pid/smaps" | sort -k2 -rn
grep -E '^(Rss|Pss|Anonymous|Private_Dirty|Shared_Clean):' "/proc/$pid/smaps_rollup" | sed 's/^/#   /'
check "idle RSS $rss KiB <= $MAX_RSS_KIB KiB" [ "$rss" -le "$MAX_RSS_KIB" ]

t0=$(date +%s.%N)
docker stop -t 20 "$name" >/dev/null
elapsed=$(echo "$(date +%s.%N) - $t0" | bc -l)
status=$(docker inspect -f '{{.State.ExitCode}}' "$name")
check "SIGTERM: exit status $status is 0" [ "$status" = 0 ]
check "SIGTERM: stopped in $(printf '%.1f' "$elapsed") s (< 10 s)" [ "$(echo "$elapsed < 10" | bc)" = 1 ]
docker logs "$name" >"$tmp/stdout" 2>"$tmp/stderr"
check "nothing on stdout" [ ! -s "$tmp/stdout" ]
check "stderr: connected in-cluster" grep -qE 'msg="connecting".*in-cluster' "$tmp/stderr"
check "stderr: the shutdown on SIGTERM" grep -q 'msg="shutting down" signal=SIGTERM' "$tmp/stderr"
check "stderr: stopped" grep -q 'msg="stopped"' "$tmp/stderr"
if [ "$failures" -gt 0 ]; then
  printf '# the operator logged:\n'
  tail -n 20 "$tmp/stderr" | sed 's/^/#   /'
  printf '# %d check(s) failed\n' "$failures"
  exit 1
fi
printf '# all checks passed\n'
