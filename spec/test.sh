#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds (warnings are
# errors), starts the local control plane (inside ctest, as a fixture) and
# runs every test with ctest. Usage: spec/test.sh [ctest args...]
#   SANITIZE=ON spec/test.sh   build with ASan/UBSan
#   spec/test.sh -L unit       only the tests that need no control plane
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
deploy/local/deps.sh
build=${BUILD_DIR:-$root/build}
cmake -S . -B "$build" -DWERROR=ON -DSANITIZE="${SANITIZE:-OFF}" \
  -DINTEGRATION_TESTS="${INTEGRATION_TESTS:-ON}" >/dev/null
cmake --build "$build" -j"$(nproc)"
cd "$build"
ctest --output-on-failure "$@"
