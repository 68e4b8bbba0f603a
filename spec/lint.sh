#!/usr/bin/env bash
# Mechanical style checks (STYLE.md rule 25), run by ctest as test "lint":
# clang-format (the repository's .clang-format) on every C file, luacheck on
# every Lua file. Prints "N passed, N failed".
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
if luacheck --no-color -q --std lua54 lua policies; then
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
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
