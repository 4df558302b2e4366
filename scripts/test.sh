#!/usr/bin/env bash
# The whole test suite (unit + namespace integration tests), from a fresh clone, as root.
# Installs what it needs first (scripts/provision.sh). Ends with "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/provision.sh || exit 1

out=$(mktemp)
trap 'rm -f "$out"' EXIT
# --verbose keeps one line per test even on a terminal; the summary is parsed below.
npx ava --verbose "$@" 2>&1 | tee "$out"
status=${PIPESTATUS[0]}

passed=$(grep -Eo '^[[:space:]]*[0-9]+ tests? passed' "$out" | grep -Eo '[0-9]+' | tail -1)
failed=$(grep -Eo '^[[:space:]]*[0-9]+ tests? failed' "$out" | grep -Eo '[0-9]+' | tail -1)
skipped=$(grep -Eo '^[[:space:]]*[0-9]+ tests? skipped' "$out" | grep -Eo '[0-9]+' | tail -1)
passed=${passed:-0}; failed=${failed:-0}
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi   # crash, uncaught error, timeout
echo
if [ -n "${skipped:-}" ]; then
  echo "$passed passed, $failed failed, $skipped skipped"
else
  echo "$passed passed, $failed failed"
fi
exit "$status"
