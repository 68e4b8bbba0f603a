#!/usr/bin/env bash
# Mechanical style checks (STYLE.md rule 25), run by ctest as test "lint":
# clang-format (the repository's .clang-format) on every C file, luacheck on
# every Lua file, and the core's layers (no upward include, no include
# circle). Prints "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.." || exit
pass=0
fail=0
for f in core/*.[ch] spec/c/*.[ch] spec/bench/*.c; do
  [ -e "$f" ] || continue
  if clang-format --dry-run -Werror "$f" >/dev/null 2>&1; then
    pass=$((pass + 1))
  else
    fail=$((fail + 1))
    echo "not formatted: $f (clang-format -i $f)"
  fi
done
if luacheck --no-color -q --std lua54 lua policies deploy/examples; then
  pass=$((pass + 1))
else
  fail=$((fail + 1))
fi
# luassert's is_*/are_* aliases are unknown to luacheck's busted std (W143).
if luacheck --no-color -q --std lua54+busted spec/lua --ignore 143; then
  pass=$((pass + 1))
else
  fail=$((fail + 1))
fi
# Layers (DESIGN.md, "The C core"): a file includes only its own layer and
# the layers below; every core file belongs to one; the modules' include
# graph (a module is core/<noun>.c + .h) has no circle.
declare -A layer
for m in dbuf text log jscan embedded dl metrics kinds; do layer[$m]=0; done
for m in loop kubeconfig exec_cred http watch cache events leader serve \
  reload; do
  layer[$m]=1
done
for m in policy sandbox lpattern lraw codec lcodec lcodec_module ljson lyaml crd; do
  layer[$m]=2
done
for m in controller queue apply tracking; do layer[$m]=3; done
for m in main operator script_test script_diff check_cluster; do layer[$m]=4; done
layers_ok=1
edges=""
for f in core/*.[ch]; do
  m=$(basename "${f%.*}")
  if [ -z "${layer[$m]+x}" ]; then
    echo "layers: $f is in no layer (spec/lint.sh, DESIGN.md)"
    layers_ok=0
    continue
  fi
  for inc in $(sed -n 's/^#include "\([a-z_0-9]*\)\.h".*/\1/p' "$f"); do
    if [ -z "${layer[$inc]+x}" ]; then
      echo "layers: $f includes $inc.h, which is in no layer"
      layers_ok=0
    elif [ "${layer[$inc]}" -gt "${layer[$m]}" ]; then
      echo "layers: $f (layer ${layer[$m]}) includes $inc.h (layer ${layer[$inc]}): upward"
      layers_ok=0
    fi
    [ "$inc" != "$m" ] && edges+="$m $inc"$'\n'
  done
done
if ! printf '%s' "$edges" | tsort >/dev/null 2>/tmp/lint-tsort.$$; then
  echo "layers: the include graph has a circle:"
  cat /tmp/lint-tsort.$$
  layers_ok=0
fi
rm -f /tmp/lint-tsort.$$
if [ "$layers_ok" -eq 1 ]; then
  pass=$((pass + 1))
else
  fail=$((fail + 1))
fi
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
