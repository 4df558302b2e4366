#!/usr/bin/env bash
# The whole test suite (unit + namespace integration tests), from a fresh clone, as root.
# Installs what it needs first (scripts/provision.sh). Ends with "N passed, N failed".
#
# Two passes: everything with the default firewall backend (auto = nft here), then every
# integration file that runs sandgate again with SANDGATE_TEST_BACKEND=iptables (see
# docs/testing.md). Extra arguments go to the first pass only
# (e.g. one file); SANDGATE_SKIP_IPTABLES_PASS=1 skips the second.
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/provision.sh || exit 1
# The tests run through tsx, which strips types without checking them: check them here.
npm run --silent typecheck || { echo "typecheck failed"; echo "0 passed, 1 failed"; exit 1; }
# Lint and formatting (Biome, biome.json) over src, tests, scripts: `npm run format` fixes the latter.
npm run --silent lint || { echo "lint failed"; echo "0 passed, 1 failed"; exit 1; }

out=$(mktemp)
trap 'rm -f "$out"' EXIT
# --verbose keeps one line per test even on a terminal; the summary is parsed below.
npx ava --verbose "$@" 2>&1 | tee "$out"
status=${PIPESTATUS[0]}

count() { grep -aEo "^[[:space:]]*[0-9]+ tests? $1" "$out" | grep -Eo '[0-9]+' | tail -1; }
# ava prints "N tests passed" only when nothing failed: count the passing tests' own lines instead.
passes() { grep -acE '^[[:space:]]*✔' "$out"; }
passed=$(passes); failed=$(count failed); skipped=$(count skipped)
passed=${passed:-0}; failed=${failed:-0}; skipped=${skipped:-0}
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi   # crash, uncaught error, timeout

if [ "$#" -eq 0 ] && [ "${SANDGATE_SKIP_IPTABLES_PASS:-}" != 1 ]; then
  # Every file whose sandgate takes its config from test/helpers (baseConfig reads the backend),
  # or that reads TEST_BACKEND itself.
  files=$(grep -lE "baseConfig|auth-world|TEST_BACKEND" test/integration/*.test.ts)
  echo
  echo "== second pass: firewall backend iptables =="
  # shellcheck disable=SC2086
  SANDGATE_TEST_BACKEND=iptables npx ava --verbose $files 2>&1 | tee "$out"
  status2=${PIPESTATUS[0]}
  p2=$(passes); f2=$(count failed); s2=$(count skipped)
  p2=${p2:-0}; f2=${f2:-0}; s2=${s2:-0}
  if [ "$status2" -ne 0 ] && [ "$f2" -eq 0 ]; then f2=1; fi
  passed=$((passed + p2)); failed=$((failed + f2)); skipped=$((skipped + s2))
  if [ "$status2" -ne 0 ]; then status=$status2; fi
fi

echo
if [ "$skipped" -gt 0 ]; then
  echo "$passed passed, $failed failed, $skipped skipped"
else
  echo "$passed passed, $failed failed"
fi
exit "$status"
