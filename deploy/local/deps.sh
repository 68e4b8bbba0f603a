#!/usr/bin/env bash
# Installs what building and testing dittofs-operator needs on Debian
# bookworm (idempotent; non-interactive; root or sudo).
set -euo pipefail
pkgs=(build-essential cmake pkg-config git ca-certificates curl openssl
      liblua5.4-dev lua5.4 libcjson-dev libyaml-dev libcurl4-openssl-dev
      libssl-dev libmicrohttpd-dev lua-busted lua-check clang-format jq
      valgrind python3 python3-yaml  # the test and bench scripts, crd_install.sh
      clang libclang-rt-14-dev afl++)  # spec/fuzz.sh: libFuzzer, AFL++
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' ||
    missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=
[ "$(id -u)" -eq 0 ] || sudo=sudo
echo "deps: installing ${missing[*]}"
# env: sudo's env_reset would drop an exported DEBIAN_FRONTEND; no stdin,
# so nothing can wait for an answer.
$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
  --no-install-recommends "${missing[@]}" >/dev/null </dev/null
